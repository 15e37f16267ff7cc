//! The export stage: every output of a build (tags in the store, OCI and docker archives in
//! any compression, the root filesystem as a directory or a tar) and every push, in one place,
//! after the image is written. Outputs are checked before the build starts, so a build never
//! runs only to find its output impossible.

use std::path::{Path, PathBuf};

use kiln_image::{CompressionOptions, Image, Platform, Reference, RegistryClient};

use super::{Solver, View, img_err};
use crate::context::SourceTree;
use crate::copy::{self, CopyOptions, CopySource};
use crate::error::{Error, Result, io_err};
use crate::request::{BuildRequest, Compression, Destination, OutputSpec};

/// Checks the outputs before any work: pushes need a name, `type=image` is gzip only, and the
/// library writes no standard output (the CLI stages `dest=-` in a file and copies it).
pub(super) fn check_outputs(req: &BuildRequest) -> Result<()> {
    for o in &req.outputs {
        if let OutputSpec::Oci {
            dest: Destination::Stdout,
            ..
        }
        | OutputSpec::Docker {
            dest: Destination::Stdout,
            ..
        }
        | OutputSpec::Tar {
            dest: Destination::Stdout,
        } = o
        {
            return Err(Error::InvalidOption {
                option: "--output",
                message: "the library writes no standard output: give `dest=` a path".into(),
            });
        }
        if let OutputSpec::Image {
            names,
            push,
            compression,
        } = o
        {
            if *compression != Compression::Gzip {
                return Err(Error::InvalidOption {
                    option: "--output",
                    message:
                        "`type=image` and `type=registry` support only `compression=gzip` for now"
                            .into(),
                });
            }
            if *push && names.is_empty() && req.tags.is_empty() {
                return Err(Error::InvalidOption {
                    option: "--push",
                    message: "nothing to push: name the image with `-t`".into(),
                });
            }
        }
    }
    Ok(())
}

