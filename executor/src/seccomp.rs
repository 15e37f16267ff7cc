// Over 600 lines: most of it is the syscall tables of Docker's profile, kept in one place to diff against moby/profiles.
//! The seccomp filter of a RUN step: Docker's default profile (moby/profiles
//! `seccomp/default.json`) as it applies to a container with Docker's default capabilities,
//! compiled to classic BPF without libseccomp.
//!
//! It is an allow-list: the calls in [`ALLOWED`] pass, `socket(2)` only for the address
//! families the profile lists (not `AF_VSOCK`, `AF_ALG`, ...), `personality(2)` only for the
//! profile's five values, `clone(2)` only without namespace flags, `clone3(2)` fails with ENOSYS
//! (its flags live in memory a filter cannot read; libc then falls back to clone), and every
//! other call fails with EPERM, except numbers above the highest one the profile names, which
//! fail with ENOSYS the way runc's filter does, so that a newer libc falls back from a syscall
//! this table does not know yet.
//!
//! On x86-64 the same rules are compiled for all three ABIs the kernel runs: x86-64, i386
//! (`int 0x80`, `AUDIT_ARCH_I386`, its own numbers) and x32 (`AUDIT_ARCH_X86_64` with
//! `__X32_SYSCALL_BIT` in the number), as Docker's profile does through its `archMap`; a call
//! from any other architecture kills the process. Lookups are a binary search over number
//! ranges, so a call costs about ten BPF instructions.
//!
//! Other targets (aarch64) keep a deny-list of the calls Docker's profile refuses and kill
//! calls from foreign architectures (arm compat).

#[cfg(target_arch = "x86_64")]
mod x86;

/// The calls Docker's default profile allows unconditionally for the default capability set:
/// its first rule, the `minKernel 4.8` ptrace rule, `chroot` (CAP_SYS_CHROOT is a default
/// capability) and the x86 rules for `arch_prctl` and `modify_ldt`.
pub(crate) const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // minKernel 4.8
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // CAP_SYS_CHROOT
    "chroot",
    // arches amd64, x32 (and x86 for modify_ldt)
    "arch_prctl",
    "modify_ldt",
];

/// Address families `socket(2)` may use besides those below [`SOCKET_FAMILIES_BELOW`]: the
/// profile's list, which leaves out AF_ECONET, AF_ATMSVC, AF_IRDA, AF_WANPIPE, AF_ISDN,
/// AF_CAIF, AF_ALG and AF_VSOCK.
pub(crate) const SOCKET_FAMILIES: &[u32] = &[
    13, 14, 15, 16, 17, 18, 21, 22, 24, 26, 27, 28, 29, 30, 31, 32, 33, 35, 36, 39, 41, 42, 43, 44,
    45,
];

/// `socket(2)` families below this (AF_UNIX, AF_INET, AF_INET6, AF_PACKET is 17...) pass.
pub(crate) const SOCKET_FAMILIES_BELOW: u32 = 12;

/// The `personality(2)` values the profile allows: PER_LINUX, UNAME26, PER_LINUX32,
/// UNAME26|PER_LINUX32 and the query 0xffffffff.
pub(crate) const PERSONALITIES: &[u32] = &[0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// clone(2) flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET); the profile allows clone only with none of them (`2114060288`).
pub(crate) const CLONE_NAMESPACE_MASK: u32 = 0x7e02_0000;

/// What the filter does with one syscall number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Errno(i32),
    /// Allowed when argument 0 is below the bound or one of the values, else EPERM.
    ArgIn {
        below: u32,
        values: &'static [u32],
    },
    /// Allowed when argument 0 has none of the mask's bits, else EPERM.
    ArgMaskClear(u32),
}

/// The rule for a syscall name, or `None` for the default (EPERM).
#[cfg(test)]
fn rule(name: &str) -> Option<Action> {
    rule_in(name, &ALLOWED.iter().copied().collect())
}

