//! Can this machine run a platform's binaries, and how: natively, or through a qemu-user
//! handler registered in binfmt_misc (Debian's `qemu-user-static` + `binfmt-support`)?
//!
//! A RUN step of a foreign architecture needs nothing from the executor: the kernel picks the
//! handler by the ELF header of the binary being executed. What the build must check up front is
//! that such a handler exists and works *inside the container's root*, which holds no qemu: only
//! a handler registered with the `F` (fix-binary) flag has its interpreter opened by the kernel
//! at registration time. The check reads the real binfmt_misc entries (`enabled`, `interpreter`,
//! `flags`, `offset`, `magic`, `mask`) and matches each entry's magic and mask against the ELF
//! header of that architecture's executables (static `ET_EXEC` and PIE `ET_DYN`), as the kernel
//! does, rather than trusting handler names.
//!
//! BuildKit and runc set no personality for 32-bit platforms (moby/moby#21892 is open): a
//! `linux/386` RUN on an x86_64 host sees `uname -m` = `x86_64`, and so it does here.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the kernel's binfmt_misc filesystem is mounted.
pub const BINFMT_MISC_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// What Debian needs to run foreign binaries.
const INSTALL: &str = "apt-get install qemu-user-static binfmt-support";

/// How this machine runs a platform's binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emulation {
    /// The CPU runs them itself (amd64 and 386 on x86_64; arm64, and arm where the CPU has
    /// 32-bit support, on aarch64).
    Native,
    /// A binfmt_misc handler, enabled and registered with the `F` flag, runs them.
    Binfmt {
        /// The handler's name (its file in binfmt_misc, e.g. `qemu-aarch64`).
        handler: String,
        /// The interpreter it runs (e.g. `/usr/libexec/qemu-binfmt/aarch64-binfmt-P`).
        interpreter: PathBuf,
    },
}

/// Why a platform cannot run here: the `reason` of [`Error::NoEmulator`], each saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoEmulatorReason {
    /// The architecture is not one kiln knows the ELF machine of.
    UnknownArchitecture,
    /// binfmt_misc is not mounted (no `register` file in the directory).
    NotMounted {
        /// The directory looked at.
        dir: PathBuf,
    },
    /// binfmt_misc is mounted but switched off as a whole (`status` says `disabled`).
    BinfmtDisabled {
        /// The binfmt_misc directory.
        dir: PathBuf,
    },
    /// No registered handler's magic matches the architecture's ELF header.
    NoHandler {
        /// The binfmt_misc directory.
        dir: PathBuf,
        /// The qemu name of the architecture (`aarch64`).
        qemu_arch: &'static str,
    },
    /// A matching handler exists but is disabled.
    HandlerDisabled {
        /// The handler's file.
        path: PathBuf,
        /// Its interpreter.
        interpreter: PathBuf,
    },
    /// A matching handler exists but lacks the `F` flag, so its interpreter (a host path) cannot
    /// be found from inside the container's root.
    NoFixBinary {
        /// The handler's file.
        path: PathBuf,
        /// Its interpreter.
        interpreter: PathBuf,
    },
}

impl fmt::Display for NoEmulatorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoEmulatorReason::UnknownArchitecture => {
                write!(f, "kiln knows no ELF machine type for this architecture")
            }
            NoEmulatorReason::NotMounted { dir } => write!(
                f,
                "binfmt_misc is not mounted at {dir} (mount -t binfmt_misc binfmt_misc {dir}, \
                 then {INSTALL})",
                dir = dir.display()
            ),
            NoEmulatorReason::BinfmtDisabled { dir } => write!(
                f,
                "binfmt_misc is disabled ({}/status says disabled; echo 1 > {0}/status)",
                dir.display()
            ),
            NoEmulatorReason::NoHandler { dir, qemu_arch } => write!(
                f,
                "no binfmt_misc handler for {qemu_arch} binaries is registered in {} ({INSTALL})",
                dir.display()
            ),
            NoEmulatorReason::HandlerDisabled { path, interpreter } => write!(
                f,
                "the binfmt_misc handler {} ({}) is disabled (echo 1 > {0})",
                path.display(),
                interpreter.display()
            ),
            NoEmulatorReason::NoFixBinary { path, interpreter } => write!(
                f,
                "the binfmt_misc handler {} is registered without the F flag, so its \
                 interpreter {} cannot be opened inside the build's root filesystem \
                 ({INSTALL}, whose qemu handlers have the F flag, or register it again with \
                 flags F)",
                path.display(),
                interpreter.display()
            ),
        }
    }
}

