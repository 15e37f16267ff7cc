//! Container platforms (`linux/arm64`, `linux/arm/v7`, `windows(10.0.17763)/amd64`) parsed,
//! normalized, formatted and matched exactly as containerd's `platforms` package does it, which
//! is what docker, BuildKit and containerd use: [`Platform::parse`] (containerd `Parse` then
//! `Normalize`), [`Platform::format`] (`Format`), [`Platform::format_all`] (`FormatAll`),
//! [`Platform::normalize`] (`Normalize`), [`Platform::matcher`] (`Only`: arm64 also runs
//! arm/v8..v5, amd64 also runs 386) and [`Platform::host`]. [`Platform::qemu_arch`] names the
//! qemu-user emulator of a platform.
//!
//! The struct serializes as the OCI image spec's `platform` object (image configs and index
//! entries). Not here: reading an image index (kiln-image) or running foreign binaries
//! (kiln-executor).
//!
//! ```
//! use kiln_platform::Platform;
//!
//! let p = Platform::parse("linux/aarch64")?;
//! assert_eq!(p.to_string(), "linux/arm64");
//! assert!(p.matcher().matches(&Platform::parse("linux/arm/v7")?));
//! assert_eq!(p.qemu_arch(), Some("aarch64"));
//! # Ok::<(), kiln_platform::Error>(())
//! ```

mod cpuinfo;
mod database;
mod error;
mod matcher;
mod quote;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use matcher::Matcher;
pub use quote::go_quote;

use database::{host_goarch, is_known_arch, is_known_os, normalize_arch, normalize_os};

/// An operating system and CPU (architecture, variant) an image runs on: the OCI image spec's
/// `platform`, with its JSON field names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system in Go's naming (`linux`).
    pub os: String,
    /// OS version (Windows builds such as `10.0.17763.1234`).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (`win32k`).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7` for arm, `v8.2` for arm64, `v3` for amd64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A platform from its three names, normalized (containerd `Normalize`): `("linux",
    /// "aarch64", "v8")` is linux/arm64. An empty variant means none.
    pub fn normalized(os: &str, architecture: &str, variant: &str) -> Self {
        Self::raw(os, architecture, variant).normalize()
    }

    fn raw(os: &str, architecture: &str, variant: &str) -> Self {
        Self {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            os_version: None,
            os_features: Vec::new(),
            variant: (!variant.is_empty()).then(|| variant.to_owned()),
        }
    }

    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Self::raw("linux", "amd64", "")
    }

    /// The platform of the running machine, normalized: x86_64 is linux/amd64 (no
    /// micro-architecture level, as docker reports it), aarch64 is linux/arm64, 32-bit arm
    /// gets its variant from /proc/cpuinfo as containerd's `DefaultSpec` does.
    pub fn host() -> Self {
        let mut p = Self::raw(std::env::consts::OS, host_goarch(), "");
        p.variant = cpuinfo::cpu_variant();
        p.normalize()
    }

    /// Parses a specifier (`linux/arm64`, `arm64`, `linux`, `linux/arm/v7`,
    /// `windows(10.0.17763+win32k)/amd64`) and normalizes it: containerd's `Parse` then
    /// `Normalize`, so `linux/arm64/v8` is linux/arm64 and `linux/arm` is linux/arm/v7. A
    /// missing OS or architecture is the host's.
    pub fn parse(specifier: &str) -> Result<Self, Error> {
        Self::parse_specifier(specifier).map(|p| p.normalize())
    }

    /// containerd's `Parse` to the letter, without `Normalize`: `linux/arm64/v8` keeps its
    /// `v8`, `linux/arm` has no variant.
    pub fn parse_specifier(specifier: &str) -> Result<Self, Error> {
        if specifier.contains('*') {
            return Err(Error::Wildcard {
                specifier: specifier.to_owned(),
            });
        }
        // At most four parts, as Go's SplitN(s, "/", 4).
        let parts: Vec<&str> = specifier.splitn(4, '/').collect();
        let mut p = Self::raw("", "", "");
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                let (os, version, features) =
                    split_os_options(part).ok_or_else(|| Error::InvalidOsComponent {
                        component: (*part).to_owned(),
                        specifier: specifier.to_owned(),
                    })?;
                p.os = normalize_os(os);
                let version = decode_os_option(version, specifier, "version")?;
                p.os_version = (!version.is_empty()).then_some(version);
                if !features.is_empty() {
                    p.os_features = features[1..]
                        .split('+')
                        .map(|f| decode_os_option(f, specifier, "feature"))
                        .collect::<Result<_, _>>()?;
                }
            } else if !is_specifier_component(part) {
                return Err(Error::InvalidComponent {
                    component: (*part).to_owned(),
                    specifier: specifier.to_owned(),
                });
            }
        }
        let set_arch = |p: &mut Self, arch: &str, variant: &str| {
            let (a, v) = normalize_arch(arch, variant);
            p.architecture = a;
            p.variant = (!v.is_empty()).then_some(v);
        };
        match parts.len() {
            1 => {
                if is_known_os(&p.os) {
                    host_goarch().clone_into(&mut p.architecture);
                    if p.architecture == "arm" {
                        p.variant = cpuinfo::cpu_variant().filter(|v| v != "v7");
                    }
                    return Ok(p);
                }
                set_arch(&mut p, parts[0], "");
                if p.architecture == "arm" && p.variant.as_deref() == Some("v7") {
                    p.variant = None;
                }
                if is_known_arch(&p.architecture) {
                    std::env::consts::OS.clone_into(&mut p.os);
                    return Ok(p);
                }
                Err(Error::UnknownOsOrArch {
                    specifier: specifier.to_owned(),
                })
            }
            2 => {
                set_arch(&mut p, parts[1], "");
                if p.architecture == "arm" && p.variant.as_deref() == Some("v7") {
                    p.variant = None;
                }
                Ok(p)
            }
            3 => {
                set_arch(&mut p, parts[1], parts[2]);
                if p.architecture == "arm64" && p.variant.is_none() {
                    p.variant = Some("v8".to_owned());
                }
                Ok(p)
            }
            _ => Err(Error::CannotParse {
                specifier: specifier.to_owned(),
            }),
        }
    }

    /// containerd's `Normalize`: OS and architecture in Go's names, the default variants
    /// dropped (arm64 `v8`, amd64 `v1`), arm's made explicit (`v7`), OS features sorted and
    /// deduplicated.
    pub fn normalize(&self) -> Self {
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        let mut os_features = self.os_features.clone();
        os_features.sort();
        os_features.dedup();
        Self {
            architecture,
            os: normalize_os(&self.os),
            os_version: self.os_version.clone().filter(|v| !v.is_empty()),
            os_features,
            variant: (!variant.is_empty()).then_some(variant),
        }
    }

    /// containerd's `Format`: `os/arch[/variant]` of the fields as they are (`unknown` without
    /// an OS). [`Display`](fmt::Display) formats the normalized platform instead.
    pub fn format(&self) -> String {
        if self.os.is_empty() {
            return "unknown".to_owned();
        }
        join(&[
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        ])
    }

    /// containerd's `FormatAll`: [`format`](Self::format) with the OS version and sorted
    /// features (`windows(10.0.17763+win32k)/amd64`), `%`-encoding what the syntax reserves.
    pub fn format_all(&self) -> String {
        if self.os.is_empty() {
            return "unknown".to_owned();
        }
        let mut opts = encode_os_option(self.os_version.as_deref().unwrap_or(""));
        let mut features: Vec<&String> = self.os_features.iter().collect();
        features.sort();
        for f in features.into_iter().filter(|f| !f.is_empty()) {
            opts.push('+');
            opts.push_str(&encode_os_option(f));
        }
        let os = if opts.is_empty() {
            self.os.clone()
        } else {
            format!("{}({opts})", self.os)
        };
        join(&[
            &os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        ])
    }

    /// containerd's `Only(self)`: matches this platform and those it also runs (arm64:
    /// arm/v8..v5; arm/v7: v6, v5; amd64: 386; amd64/v3: v2, v1), best first.
    pub fn matcher(&self) -> Matcher {
        Matcher::only(self)
    }

    /// Whether an image for `candidate` runs here (`self.matcher().matches(candidate)`).
    pub fn matches(&self, candidate: &Self) -> bool {
        self.matcher().matches(candidate)
    }

    /// The qemu-user / binfmt_misc name of this platform's CPU (`aarch64` for arm64, `arm` for
    /// arm/v7, `i386`, `x86_64`, `ppc64le`, `s390x`, `riscv64`, ...), `None` for a non-linux OS
    /// or an architecture qemu-user does not emulate.
    pub fn qemu_arch(&self) -> Option<&'static str> {
        let p = self.normalize();
        if p.os != "linux" {
            return None;
        }
        Some(match p.architecture.as_str() {
            "amd64" => "x86_64",
            "386" => "i386",
            "arm64" => "aarch64",
            "arm64be" => "aarch64_be",
            "arm" => "arm",
            "armbe" => "armeb",
            "ppc64le" => "ppc64le",
            "ppc64" => "ppc64",
            "ppc" => "ppc",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loong64" => "loongarch64",
            "mips" => "mips",
            "mipsle" => "mipsel",
            "mips64" => "mips64",
            "mips64le" => "mips64el",
            "sparc64" => "sparc64",
            _ => return None,
        })
    }
}