/// [`rule`] with [`ALLOWED`] as a set (the program is built at every container start).
fn rule_in(name: &str, allowed: &std::collections::HashSet<&str>) -> Option<Action> {
    match name {
        "socket" => Some(Action::ArgIn {
            below: SOCKET_FAMILIES_BELOW,
            values: SOCKET_FAMILIES,
        }),
        "personality" => Some(Action::ArgIn {
            below: 0,
            values: PERSONALITIES,
        }),
        "clone" => Some(Action::ArgMaskClear(CLONE_NAMESPACE_MASK)),
        "clone3" => Some(Action::Errno(libc::ENOSYS)),
        _ if allowed.contains(name) => Some(Action::Allow),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The libseccomp names of the architectures the filter covers, for the OCI spec.
#[cfg(target_arch = "x86_64")]
pub(crate) const OCI_ARCHES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
/// The libseccomp names of the architectures the filter covers, for the OCI spec.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const OCI_ARCHES: &[&str] = &["SCMP_ARCH_AARCH64"];

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

const LD_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const JA: u32 = libc::BPF_JMP | libc::BPF_JA;
const RET: u32 = libc::BPF_RET | libc::BPF_K;
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Argument 0, low and high word (little-endian).
const DATA_ARG0_LO: u32 = 16;
const DATA_ARG0_HI: u32 = 20;

fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// A self-contained program piece (every path ends in a `ret`) for one action.
fn leaf(action: Action) -> Vec<libc::sock_filter> {
    match action {
        Action::Allow => vec![stmt(RET, RET_ALLOW)],
        Action::Errno(errno) => vec![stmt(RET, ret_errno(errno))],
        Action::ArgIn { below, values } => {
            // ld hi; jeq 0 else DENY; ld lo; [jge below else ALLOW]; jeq v → ALLOW...; DENY; ALLOW
            let checks = values.len() + usize::from(below > 0);
            let deny_at = 3 + checks;
            let allow_at = deny_at + 1;
            let to = |from: usize, target: usize| (target - from - 1) as u8;
            let mut out = vec![
                stmt(LD_ABS, DATA_ARG0_HI),
                jump(JEQ, 0, 0, to(1, deny_at)),
                stmt(LD_ABS, DATA_ARG0_LO),
            ];
            if below > 0 {
                out.push(jump(JGE, below, 0, to(3, allow_at)));
            }
            for value in values {
                let at = out.len();
                out.push(jump(JEQ, *value, to(at, allow_at), 0));
            }
            out.push(stmt(RET, RET_EPERM));
            out.push(stmt(RET, RET_ALLOW));
            out
        }
        Action::ArgMaskClear(mask) => vec![
            stmt(LD_ABS, DATA_ARG0_LO),
            jump(JSET, mask, 1, 0),
            stmt(RET, RET_ALLOW),
            stmt(RET, RET_EPERM),
        ],
    }
}

/// A binary search over `ranges` (`(first number, action)`, sorted, the first starting at 0,
/// each running to the next) on the syscall number in the accumulator.
fn tree(ranges: &[(u32, Action)]) -> Vec<libc::sock_filter> {
    if let [(_, action)] = ranges {
        return leaf(*action);
    }
    let mid = ranges.len() / 2;
    let left = tree(&ranges[..mid]);
    let right = tree(&ranges[mid..]);
    let mut out = Vec::with_capacity(left.len() + right.len() + 2);
    // nr >= first of the right half: skip the left half.
    if let Ok(skip) = u8::try_from(left.len()) {
        out.push(jump(JGE, ranges[mid].0, skip, 0));
    } else {
        out.push(jump(JGE, ranges[mid].0, 0, 1));
        out.push(stmt(JA, left.len() as u32));
    }
    out.extend(left);
    out.extend(right);
    out
}

/// The step function over syscall numbers: `background` (sorted `(from, action)`) with the
/// single numbers in `points` overriding it; adjacent equal actions merged.
fn ranges(background: &[(u32, Action)], points: &[(u32, Action)]) -> Vec<(u32, Action)> {
    let at = |nr: u32| {
        background
            .iter()
            .rev()
            .find(|(from, _)| *from <= nr)
            .map_or(Action::Errno(libc::EPERM), |(_, a)| *a)
    };
    let mut starts: std::collections::BTreeMap<u32, Action> = background.iter().copied().collect();
    for (nr, _) in points {
        if let Some(next) = nr.checked_add(1) {
            starts.insert(next, at(next));
        }
    }
    for (nr, action) in points {
        starts.insert(*nr, *action);
    }
    // A point's follower may itself be a point, inserted above and kept.
    let mut out: Vec<(u32, Action)> = Vec::with_capacity(starts.len());
    for (from, action) in starts {
        if out.last().is_none_or(|(_, last)| *last != action) {
            out.push((from, action));
        }
    }
    out
}

/// The actions of every syscall the profile names, by number, for one ABI of the table
/// (`column` picks the number); numbers are offset by `base`.
#[cfg(target_arch = "x86_64")]
fn points(
    rules: &[Option<Action>],
    column: fn(&(&str, u32, u32, u32)) -> u32,
    base: u32,
) -> (Vec<(u32, Action)>, u32) {
    let mut out = Vec::new();
    let mut max = 0;
    for (entry, rule) in x86::SYSCALLS.iter().zip(rules) {
        let nr = column(entry);
        if nr == x86::NONE {
            continue;
        }
        if let Some(action) = *rule {
            out.push((base | nr, action));
            max = max.max(nr);
        }
    }
    (out, base | max)
}

/// The classic BPF program (see the module documentation).
#[cfg(target_arch = "x86_64")]
pub(crate) fn program() -> Vec<libc::sock_filter> {
    let eperm = Action::Errno(libc::EPERM);
    let enosys = Action::Errno(libc::ENOSYS);
    let allowed = ALLOWED.iter().copied().collect();
    let rules: Vec<Option<Action>> = x86::SYSCALLS
        .iter()
        .map(|e| rule_in(e.0, &allowed))
        .collect();
    let (mut native, max64) = points(&rules, |e| e.1, 0);
    let (x32, max_x32) = points(&rules, |e| e.3, X32_SYSCALL_BIT);
    native.extend(x32);
    let tree64 = tree(&ranges(
        &[
            (0, eperm),
            (max64 + 1, enosys),
            (X32_SYSCALL_BIT, eperm),
            (max_x32 + 1, enosys),
        ],
        &native,
    ));
    let (i386, max32) = points(&rules, |e| e.2, 0);
    let tree32 = tree(&ranges(&[(0, eperm), (max32 + 1, enosys)], &i386));
    // 0 ld arch; 1 jeq x86_64 → 5; 2 jeq i386 else 4; 3 ja I386; 4 kill;
    // 5 ld nr; tree64; I386: ld nr; tree32.
    let mut prog = vec![
        stmt(LD_ABS, DATA_ARCH),
        jump(JEQ, AUDIT_ARCH_X86_64, 3, 0),
        jump(JEQ, AUDIT_ARCH_I386, 0, 1),
        stmt(JA, tree64.len() as u32 + 2),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_ABS, DATA_NR),
    ];
    prog.extend(tree64);
    prog.push(stmt(LD_ABS, DATA_NR));
    prog.extend(tree32);
    prog
}

/// Syscall numbers refused with EPERM on aarch64.
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

/// aarch64: the deny-list with EPERM, clone with namespace flags EPERM, clone3 ENOSYS, foreign
/// architectures (arm compat) killed, the rest allowed.
#[cfg(target_arch = "aarch64")]
pub(crate) fn program() -> Vec<libc::sock_filter> {
    let eperm = Action::Errno(libc::EPERM);
    let mut points: Vec<(u32, Action)> = DENIED.iter().map(|(_, nr)| (*nr as u32, eperm)).collect();
    points.push((
        libc::SYS_clone as u32,
        Action::ArgMaskClear(CLONE_NAMESPACE_MASK),
    ));
    points.push((libc::SYS_clone3 as u32, Action::Errno(libc::ENOSYS)));
    points.sort_by_key(|(nr, _)| *nr);
    let mut prog = vec![
        stmt(LD_ABS, DATA_ARCH),
        jump(JEQ, AUDIT_ARCH_AARCH64, 1, 0),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_ABS, DATA_NR),
    ];
    prog.extend(tree(&ranges(&[(0, Action::Allow)], &points)));
    prog
}