/// How this machine runs binaries of `arch` (Go names: `amd64`, `arm64`, `arm`, `386`,
/// `ppc64le`, `s390x`, `riscv64`) and `variant` (`v7`, ...), looking at
/// [`BINFMT_MISC_DIR`]; see [`emulation_in`].
///
/// # Errors
/// [`Error::NoEmulator`] saying what to install or mount; [`Error::Io`] when an entry cannot be
/// read.
pub fn emulation(arch: &str, variant: Option<&str>) -> Result<Emulation> {
    emulation_in(Path::new(BINFMT_MISC_DIR), arch, variant)
}

/// [`emulation`] with binfmt_misc mounted at `binfmt_dir`: [`Emulation::Native`] when the
/// machine runs `arch` itself, else the first enabled handler (in name order) whose magic and
/// mask match `arch`'s ELF executables, static and PIE, and that has the `F` flag.
///
/// # Errors
/// [`Error::NoEmulator`] with the [`NoEmulatorReason`]: not mounted, disabled, no handler, the
/// matching handler disabled or without `F`; [`Error::Io`] when an entry cannot be read.
pub fn emulation_in(binfmt_dir: &Path, arch: &str, variant: Option<&str>) -> Result<Emulation> {
    emulation_on(&host_machine(), binfmt_dir, arch, variant)
}

/// [`emulation_in`] on a `host` CPU (`uname -m`).
fn emulation_on(
    host: &str,
    binfmt_dir: &Path,
    arch: &str,
    variant: Option<&str>,
) -> Result<Emulation> {
    let no = |reason| Error::NoEmulator {
        platform: match variant {
            Some(v) if !v.is_empty() => format!("linux/{arch}/{v}"),
            _ => format!("linux/{arch}"),
        },
        reason,
    };
    let Some(machine) = Machine::of(arch) else {
        return Err(no(NoEmulatorReason::UnknownArchitecture));
    };
    if runs_natively(host, machine) {
        return Ok(Emulation::Native);
    }
    if !binfmt_dir.join("register").exists() {
        return Err(no(NoEmulatorReason::NotMounted {
            dir: binfmt_dir.to_path_buf(),
        }));
    }
    let status = binfmt_dir.join("status");
    match fs::read_to_string(&status) {
        Ok(s) if s.trim() == "disabled" => {
            return Err(no(NoEmulatorReason::BinfmtDisabled {
                dir: binfmt_dir.to_path_buf(),
            }));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read binfmt_misc status", status, e)),
    }
    let headers = machine.elf_headers();
    let mut names: Vec<String> = fs::read_dir(binfmt_dir)
        .map_err(|e| Error::io("read binfmt_misc directory", binfmt_dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "register" && n != "status")
        .collect();
    names.sort();
    // The first matching handler that cannot serve, if no other can.
    let mut problem = None;
    for name in names {
        let path = binfmt_dir.join(&name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // Unregistered meanwhile, or not an entry.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::InvalidData
                ) =>
            {
                continue;
            }
            Err(e) => return Err(Error::io("read binfmt_misc entry", path, e)),
        };
        let Some(entry) = Entry::parse(&text) else {
            continue;
        };
        if !headers.iter().all(|h| entry.matches(h)) {
            continue;
        }
        if !entry.enabled {
            problem.get_or_insert(NoEmulatorReason::HandlerDisabled {
                path,
                interpreter: entry.interpreter,
            });
        } else if !entry.flags.contains('F') {
            problem.get_or_insert(NoEmulatorReason::NoFixBinary {
                path,
                interpreter: entry.interpreter,
            });
        } else {
            return Ok(Emulation::Binfmt {
                handler: name,
                interpreter: entry.interpreter,
            });
        }
    }
    Err(no(problem.unwrap_or(NoEmulatorReason::NoHandler {
        dir: binfmt_dir.to_path_buf(),
        qemu_arch: machine.qemu,
    })))
}

/// One architecture's ELF identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Machine {
    /// `ELFCLASS64` (2) or `ELFCLASS32` (1).
    class: u8,
    /// Big-endian (`ELFDATA2MSB`) rather than little-endian.
    big_endian: bool,
    /// `e_machine`, the ELF machine code.
    code: u16,
    /// qemu's name for it, as in `qemu-<name>`.
    qemu: &'static str,
}