impl fmt::Display for Platform {
    /// containerd's `Format` of the normalized platform (`linux/arm64`, `linux/arm/v7`): what
    /// BuildKit puts in TARGETPLATFORM and BUILDPLATFORM.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalize().format())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Go's `path.Join` for platform parts: empty parts skipped.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// containerd's `specifierRe`: `^[A-Za-z0-9_.-]+$`.
fn is_specifier_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// containerd's `osRe`: `name[(version(+feature)*)]`, as (name, version, `+feature...` with
/// its leading `+`, or empty).
fn split_os_options(part: &str) -> Option<(&str, &str, &str)> {
    let name_end = part
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
        .unwrap_or(part.len());
    if name_end == 0 {
        return None;
    }
    let (name, rest) = part.split_at(name_end);
    if rest.is_empty() {
        return Some((name, "", ""));
    }
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let option = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%' | b'-');
    let version_end = inner.find('+').unwrap_or(inner.len());
    let (version, features) = inner.split_at(version_end);
    if !version.bytes().all(option) {
        return None;
    }
    if !features.is_empty()
        && !features[1..]
            .split('+')
            .all(|f| !f.is_empty() && f.bytes().all(option))
    {
        return None;
    }
    Some((name, version, features))
}

/// containerd's `decodeOSOption`: Go's `url.PathUnescape` when the value holds a `%`.
fn decode_os_option(v: &str, specifier: &str, what: &'static str) -> Result<String, Error> {
    if !v.contains('%') {
        return Ok(v.to_owned());
    }
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                    out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                    i += 3;
                }
                _ => {
                    let end = (i + 3).min(bytes.len());
                    return Err(Error::InvalidOsOption {
                        specifier: specifier.to_owned(),
                        what,
                        value: v.to_owned(),
                        escape: String::from_utf8_lossy(&bytes[i..end]).into_owned(),
                    });
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// containerd's `encodeOSOption`: `%`, `+`, `(`, `)` and `/` percent-encoded.
fn encode_os_option(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