/// The names of the built image: the tags, then the `name=`s of the archive outputs.
pub(super) fn image_names(req: &BuildRequest) -> Vec<String> {
    let mut names = req.tags.clone();
    for o in &req.outputs {
        if let OutputSpec::Oci { names: n, .. } | OutputSpec::Docker { names: n, .. } = o {
            for name in n {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
    }
    names
}

fn compression_options(c: Compression) -> CompressionOptions {
    CompressionOptions {
        compression: match c {
            Compression::Gzip => kiln_image::Compression::Gzip,
            Compression::Zstd => kiln_image::Compression::Zstd,
            Compression::Uncompressed => kiln_image::Compression::Uncompressed,
        },
        level: None,
    }
}

fn dest_path(dest: &Destination) -> Result<&Path> {
    match dest {
        Destination::Path(p) => Ok(p),
        Destination::Stdout => Err(Error::InvalidOption {
            option: "--output",
            message: "the library writes no standard output: give `dest=` a path".into(),
        }),
    }
}

impl Solver {
    /// Writes every output of `req` for `image` (whose final filesystem is `snapshot`) and
    /// pushes what is to be pushed. `-t` always tags in the store, whatever else is exported.
    pub(super) fn export_all(
        &self,
        req: &BuildRequest,
        image: &Image,
        names: &[String],
        snapshot: Option<&str>,
    ) -> Result<()> {
        let refs = names
            .iter()
            .map(|n| Reference::parse(n).map_err(img_err(format!("name `{n}`"))))
            .collect::<Result<Vec<_>>>()?;
        let tags_in_store = !names.is_empty()
            && !req
                .outputs
                .iter()
                .any(|o| matches!(o, OutputSpec::Image { .. }));
        if tags_in_store {
            let _span = tracing::info_span!("export", output = %"image").entered();
            self.tag(image, names, &[])?;
        }
        for o in &req.outputs {
            let _span = tracing::info_span!("export", output = %output_kind(o)).entered();
            match o {
                OutputSpec::Image {
                    names: extra, push, ..
                } => {
                    self.tag(image, names, extra)?;
                    if *push {
                        let targets = if extra.is_empty() { &req.tags } else { extra };
                        for name in targets {
                            self.push(name)?;
                        }
                    }
                }
                OutputSpec::Oci {
                    dest,
                    tar,
                    compression,
                    ..
                } => {
                    let dest = dest_path(dest)?;
                    let converted = kiln_image::convert_image(
                        &self.store,
                        image,
                        compression_options(*compression),
                        false,
                    )
                    .map_err(img_err(format!("compress layers for {}", dest.display())))?;
                    kiln_image::export_oci(&self.store, &converted, &refs, dest, *tar)
                        .map_err(img_err(dest.display().to_string()))?;
                }
                OutputSpec::Docker {
                    dest, compression, ..
                } => {
                    let dest = dest_path(dest)?;
                    let target = (*compression != Compression::Gzip)
                        .then(|| compression_options(*compression));
                    kiln_image::export_docker(
                        &self.store,
                        &[(image.clone(), refs.clone())],
                        target,
                        dest,
                    )
                    .map_err(img_err(dest.display().to_string()))?;
                }
                OutputSpec::Local { dest } => self.export_local(snapshot, dest)?,
                OutputSpec::Tar { dest } => {
                    let dest = dest_path(dest)?;
                    let view = View::open(self.snapshotter.as_ref(), snapshot)?;
                    let mut f = std::fs::File::create(dest).map_err(io_err("create", dest))?;
                    kiln_image::write_rootfs_tar(view.path(), &mut f)
                        .map_err(img_err(dest.display().to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// Tags the image in the store with `tags` and `extra`.
    fn tag(&self, image: &Image, tags: &[String], extra: &[String]) -> Result<()> {
        for n in tags.iter().chain(extra) {
            let r = Reference::parse(n).map_err(img_err(format!("name `{n}`")))?;
            self.store
                .set_tag(&r, &image.manifest_digest)
                .map_err(img_err(r.to_string()))?;
        }
        Ok(())
    }

    /// Pushes the stored image `name` to its registry, with that registry's credentials.
    fn push(&self, name: &str) -> Result<()> {
        let push_err = |source| Error::Push {
            name: name.to_owned(),
            source,
        };
        let reference = Reference::parse(name).map_err(push_err)?;
        let image =
            Image::resolve(&self.store, &reference, &Platform::linux_amd64()).map_err(push_err)?;
        RegistryClient::new(self.config.registry_options(Some(reference.registry())))
            .push(&self.store, &image, &reference)
            .map(|_| ())
            .map_err(push_err)
    }

    /// Copies the final filesystem into the directory `dest`.
    fn export_local(&self, snapshot: Option<&str>, dest: &PathBuf) -> Result<()> {
        let view = View::open(self.snapshotter.as_ref(), snapshot)?;
        std::fs::create_dir_all(dest).map_err(io_err("create directory", dest))?;
        let src = CopySource::Tree {
            tree: SourceTree {
                root: view.path(),
                ignore: None,
            },
            paths: vec!["/".into()],
            reset_owner: false,
        };
        let opts = CopyOptions {
            dest: "/".into(),
            chown: None,
            chmod: None,
            parents: false,
            exclude: None,
            unpack_archives: false,
            line: 0,
        };
        copy::copy(dest, &src, &opts)
    }
}

/// The `type=` of an output, for its tracing span.
fn output_kind(o: &OutputSpec) -> &'static str {
    match o {
        OutputSpec::Oci { .. } => "oci",
        OutputSpec::Docker { .. } => "docker",
        OutputSpec::Local { .. } => "local",
        OutputSpec::Tar { .. } => "tar",
        OutputSpec::Image { push: true, .. } => "registry",
        OutputSpec::Image { .. } => "image",
    }
}
