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
//! let store = ContentStore::open("/var/lib/kiln")?;
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
mod index;
mod json;
mod owner;
mod reference;
mod registry;
pub mod spec;
mod store;

pub use compression::{
    Compressed, Compression, CompressionOptions, Compressor, decompress, default_threads,
};
pub use convert::{compress_layer_stream, convert_image, convert_layer, copy_with_buffer};
pub use dangling::{DanglingImage, RemovedImage};
pub use digest::{Digest, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use export::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, export_docker, export_oci, export_oci_index,
    write_docker_archive, write_oci_tar, write_rootfs_tar,
};
pub use gc::GcReport;
pub use image::{Image, PulledImage, WriteOptions, write_image, write_image_with};
pub use import::{LoadedImage, load_archive, load_tar};
pub use index::{ImageIndex, convert_index, write_index, write_index_for};
pub use json::to_canonical_json;
pub use owner::Owner;
pub use reference::{DOCKER_HUB, Reference};
pub use registry::{
    Credentials, ProgressFn, PushReport, RegistryClient, RegistryOptions, TransferEvent,
    lookup_credentials, pull,
};
pub use spec::{
    ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest, Platform,
    RootFs, media_type,
};
pub use store::{
    BlobSource, BlobWriter, ContentStore, DeferredBlob, DeferredReader, Layer, LayerWriter,
};
