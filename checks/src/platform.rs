//! Just enough of containerd's `platforms.Parse` / `Normalize` / `FormatAll` for the checks:
//! FROM `--platform` values and base image platforms.

/// An OS/architecture/variant triple, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v7`, or empty.
    pub variant: String,
}

impl Platform {
    /// `linux/amd64`, the platform kiln builds for.
    pub fn linux_amd64() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: String::new(),
        }
    }

    /// Normalizes OS, architecture and variant names (`aarch64` -> `arm64`, ...).
    pub fn normalized(os: &str, arch: &str, variant: &str) -> Self {
        let os = os.to_lowercase();
        let (architecture, variant) = normalize_arch(&arch.to_lowercase(), &variant.to_lowercase());
        Platform {
            os: if os == "macos" { "darwin".into() } else { os },
            architecture,
            variant,
        }
    }

    /// `platforms.FormatAll`: `os/arch[/variant]`.
    pub fn format(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match arch {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { variant }),
        "aarch64" | "arm64" => (
            "arm64",
            if matches!(variant, "8" | "v8" | "v8.0") {
                ""
            } else {
                variant
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant {
                "" | "7" => "v7",
                "5" | "6" | "8" => return ("arm".into(), format!("v{variant}")),
                v => v,
            },
        ),
        other => (other, variant),
    };
    (a.to_owned(), v.to_owned())
}

const KNOWN_OS: [&str; 15] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
];
const KNOWN_ARCH: [&str; 24] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn is_known_os(s: &str) -> bool {
    KNOWN_OS.contains(&s) || s == "windows" || s == "macos"
}
fn is_known_arch(s: &str) -> bool {
    KNOWN_ARCH.contains(&s)
        || matches!(
            s,
            "x86_64" | "x86-64" | "aarch64" | "armhf" | "armel" | "i386"
        )
}

/// `platforms.Parse`, with containerd's error messages for what the checks can meet.
pub(crate) fn parse(spec: &str) -> Result<Platform, String> {
    let invalid = |msg: &str| format!("{}: {msg}: invalid argument", crate::rules::go_q(spec));
    let parts: Vec<&str> = spec.split('/').collect();
    for p in &parts {
        if p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!(
                "{} is an invalid component of {}: platform specifier component must match \"^[A-Za-z0-9_.-]+$\": invalid argument",
                crate::rules::go_q(p),
                crate::rules::go_q(spec)
            ));
        }
    }
    let lower: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
    match lower.as_slice() {
        [one] => {
            if is_known_os(one) {
                Ok(Platform::normalized(one, "amd64", ""))
            } else if is_known_arch(one) {
                Ok(Platform::normalized("linux", one, ""))
            } else {
                Err(invalid("unknown operating system or architecture"))
            }
        }
        [os, arch] => {
            if !is_known_os(os) {
                return Err(invalid("unknown operating system"));
            }
            if !is_known_arch(arch) {
                return Err(invalid("unknown architecture"));
            }
            Ok(Platform::normalized(os, arch, ""))
        }
        [os, arch, variant] => {
            if !is_known_os(os) {
                return Err(invalid("unknown operating system"));
            }
            if !is_known_arch(arch) {
                return Err(invalid("unknown architecture"));
            }
            Ok(Platform::normalized(os, arch, variant))
        }
        _ => Err(invalid("cannot parse platform specifier")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(parse("linux/amd64").unwrap(), Platform::linux_amd64());
        assert_eq!(parse("linux/aarch64").unwrap().format(), "linux/arm64");
        assert_eq!(parse("linux/arm64/v8").unwrap().format(), "linux/arm64");
        assert_eq!(parse("linux/arm").unwrap().format(), "linux/arm/v7");
        assert_eq!(
            parse("linux/").unwrap_err(),
            "\"\" is an invalid component of \"linux/\": platform specifier component must match \"^[A-Za-z0-9_.-]+$\": invalid argument"
        );
        assert!(parse("plan10/amd64").is_err());
    }
}