/// No filter on other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn program() -> Vec<libc::sock_filter> {
    Vec::new()
}

/// The OCI (runc/crun) form of the same profile.
#[cfg(target_arch = "x86_64")]
pub(crate) fn oci_profile() -> serde_json::Value {
    use serde_json::json;
    let mut rules = vec![
        json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
        json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_MASK, "valueTwo": 0,
                      "op": "SCMP_CMP_MASKED_EQ"}],
        }),
        json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": SOCKET_FAMILIES_BELOW, "op": "SCMP_CMP_LT"}],
        }),
    ];
    for (name, values) in [("socket", SOCKET_FAMILIES), ("personality", PERSONALITIES)] {
        for value in values {
            rules.push(json!({
                "names": [name],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": OCI_ARCHES,
        "syscalls": rules,
    })
}

/// The OCI (runc/crun) form of the same filter.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn oci_profile() -> serde_json::Value {
    use serde_json::json;
    #[cfg(target_arch = "aarch64")]
    let denied: Vec<&str> = DENIED.iter().map(|(name, _)| *name).collect();
    #[cfg(not(target_arch = "aarch64"))]
    let denied: Vec<&str> = Vec::new();
    let mut rules = vec![
        json!({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
    ];
    for bit in 0..32 {
        let flag = 1u32 << bit;
        if CLONE_NAMESPACE_MASK & flag != 0 {
            rules.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": OCI_ARCHES, "syscalls": rules})
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Runs the program on (arch, nr, arg0) like the kernel would.
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            let code = u32::from(ins.code);
            pc += 1;
            if code == LD_ABS {
                acc = match ins.k {
                    DATA_NR => nr,
                    DATA_ARCH => arch,
                    DATA_ARG0_LO => arg0 as u32,
                    DATA_ARG0_HI => (arg0 >> 32) as u32,
                    k => panic!("load of offset {k}"),
                };
            } else if code == RET {
                return ins.k;
            } else if code == JA {
                pc += ins.k as usize;
            } else {
                let taken = match code {
                    JEQ => acc == ins.k,
                    JSET => acc & ins.k != 0,
                    JGE => acc >= ins.k,
                    _ => panic!("opcode {code:#x}"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
        }
    }

    fn nr(name: &str, column: usize) -> u32 {
        let e = x86::SYSCALLS
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("{name} not in the table"));
        [e.1, e.2, e.3 | X32_SYSCALL_BIT][column]
    }

    const ABIS: [(usize, u32, &str); 3] = [
        (0, AUDIT_ARCH_X86_64, "x86_64"),
        (1, AUDIT_ARCH_I386, "i386"),
        (2, AUDIT_ARCH_X86_64, "x32"),
    ];

    #[test]
    fn table_is_sorted_and_knows_every_name() {
        assert!(x86::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(nr("keyctl", 0), 250);
        assert_eq!(nr("keyctl", 1), 288);
        assert_eq!(nr("keyctl", 2), 0x4000_00fa);
        assert_eq!(nr("socketcall", 1), 102);
        for name in ALLOWED {
            assert!(
                x86::SYSCALLS.iter().any(|e| e.0 == *name)
                    || ["recv", "send", "riscv_hwprobe"].contains(name),
                "{name}"
            );
        }
    }

    #[test]
    fn same_rules_on_every_abi() {
        let prog = program();
        assert!(prog.len() < 4096, "{}", prog.len());
        let eperm = RET_EPERM;
        let enosys = ret_errno(libc::ENOSYS);
        for (column, arch, abi) in ABIS {
            let call = |name: &str, arg0: u64| eval(&prog, arch, nr(name, column), arg0);
            for name in [
                "keyctl",
                "add_key",
                "request_key",
                "bpf",
                "perf_event_open",
                "io_uring_setup",
                "userfaultfd",
                "mount",
                "umount2",
                "unshare",
                "setns",
                "pivot_root",
                "open_by_handle_at",
                "kexec_load",
                "init_module",
                "reboot",
                "swapon",
                "settimeofday",
                "syslog",
                "vhangup",
                "kcmp",
                "fsopen",
            ] {
                assert_eq!(call(name, 0), eperm, "{abi} {name}");
            }
            for name in [
                "read", "write", "execve", "openat", "chroot", "ptrace", "mknodat",
            ] {
                assert_eq!(call(name, 0), RET_ALLOW, "{abi} {name}");
            }
            assert_eq!(call("clone3", 0), enosys, "{abi}");
            let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_THREAD) as u64;
            assert_eq!(call("clone", thread), RET_ALLOW, "{abi}");
            for bit in 0..32 {
                let flag = 1u32 << bit;
                if CLONE_NAMESPACE_MASK & flag != 0 {
                    let flags = u64::from(flag) | libc::SIGCHLD as u64;
                    assert_eq!(call("clone", flags), eperm, "{abi} {flag:#x}");
                }
            }
            for family in [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
            ] {
                assert_eq!(call("socket", family as u64), RET_ALLOW, "{abi} {family}");
            }
            for family in [libc::AF_VSOCK, libc::AF_ALG, 12, 19, 46, 1000] {
                assert_eq!(call("socket", family as u64), eperm, "{abi} {family}");
            }
            assert_eq!(call("socket", 1 << 32 | 2), eperm, "{abi} high word");
            for persona in [0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
                assert_eq!(
                    call("personality", persona),
                    RET_ALLOW,
                    "{abi} {persona:#x}"
                );
            }
            for persona in [0x0040_0000, 1, 0x0008_0000] {
                assert_eq!(call("personality", persona), eperm, "{abi} {persona:#x}");
            }
        }
        // i386-only calls, and numbers beyond the table.
        for name in [
            "socketcall",
            "ipc",
            "_llseek",
            "mmap2",
            "fcntl64",
            "waitpid",
        ] {
            assert_eq!(
                eval(&prog, AUDIT_ARCH_I386, nr(name, 1), 0),
                RET_ALLOW,
                "{name}"
            );
        }
        assert_eq!(eval(&prog, AUDIT_ARCH_I386, 22, 0), eperm, "i386 umount");
        for (arch, nr) in [
            (AUDIT_ARCH_X86_64, 1000),
            (AUDIT_ARCH_X86_64, u32::MAX),
            (AUDIT_ARCH_X86_64, X32_SYSCALL_BIT + 1000),
            (AUDIT_ARCH_I386, 1000),
        ] {
            assert_eq!(eval(&prog, arch, nr, 0), enosys, "{arch:#x} {nr:#x}");
        }
        // x32 numbers of 64-bit-only entries (rt_sigaction 13 is x32's 512) are refused.
        assert_eq!(
            eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT + 13, 0),
            eperm
        );
        for arch in [0xc000_00b7, 0x4000_0028, 0] {
            assert_eq!(
                eval(&prog, arch, 0, 0),
                libc::SECCOMP_RET_KILL_PROCESS,
                "{arch:#x}"
            );
        }
    }

    #[test]
    fn every_allowed_name_is_allowed_where_it_exists() {
        let prog = program();
        for entry in x86::SYSCALLS {
            let expected = rule(entry.0).unwrap_or(Action::Errno(libc::EPERM));
            for (column, arch, abi) in ABIS {
                let n = [entry.1, entry.2, entry.3][column];
                if n == x86::NONE {
                    continue;
                }
                let n = if column == 2 { n | X32_SYSCALL_BIT } else { n };
                let got = eval(&prog, arch, n, 0);
                let want = match expected {
                    Action::Allow => RET_ALLOW,
                    // Newer than anything the profile names (x32's own calls come later).
                    _ if column < 2
                        && ["open_tree_attr", "file_getattr", "file_setattr"]
                            .contains(&entry.0) =>
                    {
                        ret_errno(libc::ENOSYS)
                    }
                    Action::Errno(e) => ret_errno(e),
                    // arg0 = 0: AF_UNSPEC is below 12, persona 0, clone without flags.
                    _ => RET_ALLOW,
                };
                assert_eq!(got, want, "{abi} {} ({n})", entry.0);
            }
        }
    }
}