impl Machine {
    fn of(arch: &str) -> Option<Machine> {
        let (class, big_endian, code, qemu) = match arch {
            "amd64" => (2, false, 62, "x86_64"),
            "386" => (1, false, 3, "i386"),
            "arm64" => (2, false, 183, "aarch64"),
            "arm" => (1, false, 40, "arm"),
            "ppc64le" => (2, false, 21, "ppc64le"),
            "s390x" => (2, true, 22, "s390x"),
            "riscv64" => (2, false, 243, "riscv64"),
            _ => return None,
        };
        Some(Machine {
            class,
            big_endian,
            code,
            qemu,
        })
    }

    /// The first 64 bytes of this machine's `ET_EXEC` and `ET_DYN` (PIE) executables: what a
    /// handler's magic is compared with.
    fn elf_headers(self) -> [[u8; 64]; 2] {
        [2u16, 3].map(|e_type| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(b"\x7fELF");
            h[4] = self.class;
            h[5] = if self.big_endian { 2 } else { 1 };
            h[6] = 1; // EV_CURRENT
            let (half, word) = if self.big_endian {
                (e_type.to_be_bytes(), self.code.to_be_bytes())
            } else {
                (e_type.to_le_bytes(), self.code.to_le_bytes())
            };
            h[16..18].copy_from_slice(&half);
            h[18..20].copy_from_slice(&word);
            let version = if self.big_endian {
                1u32.to_be_bytes()
            } else {
                1u32.to_le_bytes()
            };
            h[20..24].copy_from_slice(&version);
            h
        })
    }
}

/// `uname -m` of the running kernel.
fn host_machine() -> String {
    rustix::system::uname()
        .machine()
        .to_string_lossy()
        .into_owned()
}

/// Whether a `host` (`uname -m`) CPU runs `machine`'s binaries without help.
fn runs_natively(host: &str, machine: Machine) -> bool {
    match (host, machine.qemu) {
        ("x86_64", "x86_64" | "i386") | ("aarch64", "aarch64") => true,
        (h, "i386") if is_x86_32(h) => true,
        ("aarch64", "arm") => aarch64_runs_arm32(),
        (h, "arm") if h.starts_with("armv") => true,
        (h, q) => h == q,
    }
}

fn is_x86_32(host: &str) -> bool {
    matches!(host, "i386" | "i486" | "i586" | "i686")
}

/// Whether this aarch64 CPU and kernel run 32-bit ARM code: `personality(PER_LINUX32)` fails
/// with `EINVAL` where they do not (the test `setarch linux32` makes). The calling thread's
/// personality is restored at once.
fn aarch64_runs_arm32() -> bool {
    const PER_LINUX32: libc::c_ulong = 0x0008;
    const QUERY: libc::c_ulong = 0xffff_ffff;
    // SAFETY: personality(2) only changes the calling thread's execution domain, restored below.
    unsafe {
        let old = libc::personality(QUERY);
        if old == -1 || libc::personality(PER_LINUX32) == -1 {
            return false;
        }
        #[allow(clippy::cast_sign_loss)]
        libc::personality(old as libc::c_ulong);
    }
    true
}

