//! containerd's `cpuinfo_linux.go`, for 32-bit arm only: the CPU variant (`v7`, `v6`) read from
//! /proc/cpuinfo. arm64's `v8` is normalized away anyway, and the amd64 micro-architecture
//! level (`v3`) containerd now reads is left out because docker and BuildKit report the host
//! as plain linux/amd64.

use std::sync::OnceLock;

/// The host CPU's variant (`v7`), or `None` off 32-bit arm; read once.
pub(crate) fn cpu_variant() -> Option<String> {
    static VARIANT: OnceLock<Option<String>> = OnceLock::new();
    VARIANT
        .get_or_init(|| {
            if std::env::consts::ARCH != "arm" {
                return None;
            }
            // containerd leaves the variant empty when /proc/cpuinfo cannot be read.
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
            arm_variant(&cpuinfo, &machine(), true)
        })
        .clone()
}

/// `uname -m`.
fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/arch")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `getCPUInfo`: the value of the first `pattern: value` line (case-insensitive name).
fn cpuinfo_field<'a>(cpuinfo: &'a str, pattern: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let mut list = line.split(':');
        let name = list.next()?;
        let value = list.next()?;
        name.trim()
            .eq_ignore_ascii_case(pattern)
            .then_some(value.trim())
    })
}

/// `getArmCPUVariant`: the "CPU architecture" field, else the machine name (`armv7l`), mapped
/// to `v8`..`v3` (`unknown` otherwise; `None` when neither names an arm CPU, where
/// containerd fails); `goarch_arm` applies the Raspberry Pi ARMv6 quirk.
fn arm_variant(cpuinfo: &str, machine: &str, goarch_arm: bool) -> Option<String> {
    let mut variant = match cpuinfo_field(cpuinfo, "Cpu architecture") {
        Some(v) => v.to_owned(),
        None => {
            let arch = machine.to_lowercase();
            if arch == "aarch64" {
                "8".to_owned()
            } else if arch.len() >= 5 && arch.starts_with("armv") {
                match &arch[3..5] {
                    "v8" => "8",
                    "v7" => "7",
                    "v6" => "6",
                    "v5" => "5",
                    "v4" => "4",
                    "v3" => "3",
                    _ => "unknown",
                }
                .to_owned()
            } else {
                return None;
            }
        }
    };
    // Raspberry Pi ARMv6 boards report "CPU architecture: 7".
    if goarch_arm
        && variant == "7"
        && cpuinfo_field(cpuinfo, "model name")
            .is_some_and(|m| m.to_lowercase().starts_with("armv6-compatible"))
    {
        "6".clone_into(&mut variant);
    }
    let v = match variant.to_lowercase().as_str() {
        "8" | "aarch64" => "v8",
        "7" | "7m" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        "4" | "4t" => "v4",
        "3" => "v3",
        _ => "unknown",
    };
    Some(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_variants_from_cpuinfo_and_machine() {
        let pi = "processor\t: 0\nmodel name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n";
        assert_eq!(arm_variant(pi, "armv6l", true).as_deref(), Some("v6"));
        assert_eq!(arm_variant(pi, "armv6l", false).as_deref(), Some("v7"));
        assert_eq!(
            arm_variant("CPU architecture: 8\n", "", true).as_deref(),
            Some("v8")
        );
        assert_eq!(
            arm_variant("CPU architecture: 5TEJ\n", "", true).as_deref(),
            Some("v5")
        );
        assert_eq!(arm_variant("", "armv7l", true).as_deref(), Some("v7"));
        assert_eq!(arm_variant("", "aarch64", true).as_deref(), Some("v8"));
        assert_eq!(arm_variant("", "armv9x", true).as_deref(), Some("unknown"));
        assert_eq!(arm_variant("", "x86_64", true), None);
    }
}
