//! `Executor::run_interactive`, what `kiln run` needs beyond RUN: the caller's stdin as the
//! command's, signals for PID 1 while it runs (a trapped SIGINT, then a kill), and host ports
//! forwarded into the private network.

mod support;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use kiln_executor::{
    Interactive, Network, PortMapping, ProcessSpec, Protocol, RunControl, Stream, WindowSize,
};
use support::{Fixture, require_env};

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..ProcessSpec::default()
    }
}

#[test]
fn stdin_is_the_callers_descriptor() {
    require_env!();
    let f = Fixture::new();
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    writer.write_all(b"line one\nline two\n").expect("write");
    drop(writer);
    let mut io = Interactive::new();
    io.stdin = Some(OwnedFd::from(reader));
    let mut out = String::new();
    let status = f
        .executor
        .run_interactive(
            &sh("wc -l; echo done"),
            &f.rootfs(),
            &[],
            io,
            &mut |_, line| out.push_str(&String::from_utf8_lossy(line)),
            &RunControl::new(),
        )
        .expect("run");
    assert_eq!(status.code(), 0);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["2", "done"]);
}

#[test]
fn signals_reach_pid_1_and_kill_ends_the_container() {
    require_env!();
    let f = Fixture::new();
    let control = RunControl::new();
    let sender = control.clone();
    let mut out = String::new();
    let started = Instant::now();
    // PID 1 traps SIGINT (a namespace's init ignores signals it has no handler for), says so,
    // and keeps running until killed.
    let status = f
        .executor
        .run_interactive(
            &sh("trap 'echo got INT' INT; echo ready; while :; do sleep 0.05; done"),
            &f.rootfs(),
            &[],
            Interactive::new(),
            &mut |stream, line| {
                let line = String::from_utf8_lossy(line);
                if stream == Stream::Stdout && line == "ready\n" {
                    sender.signal(libc::SIGINT);
                }
                if line == "got INT\n" {
                    sender.kill();
                }
                out.push_str(&line);
            },
            &control,
        )
        .expect("run");
    assert_eq!(out, "ready\ngot INT\n");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(status.code(), 137);
    assert!(control.is_killed());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn tty_is_the_commands_terminal_with_its_size_and_input() {
    require_env!();
    let f = Fixture::new();
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    writer
        .write_all(b"echo typed-$((20+22))\nexit 7\n")
        .expect("write");
    drop(writer);
    let mut io = Interactive::new();
    io.tty = Some(WindowSize {
        rows: 33,
        cols: 101,
    });
    io.stdin = Some(OwnedFd::from(reader));
    let mut out = Vec::new();
    let status = f
        .executor
        .run_interactive(
            &sh("tty; stty size; exec sh"),
            &f.rootfs(),
            &[],
            io,
            &mut |stream, chunk| {
                assert_eq!(stream, Stream::Stdout);
                out.extend_from_slice(chunk);
            },
            &RunControl::new(),
        )
        .expect("run");
    let out = String::from_utf8_lossy(&out).replace('\r', "");
    // (The pty echoes the input, which arrived before the command read it.)
    assert!(out.contains("/dev/pts/0\n33 101\n"), "{out:?}");
    assert!(out.contains("typed-42\n"), "{out:?}");
    assert_eq!(status.code(), 7, "{out:?}");
}

#[test]
fn ports_without_private_network_are_refused() {
    require_env!();
    let f = Fixture::new();
    let mut io = Interactive::new();
    io.publish.push(PortMapping {
        host_ip: "127.0.0.1".parse().unwrap(),
        host_port: 18080,
        container_port: 80,
        protocol: Protocol::Tcp,
    });
    let err = f
        .executor
        .run_interactive(
            &sh("true"),
            &f.rootfs(),
            &[],
            io,
            &mut |_, _| {},
            &RunControl::new(),
        )
        .expect_err("needs the private network");
    assert_eq!(
        err.to_string(),
        "invalid spec: published ports need the private network (slirp4netns)"
    );
}

#[test]
fn published_port_reaches_a_server_in_the_container() {
    require_env!();
    if !kiln_testkit::require_tool(module_path!(), "slirp4netns", "slirp4netns") {
        return;
    }
    let f = Fixture::new();
    // A free port on the host.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut io = Interactive::new();
    io.publish.push(PortMapping {
        host_ip: "127.0.0.1".parse().unwrap(),
        host_port,
        container_port: 8000,
        protocol: Protocol::Tcp,
    });
    let spec = ProcessSpec {
        network: Network::Private,
        ..sh("echo listening; echo hello-from-the-container | nc -l -p 8000")
    };
    let control = RunControl::new();
    let mut got = String::new();
    let status = std::thread::scope(|scope| {
        let client = scope.spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", host_port)) {
                    let mut reply = String::new();
                    let _ = conn.read_to_string(&mut reply);
                    if !reply.is_empty() {
                        return reply;
                    }
                }
                assert!(Instant::now() < deadline, "no reply on port {host_port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let status = f
            .executor
            .run_interactive(&spec, &f.rootfs(), &[], io, &mut |_, _| {}, &control)
            .expect("run");
        got = client.join().expect("client");
        status
    });
    assert_eq!(got, "hello-from-the-container\n");
    assert_eq!(status.code(), 0);
}