/// One binfmt_misc entry as the kernel prints it (fs/binfmt_misc.c `bm_entry_read`):
/// `enabled|disabled`, `interpreter PATH`, `flags: POCF`, then `offset N`, `magic HEX` and
/// `mask HEX` for a magic entry or `extension .EXT` for an extension one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    enabled: bool,
    interpreter: PathBuf,
    flags: String,
    offset: usize,
    /// Empty for an extension entry, which never matches an ELF header.
    magic: Vec<u8>,
    mask: Option<Vec<u8>>,
}

impl Entry {
    fn parse(text: &str) -> Option<Entry> {
        let mut lines = text.lines();
        let enabled = match lines.next()?.trim() {
            "enabled" => true,
            "disabled" => false,
            _ => return None,
        };
        let mut entry = Entry {
            enabled,
            ..Entry::default()
        };
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "interpreter" => entry.interpreter = PathBuf::from(value),
                "flags:" => value.trim().clone_into(&mut entry.flags),
                "offset" => entry.offset = value.trim().parse().ok()?,
                "magic" => entry.magic = hex(value.trim())?,
                "mask" => entry.mask = Some(hex(value.trim())?),
                _ => {}
            }
        }
        Some(entry)
    }

    /// The kernel's test (`check_file`): every magic byte equals the header byte at `offset`
    /// plus its index, masked.
    fn matches(&self, header: &[u8]) -> bool {
        if self.magic.is_empty() {
            return false;
        }
        let Some(window) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        window
            .iter()
            .zip(&self.magic)
            .enumerate()
            .all(|(i, (&b, &m))| {
                let mask = self
                    .mask
                    .as_ref()
                    .map_or(0xff, |mask| mask.get(i).copied().unwrap_or(0xff));
                b & mask == m
            })
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const QEMU_ARM: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c4601010100000000000000000002002800\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const QEMU_S390X: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\n\
        flags: PF\noffset 0\nmagic 7f454c4602020100000000000000000000020016\n\
        mask fffffffffffffffcfffffffffffffffffffeffff\n";
    const JAR: &str = "enabled\ninterpreter /usr/bin/jexec\nflags: \noffset 0\nmagic 504b0304\n";

    fn machine(arch: &str) -> Machine {
        Machine::of(arch).expect("known arch")
    }

    #[test]
    fn parses_the_kernels_entry_format() {
        let e = Entry::parse(QEMU_AARCH64).expect("entry");
        assert!(e.enabled);
        assert_eq!(
            e.interpreter,
            Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
        assert_eq!(e.flags, "PF");
        assert_eq!(e.offset, 0);
        assert_eq!(e.magic.len(), 20);
        assert_eq!(e.mask.as_ref().map(Vec::len), Some(20));
        let jar = Entry::parse(JAR).expect("entry");
        assert_eq!((jar.flags.as_str(), jar.mask), ("", None));
        let ext =
            Entry::parse("disabled\ninterpreter /bin/x\nflags: \nextension .exe\n").expect("entry");
        assert!(!ext.enabled && ext.magic.is_empty());
        assert_eq!(Entry::parse("garbage\n"), None);
        assert_eq!(Entry::parse("enabled\nmagic 7f4\n"), None, "odd hex");
    }

    #[test]
    fn magic_and_mask_pick_the_architecture_not_the_name() {
        let aarch64 = Entry::parse(QEMU_AARCH64).expect("entry");
        let arm = Entry::parse(QEMU_ARM).expect("entry");
        let s390x = Entry::parse(QEMU_S390X).expect("entry");
        for h in machine("arm64").elf_headers() {
            assert!(aarch64.matches(&h) && !arm.matches(&h) && !s390x.matches(&h));
        }
        for h in machine("arm").elf_headers() {
            assert!(arm.matches(&h) && !aarch64.matches(&h));
        }
        for h in machine("s390x").elf_headers() {
            assert!(s390x.matches(&h), "big-endian e_type/e_machine");
        }
        for h in machine("amd64").elf_headers() {
            assert!(!aarch64.matches(&h) && !s390x.matches(&h));
        }
        assert!(
            !Entry::parse(JAR)
                .expect("entry")
                .matches(&machine("arm64").elf_headers()[0])
        );
        // A magic reaching past the header cannot match it.
        let long = Entry {
            enabled: true,
            offset: 60,
            magic: vec![0; 8],
            ..Entry::default()
        };
        assert!(!long.matches(&machine("arm64").elf_headers()[0]));
    }

    #[test]
    fn native_architectures_per_host() {
        assert!(runs_natively("x86_64", machine("amd64")));
        assert!(runs_natively("x86_64", machine("386")));
        assert!(!runs_natively("x86_64", machine("arm64")));
        assert!(!runs_natively("x86_64", machine("arm")));
        assert!(runs_natively("aarch64", machine("arm64")));
        assert!(!runs_natively("aarch64", machine("amd64")));
        assert!(runs_natively("i686", machine("386")));
        assert!(!runs_natively("i686", machine("amd64")));
        assert!(runs_natively("armv7l", machine("arm")));
        assert!(runs_natively("s390x", machine("s390x")));
        assert!(!runs_natively("ppc64le", machine("riscv64")));
    }

    /// A fake binfmt_misc directory holding `entries` (name, text).
    fn binfmt_dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("register"), "").expect("register");
        fs::write(dir.path().join("status"), "enabled\n").expect("status");
        for (name, text) in entries {
            fs::write(dir.path().join(name), text).expect("entry");
        }
        dir
    }

    fn error_on_x86_64(dir: &Path, arch: &str, variant: Option<&str>) -> String {
        match emulation_on("x86_64", dir, arch, variant) {
            Err(e @ Error::NoEmulator { .. }) => e.to_string(),
            other => panic!("expected NoEmulator, got {other:?}"),
        }
    }

    #[test]
    fn an_enabled_fix_binary_handler_with_the_right_magic_is_used() {
        // Named to mislead: only the magic counts.
        let dir = binfmt_dir(&[
            ("jar", JAR),
            ("qemu-arm", QEMU_AARCH64),
            ("zz-arm", QEMU_ARM),
        ]);
        assert_eq!(
            emulation_on("x86_64", dir.path(), "arm64", None).expect("emulated"),
            Emulation::Binfmt {
                handler: "qemu-arm".into(),
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
            }
        );
        assert!(matches!(
            emulation_on("x86_64", dir.path(), "arm", Some("v7")),
            Ok(Emulation::Binfmt { handler, .. }) if handler == "zz-arm"
        ));
        assert_eq!(
            emulation_on("x86_64", dir.path(), "386", None).expect("native"),
            Emulation::Native
        );
        assert_eq!(
            emulation_on("x86_64", dir.path(), "amd64", Some("v2")).expect("native"),
            Emulation::Native
        );
    }

    #[test]
    fn no_handler_says_what_to_install() {
        let dir = binfmt_dir(&[("jar", JAR), ("qemu-arm", QEMU_ARM)]);
        let d = dir.path().display();
        assert_eq!(
            error_on_x86_64(dir.path(), "arm64", None),
            format!(
                "no emulator for linux/arm64 binaries: no binfmt_misc handler for \
                 aarch64 binaries is registered in {d} (apt-get install qemu-user-static \
                 binfmt-support)"
            )
        );
        assert_eq!(
            error_on_x86_64(dir.path(), "mips64le", None),
            "no emulator for linux/mips64le binaries: kiln knows no ELF machine type \
             for this architecture"
        );
    }

    #[test]
    fn a_disabled_handler_is_named() {
        let disabled = QEMU_AARCH64.replacen("enabled", "disabled", 1);
        let dir = binfmt_dir(&[("qemu-aarch64", &disabled)]);
        let d = dir.path().display();
        assert_eq!(
            error_on_x86_64(dir.path(), "arm64", Some("v8")),
            format!(
                "no emulator for linux/arm64/v8 binaries: the binfmt_misc handler \
                 {d}/qemu-aarch64 (/usr/libexec/qemu-binfmt/aarch64-binfmt-P) is disabled \
                 (echo 1 > {d}/qemu-aarch64)"
            )
        );
        // Another, usable handler for the same magic wins.
        fs::write(dir.path().join("qemu-aarch64-2"), QEMU_AARCH64).expect("entry");
        assert!(matches!(
            emulation_on("x86_64", dir.path(), "arm64", None),
            Ok(Emulation::Binfmt { handler, .. }) if handler == "qemu-aarch64-2"
        ));
        fs::write(dir.path().join("status"), "disabled\n").expect("status");
        assert_eq!(
            error_on_x86_64(dir.path(), "arm64", None),
            format!(
                "no emulator for linux/arm64 binaries: binfmt_misc is disabled \
                 ({d}/status says disabled; echo 1 > {d}/status)"
            )
        );
    }

    #[test]
    fn a_handler_without_the_f_flag_is_refused() {
        let without_f = QEMU_AARCH64.replace("flags: PF", "flags: P");
        let dir = binfmt_dir(&[("qemu-aarch64", &without_f)]);
        let d = dir.path().display();
        assert_eq!(
            error_on_x86_64(dir.path(), "arm64", None),
            format!(
                "no emulator for linux/arm64 binaries: the binfmt_misc handler \
                 {d}/qemu-aarch64 is registered without the F flag, so its interpreter \
                 /usr/libexec/qemu-binfmt/aarch64-binfmt-P cannot be opened inside the \
                 build's root filesystem (apt-get install qemu-user-static binfmt-support, \
                 whose qemu handlers have the F flag, or register it again with flags F)"
            )
        );
    }

    #[test]
    fn binfmt_misc_not_mounted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let text = format!(
            "no emulator for linux/arm64 binaries: binfmt_misc is not mounted at {d} \
             (mount -t binfmt_misc binfmt_misc {d}, then apt-get install qemu-user-static \
             binfmt-support)"
        );
        assert_eq!(error_on_x86_64(dir.path(), "arm64", None), text);
        let missing = dir.path().join("nope");
        assert!(error_on_x86_64(&missing, "arm64", None).contains("is not mounted at"));
        // Native platforms need no binfmt_misc at all.
        assert_eq!(
            emulation_on("aarch64", &missing, "arm64", None).expect("native"),
            Emulation::Native
        );
    }

    #[test]
    fn this_machines_binfmt_misc_runs_arm64() {
        let test = "this_machines_binfmt_misc_runs_arm64";
        match emulation("arm64", None) {
            Ok(Emulation::Native) => assert_eq!(host_machine(), "aarch64"),
            Ok(Emulation::Binfmt {
                handler,
                interpreter,
            }) => {
                let entry = fs::read_to_string(Path::new(BINFMT_MISC_DIR).join(&handler))
                    .expect("the handler's entry");
                assert!(entry.starts_with("enabled\n"), "{entry}");
                assert!(entry.contains(&format!("interpreter {}\n", interpreter.display())));
                assert!(interpreter.exists(), "{}", interpreter.display());
                // Debian registers every qemu-user-static handler as qemu-<qemu arch>: the
                // magic matching finds each one's.
                for arch in ["arm64", "arm", "ppc64le", "s390x", "riscv64"] {
                    let qemu = machine(arch).qemu;
                    match emulation(arch, None) {
                        Ok(Emulation::Binfmt { handler, .. }) => {
                            assert_eq!(handler, format!("qemu-{qemu}"));
                        }
                        other => panic!("{arch}: {other:?}"),
                    }
                }
            }
            Err(e) => {
                kiln_testkit::skip(test, &format!("{e}"));
            }
        }
    }
}
