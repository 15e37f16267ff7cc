//! `enter_rootless` for real: run as root, this test copies itself where an ordinary user can
//! run it and starts itself as `kiln-rootless` (a user with an /etc/subuid range) and as a uid
//! with no passwd entry and no range; each child enters the namespace and reports what it sees.
//! A plain `main` (no libtest harness): entering needs a single-threaded process.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

const USER: &str = "kiln-rootless";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => child(Path::new(&args[2])),
        Some("--child-threaded") => child_threaded(),
        _ => parent(),
    }
}

/// The child with a subordinate range (or without: `single` in the output).
fn child(dir: &Path) {
    let entry = kiln_userns::enter_rootless().expect("enter");
    let kiln_userns::Entry::Entered(r) = &entry else {
        panic!("expected a new namespace, got {entry:?}");
    };
    assert_eq!(kiln_userns::enter_rootless().unwrap(), entry, "idempotent");
    assert!(!kiln_userns::started_as_root());
    println!("euid={}", rustix::process::geteuid().as_raw());
    println!("outer={}:{}", r.uid, r.gid);
    println!("single={}", r.single_id.as_deref().unwrap_or("-"));
    let m = &r.mapping;
    println!(
        "uids={}",
        m.uids
            .iter()
            .map(|x| format!("{}-{}-{}", x.inside, x.outside, x.count))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "userns={}",
        std::fs::metadata("/proc/self/ns/user").unwrap().ino()
    );
    let f = dir.join("owned");
    std::fs::write(&f, b"x").unwrap();
    match std::os::unix::fs::chown(&f, Some(1000), Some(1000)) {
        Ok(()) => println!("chown=ok {}", std::fs::metadata(&f).unwrap().uid()),
        Err(e) => println!("chown={}", e.raw_os_error().unwrap_or(0)),
    }
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = rustix::mount::mount(
        "tmpfs",
        &mnt,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    );
    println!("mount={}", if mounted.is_ok() { "ok" } else { "failed" });
}

fn child_threaded() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let e = kiln_userns::enter_rootless().expect_err("threads");
    println!("error={e}");
    tx.send(()).unwrap();
    let _ = t.join();
    // Not retried once the threads are gone: the first outcome is remembered.
    let again = kiln_userns::enter_rootless().expect_err("remembered");
    assert_eq!(again.to_string(), e.to_string());
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
}

/// Runs `argv`, which must succeed; its stdout.
fn run(argv: &[&str]) -> String {
    kiln_testkit::run_ok(argv)
}

