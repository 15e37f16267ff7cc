//! The export stage: every output of a build (tags in the store, OCI and docker archives in
//! any compression, the root filesystem as a directory or a tar) and every push, in one place,
//! after the image is written. Outputs are checked before the build starts, so a build never
//! runs only to find its output impossible.

use std::path::{Path, PathBuf};

use kiln_image::{
    CompressionOptions, Digest, Image, ImageIndex, Platform, Reference, RegistryClient,
};

use super::{Solver, View, img_err};
use crate::context::SourceTree;
use crate::copy::{self, CopyOptions, CopySource};
use crate::error::{Error, Result, io_err};
use crate::request::{BuildRequest, Compression, Destination, OutputSpec};

/// One platform's image of a build and its final filesystem.
pub(super) struct BuiltImage {
    pub(super) platform: Platform,
    pub(super) image: Image,
    /// The final snapshot (`None`: an empty filesystem).
    pub(super) snapshot: Option<String>,
}

/// What a build produced, as the exports see it: one image per platform (never none), and
/// for several the index over them, which is what names point at.
pub(super) struct Built {
    pub(super) images: Vec<BuiltImage>,
    pub(super) index: Option<ImageIndex>,
}

impl Built {
    /// The digest names point at: the index's, else the one image's manifest.
    fn digest(&self) -> &Digest {
        match &self.index {
            Some(ix) => &ix.digest,
            None => &self.images[0].image.manifest_digest,
        }
    }
}

/// The directory of a platform's files in a multi-platform `type=local` or `type=tar` output,
/// as buildx names it (`linux_arm64`, `linux_arm_v7`).
pub(super) fn platform_dir(p: &Platform) -> String {
    p.to_string().replace('/', "_")
}

/// Checks the outputs before any work: pushes need a name, `type=image` is gzip only, the
/// library writes no standard output (the CLI stages `dest=-` in a file and copies it), and a
/// docker archive holds one platform only.
pub(super) fn check_outputs(req: &BuildRequest) -> Result<()> {
    let platforms = req.target_platforms().len();
    for o in &req.outputs {
        if platforms > 1 && matches!(o, OutputSpec::Docker { .. }) {
            return Err(Error::InvalidOption {
                option: "--output",
                message: "docker exporter does not currently support exporting manifest lists"
                    .into(),
            });
        }
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
    /// Writes every output of `req` for what was built and pushes what is to be pushed. `-t`
    /// always tags in the store, whatever else is exported.
    pub(super) fn export_all(
        &self,
        req: &BuildRequest,
        built: &Built,
        names: &[String],
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
            self.tag(built.digest(), names, &[])?;
        }
        for o in &req.outputs {
            let _span = tracing::info_span!("export", output = %output_kind(o)).entered();
            match o {
                OutputSpec::Image {
                    names: extra, push, ..
                } => {
                    self.tag(built.digest(), names, extra)?;
                    if *push {
                        let targets = if extra.is_empty() { &req.tags } else { extra };
                        for name in targets {
                            self.push(name, built)?;
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
                    let what = || format!("compress layers for {}", dest.display());
                    let opts = compression_options(*compression);
                    if let Some(index) = &built.index {
                        let converted = kiln_image::convert_index(&self.store, index, opts, false)
                            .map_err(img_err(what()))?;
                        kiln_image::export_oci_index(&self.store, &converted, &refs, dest, *tar)
                            .map_err(img_err(dest.display().to_string()))?;
                    } else {
                        let image = &built.images[0].image;
                        let converted = kiln_image::convert_image(&self.store, image, opts, false)
                            .map_err(img_err(what()))?;
                        kiln_image::export_oci(&self.store, &converted, &refs, dest, *tar)
                            .map_err(img_err(dest.display().to_string()))?;
                    }
                }
                OutputSpec::Docker {
                    dest, compression, ..
                } => {
                    let dest = dest_path(dest)?;
                    let target = (*compression != Compression::Gzip)
                        .then(|| compression_options(*compression));
                    // (One platform: check_outputs refused several.)
                    kiln_image::export_docker(
                        &self.store,
                        &[(built.images[0].image.clone(), refs.clone())],
                        target,
                        dest,
                    )
                    .map_err(img_err(dest.display().to_string()))?;
                }
                OutputSpec::Local { dest } => {
                    if built.index.is_some() {
                        for b in &built.images {
                            let sub = dest.join(platform_dir(&b.platform));
                            self.export_local(b.snapshot.as_deref(), &sub)?;
                        }
                    } else {
                        self.export_local(built.images[0].snapshot.as_deref(), dest)?;
                    }
                }
                OutputSpec::Tar { dest } => {
                    let dest = dest_path(dest)?;
                    let mut f = std::fs::File::create(dest).map_err(io_err("create", dest))?;
                    if built.index.is_some() {
                        // One directory per platform, as buildx's tar exporter writes them.
                        let tmp = self.temp_dir()?;
                        for b in &built.images {
                            let sub = tmp.path().join(platform_dir(&b.platform));
                            self.export_local(b.snapshot.as_deref(), &sub)?;
                        }
                        kiln_image::write_rootfs_tar(tmp.path(), req.epoch(), &mut f)
                            .map_err(img_err(dest.display().to_string()))?;
                    } else {
                        let view = View::open(
                            self.snapshotter.as_ref(),
                            built.images[0].snapshot.as_deref(),
                        )?;
                        kiln_image::write_rootfs_tar(view.path(), req.epoch(), &mut f)
                            .map_err(img_err(dest.display().to_string()))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Tags `digest` (an image manifest or an index) in the store with `tags` and `extra`.
    fn tag(&self, digest: &Digest, tags: &[String], extra: &[String]) -> Result<()> {
        for n in tags.iter().chain(extra) {
            let r = Reference::parse(n).map_err(img_err(format!("name `{n}`")))?;
            self.store
                .set_tag(&r, digest)
                .map_err(img_err(r.to_string()))?;
        }
        Ok(())
    }

    /// Pushes what was built as `name` to its registry, with that registry's credentials: the
    /// image, or every platform's image and then the index.
    fn push(&self, name: &str, built: &Built) -> Result<()> {
        let push_err = |source| Error::Push {
            name: name.to_owned(),
            source,
        };
        let reference = Reference::parse(name).map_err(push_err)?;
        let client = RegistryClient::new(self.config.registry_options(Some(reference.registry())));
        match &built.index {
            Some(index) => client.push_index(&self.store, index, &reference),
            None => client.push(&self.store, &built.images[0].image, &reference),
        }
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
