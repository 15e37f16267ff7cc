//! containerd's `database.go`: the operating systems and architectures Go knows (from Go's
//! `syslist.go`) and the normalization of their other spellings (`aarch64` -> `arm64`, ...).

/// `isKnownOS`: the value must be normalized first.
pub(crate) fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

/// `isKnownArch`: the value must be normalized first.
pub(crate) fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

/// `normalizeOS`: lowercase, `macos` -> `darwin`, empty -> the host's OS.
pub(crate) fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return std::env::consts::OS.to_owned();
    }
    let os = os.to_lowercase();
    if os == "macos" {
        "darwin".to_owned()
    } else {
        os
    }
}

/// `normalizeArch`: lowercase, Go's names, the default variants dropped (arm64 `v8`, amd64
/// `v1`) and arm's made explicit (`arm` -> `arm/v7`).
pub(crate) fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = (arch.to_lowercase(), variant.to_lowercase());
    match arch.as_str() {
        "i386" => ("386".to_owned(), String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64".to_owned(),
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64".to_owned(),
            match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                _ => variant,
            },
        ),
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => (
            arch,
            match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        _ => (arch, variant),
    }
}

/// Go's `GOARCH` of the machine kiln was built for.
pub(crate) fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_normalization_table() {
        // The table in containerd's package documentation, plus the variant rules.
        for (arch, variant, want) in [
            ("aarch64", "", ("arm64", "")),
            ("Aarch64", "V8", ("arm64", "")),
            ("arm64", "v8.0", ("arm64", "")),
            ("arm64", "9.0", ("arm64", "v9")),
            ("arm64", "v8.2", ("arm64", "v8.2")),
            ("armhf", "", ("arm", "v7")),
            ("armel", "", ("arm", "v6")),
            ("arm", "", ("arm", "v7")),
            ("arm", "6", ("arm", "v6")),
            ("arm", "v5", ("arm", "v5")),
            ("i386", "x", ("386", "")),
            ("x86_64", "v1", ("amd64", "")),
            ("x86-64", "v3", ("amd64", "v3")),
            ("riscv64", "", ("riscv64", "")),
        ] {
            let (a, v) = normalize_arch(arch, variant);
            assert_eq!((a.as_str(), v.as_str()), want, "{arch}/{variant}");
        }
        assert_eq!(normalize_os("macOS"), "darwin");
        assert_eq!(normalize_os("Linux"), "linux");
        assert!(is_known_os("zos") && !is_known_os("plan10"));
        assert!(is_known_arch("loong64") && !is_known_arch("x86_64"));
    }
}
