//! OCI and Docker image formats, the content store, exporters and the registry client.
