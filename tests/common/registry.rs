//! A real `docker-registry` on a free loopback port for push tests, optionally with basic auth
//! (htpasswd). Stopped when dropped.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: tempfile::TempDir,
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Registry {
    /// Starts one; `auth` adds htpasswd basic auth for that user. None (after a skip message,
    /// or a panic under CI) when `docker-registry` or `htpasswd` is missing.
    pub fn start(auth: Option<(&str, &str)>) -> Option<Self> {
        for tool in ["docker-registry"]
            .into_iter()
            .chain(auth.map(|_| "htpasswd"))
        {
            if !have(tool) {
                super::skip(&format!("`{tool}` is not installed"));
                return None;
            }
        }
        let dir = super::tempdir();
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).expect("write htpasswd");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth_yaml}",
            dir.path().join("storage").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("write config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry");
        let reg = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    /// GETs `path` (e.g. `/v2/x/manifests/1`) with an OCI manifest Accept header, through curl.
    pub fn get(&self, path: &str, user: Option<(&str, &str)>) -> Option<Vec<u8>> {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ]);
        if let Some((u, p)) = user {
            cmd.args(["-u", &format!("{u}:{p}")]);
        }
        let out = cmd
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
