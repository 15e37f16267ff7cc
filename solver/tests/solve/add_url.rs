//! `ADD http://...`: downloaded with mode 0600 under the URL's file name, `--checksum` checked,
//! and the download's content in the cache key. A one-shot HTTP server on loopback serves it;
//! builds mount overlay snapshots, so root is required.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;

use kiln_solver::{BuildRequest, NoProgress, OutputSpec, Solver, SolverConfig};

fn root_or_skip() -> bool {
    kiln_testkit::require_root("add_url")
}

/// Serves `body` to every request until the test ends; returns the port.
fn serve(body: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut s = r.into_inner();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

#[test]
fn add_url_downloads_with_checksum() {
    if !root_or_skip() {
        return;
    }
    let port = serve(b"hello from http\n");
    let state = tempfile::tempdir().expect("state");
    let ctx = tempfile::tempdir().expect("ctx");
    let out = tempfile::tempdir().expect("out");
    let sum = "sha256:1f3ff8a0d4e4a3b7bfb0de2a3ffd1c0e1e0c3c1c0f3f0e9b0b0a1d1e0b0c0d0e";
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nADD http://127.0.0.1:{port}/dir/file.txt /dl/\nADD --checksum={sum} http://127.0.0.1:{port}/x /bad\n"),
    )
    .expect("write");
    let solver = Solver::new(SolverConfig::new(state.path())).expect("solver");
    let err = solver
        .build(&BuildRequest::new(ctx.path()), &NoProgress)
        .expect_err("checksum mismatch");
    assert!(err.to_string().contains("digest mismatch"), "{err}");

    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nADD http://127.0.0.1:{port}/dir/file.txt /dl/\n"),
    )
    .expect("write");
    let mut req = BuildRequest::new(ctx.path());
    req.outputs.push(OutputSpec::Local {
        dest: out.path().to_path_buf(),
    });
    solver.build(&req, &NoProgress).expect("build");
    let p = out.path().join("dl/file.txt");
    assert_eq!(std::fs::read(&p).expect("read"), b"hello from http\n");
    assert_eq!(std::fs::metadata(&p).expect("stat").mode() & 0o7777, 0o600);
}
