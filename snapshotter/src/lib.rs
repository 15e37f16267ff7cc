//! Snapshots of build-step filesystems (overlayfs and native drivers), and the conversion of
//! snapshot differences to OCI layers and back.
