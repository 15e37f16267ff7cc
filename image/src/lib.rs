//! OCI and Docker image formats, the content store, exporters and the registry client.
//!
//! The pieces, bottom up: [`Digest`] and [`Reference`] (names normalised as Docker does);
//! the data model in [`spec`] ([`ImageConfig`], [`Manifest`], [`Index`], [`Descriptor`]) written
//! as canonical JSON; the [`ContentStore`] (blobs by digest, tags, file locks) under a state
//! directory; [`Image`] (a stored manifest + config) and [`write_image`]; exporters (OCI
//! layout, docker-archive, archive load); and a synchronous registry client for pull and push.
//! Nothing here is async.
//!
//! ```no_run
//! use kiln_image::{ContentStore, Platform, Reference, RegistryClient, RegistryOptions, export_oci};
//!
//! let store = ContentStore::open(kiln_image::default_state_dir())?;
//! let busybox = Reference::parse("busybox")?; // docker.io/library/busybox:latest
//! let client = RegistryClient::new(RegistryOptions::default());
//! let image = client.pull(&store, &busybox, &Platform::host())?;
//! println!("{} {:?}", image.manifest_digest, image.config.config.cmd);
//! export_oci(&store, &image, &[busybox], "busybox-oci.tar".as_ref(), true)?;
//! # Ok::<(), kiln_image::Error>(())
//! ```

mod compression;
mod convert;
mod dangling;
mod digest;
mod error;
mod export;
mod gc;
mod image;
mod import;
mod json;
mod owner;
mod reference;
mod registry;
pub mod spec;
mod store;

pub use compression::{Compression, CompressionOptions, Compressor, decompress, default_threads};
pub use convert::{compress_layer_stream, convert_image, convert_layer};
pub use dangling::{DanglingImage, RemovedImage};
pub use digest::{Digest, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use export::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, export_docker, export_oci, write_docker_archive,
    write_oci_tar, write_rootfs_tar,
};
pub use gc::GcReport;
pub use image::{Image, PulledImage, WriteOptions, write_image, write_image_with};
pub use import::{LoadedImage, load_archive, load_tar};
pub use json::to_canonical_json;
pub use owner::Owner;
pub use reference::{DOCKER_HUB, Reference};
pub use registry::{
    Credentials, ProgressFn, PushReport, RegistryClient, RegistryOptions, TransferEvent,
    docker_config_dir, lookup_credentials, pull,
};
pub use spec::{
    ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest, Platform,
    RootFs, media_type,
};
pub use store::{BlobWriter, ContentStore, Layer, LayerWriter};

/// The default state directory: `/var/lib/kiln` for root, else `$XDG_DATA_HOME/kiln`
/// (`~/.local/share/kiln`).
pub fn default_state_dir() -> std::path::PathBuf {
    // Not the euid: in a rootless build's user namespace (kiln-userns) every user is uid 0.
    if kiln_userns::started_as_root() {
        return std::path::PathBuf::from("/var/lib/kiln");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return std::path::PathBuf::from(x).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    std::path::PathBuf::from(home).join(".local/share/kiln")
}
