//! A minimal binary that is nothing but the kiln container init, so the executor's own tests and
//! benches can re-execute something without building the whole `kiln` CLI.
//!
//! For the tests it also has a `--probe-syscalls` mode, run *inside* a container, that tries
//! syscalls the seccomp filter refuses (with harmless arguments) and prints each outcome.

fn main() {
    // This binary never calls `Executor::new`, so nothing else would make the linker keep the
    // init constructor (which runs before `main` and never returns here as the init).
    kiln_executor::init_main_if_requested();
    if std::env::args().nth(1).as_deref() == Some("--probe-syscalls") {
        probe_syscalls();
        return;
    }
    eprintln!("kiln-executor-init: run by kiln-executor only (argv[1] must be its sentinel)");
    std::process::exit(2);
}

/// `EPERM` when refused; anything else means the kernel saw the call.
fn outcome(ret: libc::c_long) -> String {
    if ret != -1 {
        return "allowed".to_owned();
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => "EPERM".to_owned(),
        Some(errno) => format!("errno {errno}"),
        None => "unknown".to_owned(),
    }
}

fn probe_syscalls() {
    let null = std::ptr::null::<libc::c_void>();
    // SAFETY: invalid-but-harmless arguments (null pointers, zero sizes, a lookup without
    // create), so an allowed call fails with EFAULT/EINVAL/ENOKEY and changes nothing.
    unsafe {
        println!(
            "keyctl: {}",
            outcome(libc::syscall(libc::SYS_keyctl, 0, -3, 0))
        );
        println!("bpf: {}", outcome(libc::syscall(libc::SYS_bpf, 0, null, 0)));
        println!(
            "perf_event_open: {}",
            outcome(libc::syscall(libc::SYS_perf_event_open, null, 0, -1, -1, 0))
        );
        println!(
            "io_uring_setup: {}",
            outcome(libc::syscall(libc::SYS_io_uring_setup, 0, null))
        );
        println!(
            "clone3: {}",
            outcome(libc::syscall(libc::SYS_clone3, null, 0))
        );
        // A new user namespace by clone(2): the child, if any, leaves at once.
        let flags = libc::CLONE_NEWUSER | libc::SIGCHLD;
        let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
        if pid == 0 {
            libc::_exit(0);
        }
        let result = outcome(pid);
        if pid > 0 {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        println!("clone(CLONE_NEWUSER): {result}");
    }
}