fn parent() {
    let test = "enter_rootless";
    if !kiln_testkit::require_root(test)
        || !kiln_testkit::require_tool(test, "newuidmap", "uidmap")
        || !kiln_testkit::require_tool(test, "setpriv", "util-linux")
    {
        return;
    }
    let Some(outer) = uid_of(USER) else {
        kiln_testkit::skip(test, &format!("needs the user {USER} (useradd -m {USER})"));
        return;
    };
    let Some(first) = first_subid(USER) else {
        kiln_testkit::skip(test, &format!("{USER} has no range in /etc/subuid"));
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("kiln-userns-")
        .tempdir()
        .unwrap();
    let bin = dir.path().join("enter-test");
    std::fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    rustix::fs::chmod(dir.path(), rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
    rustix::fs::chmod(&work, rustix::fs::Mode::from_raw_mode(0o777)).unwrap();
    let (b, w) = (bin.to_str().unwrap(), work.to_str().unwrap());

    // A user with a range: root inside, its range mapped, chown to another id keeps the id.
    let out = run(&["runuser", "-u", USER, "--", b, "--child", w]);
    assert_eq!(value(&out, "euid"), "0", "{out}");
    assert_eq!(value(&out, "outer"), format!("{outer}:{outer}"), "{out}");
    assert_eq!(value(&out, "single"), "-", "{out}");
    assert!(
        value(&out, "uids").starts_with(&format!("0-{outer}-1,1-{first}-")),
        "{out}"
    );
    assert_eq!(value(&out, "chown"), "ok 1000", "{out}");
    assert_eq!(value(&out, "mount"), "ok", "{out}");
    let owned = std::fs::metadata(work.join("owned")).unwrap();
    assert_eq!(
        owned.uid(),
        first + 999,
        "id 1000 inside is subordinate id {}",
        first + 999
    );
    // The child's mount lived in its own mount namespace.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(w), "{mountinfo}");

    // The namespace is kept: a later run joins the keeper's namespace (no newuidmap), with
    // the same maps and a mount namespace of its own; a killed keeper is replaced.
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    rustix::fs::chown(&run_dir, Some(rustix::process::Uid::from_raw(outer)), None).unwrap();
    let xdg = format!("XDG_RUNTIME_DIR={}", run_dir.display());
    let kept = |w: &str| run(&["runuser", "-u", USER, "--", "env", &xdg, b, "--child", w]);
    let keeper = || -> (u32, u64) {
        let record = std::fs::read_to_string(run_dir.join("kiln/userns.pid")).expect("record");
        let pid: u32 = record.split_whitespace().next().unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "kiln-userns", "keeper {pid}");
        let ns = std::fs::metadata(format!("/proc/{pid}/ns/user"))
            .unwrap()
            .ino();
        (pid, ns)
    };
    let w1 = work.join("k1");
    let w2 = work.join("k2");
    let w3 = work.join("k3");
    for d in [&w1, &w2, &w3] {
        std::fs::create_dir(d).unwrap();
        rustix::fs::chmod(d, rustix::fs::Mode::from_raw_mode(0o777)).unwrap();
    }
    let first_run = kept(w1.to_str().unwrap());
    let (pid, ns) = keeper();
    assert_eq!(value(&first_run, "userns"), ns.to_string(), "{first_run}");
    let joined = kept(w2.to_str().unwrap());
    assert_eq!(
        value(&joined, "userns"),
        ns.to_string(),
        "joined:\n{joined}"
    );
    assert_eq!(value(&joined, "euid"), "0", "{joined}");
    assert_eq!(
        value(&joined, "uids"),
        value(&first_run, "uids"),
        "{joined}"
    );
    assert_eq!(value(&joined, "single"), "-", "{joined}");
    assert_eq!(value(&joined, "chown"), "ok 1000", "{joined}");
    assert_eq!(value(&joined, "mount"), "ok", "{joined}");
    let keeper_mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        !keeper_mounts.contains("/k1/mnt") && !keeper_mounts.contains("/k2/mnt"),
        "the keeper holds a run's mounts:\n{keeper_mounts}"
    );
    // The keeper has no descriptor of ours (a harness reading our output gets its EOF): only
    // /dev/null and its inotify watch of the record.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            std::fs::read_link(e.unwrap().path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert!(
        fds.len() <= 4
            && fds
                .iter()
                .all(|f| f == "/dev/null" || f == "anon_inode:inotify"),
        "keeper descriptors: {fds:?}"
    );
    // The join comes first, but a threaded process is still refused with the clear error.
    let threaded = run(&[
        "runuser",
        "-u",
        USER,
        "--",
        "env",
        &xdg,
        b,
        "--child-threaded",
    ]);
    let e = value(&threaded, "error");
    assert!(e.contains("before any thread starts"), "{e}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let fresh = kept(w3.to_str().unwrap());
    assert_ne!(
        value(&fresh, "userns"),
        ns.to_string(),
        "a dead keeper's namespace"
    );
    assert_eq!(value(&fresh, "chown"), "ok 1000", "{fresh}");
    let (new_pid, _) = keeper();
    assert_ne!(new_pid, pid);
    // Its record removed (a state dir or scratch HOME deleted), the keeper ends by itself.
    std::fs::remove_file(run_dir.join("kiln/userns.pid")).unwrap();
    let gone = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        !Path::new(&format!("/proc/{new_pid}")).exists()
    });
    assert!(gone, "keeper {new_pid} outlived its record");
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(new_pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    );

    // A uid with no passwd entry and no range: one id mapped, chown elsewhere refused.
    let lone = dir.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    rustix::fs::chown(&lone, Some(rustix::process::Uid::from_raw(54321)), None).unwrap();
    let out = run(&[
        "setpriv",
        "--reuid=54321",
        "--regid=54321",
        "--clear-groups",
        b,
        "--child",
        lone.to_str().unwrap(),
    ]);
    assert_eq!(value(&out, "euid"), "0", "{out}");
    assert_eq!(
        value(&out, "single"),
        "no subordinate id range for this user in /etc/subuid",
        "{out}"
    );
    assert_eq!(value(&out, "uids"), "0-54321-1", "{out}");
    assert_eq!(value(&out, "chown"), libc::EINVAL.to_string(), "{out}");

    // Threads already running: a clear error, nothing entered.
    let out = run(&["runuser", "-u", USER, "--", b, "--child-threaded"]);
    let e = value(&out, "error");
    assert!(
        e.contains("threads") && e.contains("before any thread starts"),
        "{e}"
    );
    println!("enter_rootless: ok");
}

fn uid_of(user: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

fn first_subid(user: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/subuid").ok()?;
    kiln_userns::parse_subids(&text, Some(user), u32::MAX)
        .first()
        .map(|r| r.first)
}
