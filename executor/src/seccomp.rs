//! A seccomp filter in the spirit of Docker's default profile: the syscalls that profile leaves
//! out for a container with the default capabilities (kernel keyrings, BPF, perf events,
//! userfaultfd, io_uring, module loading, mounts, clock and swap control, ...) fail with EPERM;
//! everything else is allowed. Docker's profile is an allow-list; this deny-list covers the
//! calls it refuses that the dropped capabilities alone would not (keyctl, bpf, perf_event_open,
//! userfaultfd, io_uring) plus the capability-gated ones, as defence in depth.
//!
//! Only the native architecture is filtered (x86_64, with the x32 ABI refused, or aarch64);
//! 32-bit compat syscalls pass unfiltered. Other architectures get no filter.

/// Syscall numbers refused with EPERM.
#[cfg(target_arch = "x86_64")]
pub(crate) const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("finit_module", libc::SYS_finit_module),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mount", libc::SYS_mount),
    ("move_mount", libc::SYS_move_mount),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pivot_root", libc::SYS_pivot_root),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("sysfs", libc::SYS_sysfs),
    ("_sysctl", libc::SYS__sysctl),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("ustat", libc::SYS_ustat),
];

/// Syscall numbers refused with EPERM.
#[cfg(target_arch = "aarch64")]
pub(crate) const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("finit_module", libc::SYS_finit_module),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mount", libc::SYS_mount),
    ("move_mount", libc::SYS_move_mount),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pivot_root", libc::SYS_pivot_root),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("userfaultfd", libc::SYS_userfaultfd),
];

/// No filter on other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) const DENIED: &[(&str, libc::c_long)] = &[];

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: u32 = 0;

/// The libseccomp name of the native architecture, for the OCI spec.
#[cfg(target_arch = "x86_64")]
pub(crate) const OCI_ARCH: &str = "SCMP_ARCH_X86_64";
/// The libseccomp name of the native architecture, for the OCI spec.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const OCI_ARCH: &str = "SCMP_ARCH_AARCH64";

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// clone(2) flags that create namespaces; Docker's profile refuses them without CAP_SYS_ADMIN.
pub(crate) const CLONE_NAMESPACE_FLAGS: &[u32] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The classic BPF program. Native arch: the x32 ABI and the listed numbers fail with EPERM,
/// clone(2) with namespace flags too, clone3(2) with ENOSYS (its flags live in memory a filter
/// cannot read; libc then falls back to clone), the rest is allowed. Foreign arch: allowed.
/// Empty when there is nothing to deny.
pub(crate) fn program() -> Vec<libc::sock_filter> {
    if DENIED.is_empty() {
        return Vec::new();
    }
    let ld_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let jset = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let n = DENIED.len();
    // Layout (jumps only go forward):
    //   0 ld arch; 1 jeq native else ALLOW; 2 ld nr; 3 jge x32 → DENY; 4 jeq clone3 → ENOSYS;
    //   5 jeq clone → CLONE; 6..6+n jeq nr → DENY; ALLOW: ret allow;
    //   CLONE: ld args[0]; jset namespace flags → DENY; ret allow; DENY: ret EPERM;
    //   ENOSYS: ret ENOSYS.
    let allow_at = 6 + n;
    let clone_at = allow_at + 1;
    let deny_at = clone_at + 3;
    let enosys_at = deny_at + 1;
    let to = |from: usize, target: usize| (target - from - 1) as u8;
    let mut prog = Vec::with_capacity(enosys_at + 1);
    prog.push(stmt(ld_abs, 4)); // seccomp_data.arch
    prog.push(jump(jeq, NATIVE_ARCH, 0, to(1, allow_at)));
    prog.push(stmt(ld_abs, 0)); // seccomp_data.nr
    let x32 = if cfg!(target_arch = "x86_64") {
        X32_SYSCALL_BIT
    } else {
        u32::MAX
    };
    prog.push(jump(jge, x32, to(3, deny_at), 0));
    prog.push(jump(jeq, CLONE3 as u32, to(4, enosys_at), 0));
    prog.push(jump(jeq, libc::SYS_clone as u32, to(5, clone_at), 0));
    for (i, (_, nr)) in DENIED.iter().enumerate() {
        let at = 6 + i;
        prog.push(jump(jeq, *nr as u32, to(at, deny_at), 0));
    }
    prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    // seccomp_data.args[0], low word (little-endian): clone's flags.
    prog.push(stmt(ld_abs, 16));
    let mask = CLONE_NAMESPACE_FLAGS.iter().fold(0, |acc, f| acc | f);
    prog.push(jump(jset, mask, to(clone_at + 1, deny_at), 0));
    prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    prog.push(stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    prog
}

/// clone3(2), the same number on every architecture.
const CLONE3: libc::c_long = 435;

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on (arch, nr) like the kernel would.
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        eval_args(prog, arch, nr, 0)
    }

    fn eval_args(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            let code = u32::from(ins.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                acc = match ins.k {
                    4 => arch,
                    16 => arg0,
                    _ => nr,
                };
                pc += 1;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return ins.k;
            } else {
                let taken = match code & 0xf0 {
                    libc::BPF_JEQ => acc == ins.k,
                    libc::BPF_JSET => acc & ins.k != 0,
                    _ => acc >= ins.k,
                };
                pc += 1 + usize::from(if taken { ins.jt } else { ins.jf });
            }
        }
    }

    #[test]
    fn denies_the_list_and_allows_the_rest() {
        let prog = program();
        if DENIED.is_empty() {
            return;
        }
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for (name, nr) in DENIED {
            assert_eq!(eval(&prog, NATIVE_ARCH, *nr as u32), eperm, "{name}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_clone,
        ] {
            assert_eq!(eval(&prog, NATIVE_ARCH, nr as u32), libc::SECCOMP_RET_ALLOW);
        }
        assert_eq!(
            eval(&prog, 0x4000_0003, libc::SYS_keyctl as u32),
            libc::SECCOMP_RET_ALLOW,
            "foreign arch"
        );
        if cfg!(target_arch = "x86_64") {
            assert_eq!(eval(&prog, NATIVE_ARCH, X32_SYSCALL_BIT | 1), eperm);
        }
        let clone = libc::SYS_clone as u32;
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_THREAD) as u32;
        assert_eq!(
            eval_args(&prog, NATIVE_ARCH, clone, thread),
            libc::SECCOMP_RET_ALLOW
        );
        for flag in CLONE_NAMESPACE_FLAGS {
            assert_eq!(
                eval_args(&prog, NATIVE_ARCH, clone, flag | libc::SIGCHLD as u32),
                eperm,
                "{flag:#x}"
            );
        }
        assert_eq!(
            eval(&prog, NATIVE_ARCH, CLONE3 as u32),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
    }
}
