//! The image data model: media types, descriptors, manifests, indexes and the image config, as
//! plain structs with public fields whose JSON names follow the OCI image spec and Docker's
//! image spec (Docker v2 schema 2 shares the OCI layout; the config adds Docker's extensions:
//! Healthcheck, Shell, OnBuild, ArgsEscaped). These are our own types rather than oci-spec's
//! builders because the Docker extensions are not in oci-spec's `Config` and because callers
//! (the solver) edit configs field by field; tests check that oci-spec parses what we write.

mod config;
mod time;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use config::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};
pub use time::{build_timestamp, format_rfc3339, parse_rfc3339};

use crate::Digest;

/// Media type names.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable gzip layer (deprecated, still read).
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker zstd layer (BuildKit writes this with Docker media types and zstd).
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    /// Docker foreign (Windows) gzip layer.
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
}

/// Whether `mt` names an image manifest (OCI or Docker).
pub fn is_manifest(mt: &str) -> bool {
    mt == media_type::OCI_MANIFEST || mt == media_type::DOCKER_MANIFEST
}

/// Whether `mt` names an image index / manifest list (OCI or Docker).
pub fn is_index(mt: &str) -> bool {
    mt == media_type::OCI_INDEX || mt == media_type::DOCKER_MANIFEST_LIST
}

/// Whether `mt` names an image config (OCI or Docker).
pub fn is_config(mt: &str) -> bool {
    mt == media_type::OCI_CONFIG || mt == media_type::DOCKER_CONFIG
}

/// A content descriptor: what a blob is, its digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// The content digest.
    pub digest: Digest,
    /// The content size in bytes.
    pub size: u64,
    /// Alternative download URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform of a manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor with just media type, digest and size.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// An OS/architecture pair (plus variant and OS version) an image runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v8` for arm64, `v7` for arm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, the default platform kiln pulls and builds for.
    pub fn linux_amd64() -> Self {
        Self::parse("linux/amd64").unwrap_or_else(|_| unreachable!())
    }

    /// The platform of the running machine, in Go's names (`linux/arm64/v8`).
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm/v7`).
    pub fn parse(s: &str) -> crate::Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            crate::Error::InvalidOption(format!(
                "invalid platform `{s}` (expected os/arch[/variant])"
            ))
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Self {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            os_version: None,
            os_features: Vec::new(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    /// Whether an index entry for `candidate` can run here, following containerd's matcher:
    /// OS and architecture equal; a variant asked for must match (arm64 treats a missing
    /// variant as `v8`); no variant asked for accepts any.
    pub fn matches(&self, candidate: &Self) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let norm = |p: &Self| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        match self.variant {
            None => true,
            Some(_) => norm(self) == norm(candidate),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest media type (required by Docker, recommended by OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests, usually one per platform.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formatting_round_trips() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_700_000_000, 500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
    }

    #[test]
    fn platform_matching() {
        let want = Platform::parse("linux/arm64/v8").unwrap();
        assert!(want.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(
            !Platform::parse("linux/arm/v7")
                .unwrap()
                .matches(&Platform::parse("linux/arm/v6").unwrap())
        );
        assert!(Platform::linux_amd64().matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(!Platform::linux_amd64().matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn config_json_names_and_omissions() {
        let mut c = ImageConfig::new(&Platform::linux_amd64());
        c.config.env = Some(vec!["PATH=/bin".into()]);
        c.config.entrypoint = Some(vec![]);
        c.config.args_escaped = true;
        c.config.exposed_ports = Some(["80/tcp".to_owned()].into());
        c.config.healthcheck = Some(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
        c.history.push(History {
            created_by: Some("ENV PATH=/bin".into()),
            empty_layer: true,
            ..Default::default()
        });
        let s = String::from_utf8(c.to_canonical_json().unwrap()).unwrap();
        assert_eq!(
            s,
            r#"{"architecture":"amd64","config":{"ArgsEscaped":true,"Entrypoint":[],"Env":["PATH=/bin"],"ExposedPorts":{"80/tcp":{}},"Healthcheck":{"Test":["NONE"]}},"history":[{"created_by":"ENV PATH=/bin","empty_layer":true}],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
        assert_eq!(ImageConfig::from_json(s.as_bytes()).unwrap(), c);
    }
}
