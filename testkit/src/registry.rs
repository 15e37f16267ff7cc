//! A real `docker-registry` on a free loopback port, optionally with basic auth (htpasswd) or
//! another `auth:` section, for tests that push and pull. Killed on drop; its log and storage
//! live in [`Registry::dir`].

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its configuration, `storage/` and `registry.log`.
    pub dir: tempfile::TempDir,
}

/// The running test's name (libtest names each test's thread after it), for skip messages.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("registry test")
        .to_owned()
}

impl Registry {
    /// Starts one; `htpasswd` adds basic auth for that user. `None` (after a skip message, or
    /// a panic under CI: [`crate::require_tool`]) when `docker-registry` or `htpasswd` is
    /// missing.
    pub fn start(htpasswd: Option<(&str, &str)>) -> Option<Self> {
        Self::start_with(htpasswd, "")
    }

    /// [`Registry::start`] with an extra `auth:` YAML section (token auth).
    pub fn start_with(htpasswd: Option<(&str, &str)>, extra_auth: &str) -> Option<Self> {
        if !crate::require_tool(&test_name(), "docker-registry", "docker-registry") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-registry-")
            .tempdir()
            .expect("temporary directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind a loopback port")
            .local_addr()
            .expect("its address")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth = extra_auth.to_owned();
        if let Some((user, pass)) = htpasswd {
            if !crate::require_tool(&test_name(), "htpasswd", "apache2-utils") {
                return None;
            }
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd: {}", out.status);
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write config.yml");
        let child = spawn(dir.path());
        let reg = Self { child, addr, dir };
        reg.wait_ready();
        Some(reg)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the registry (its storage stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage, without waiting.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path());
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// GETs `path` (e.g. `/v2/x/manifests/1`) with an OCI manifest Accept header, through
    /// curl; `None` on any failure.
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

fn spawn(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .expect("open registry.log");
    Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(log.try_clone().expect("clone the log's descriptor"))
        .stderr(log)
        .spawn()
        .expect("spawn docker-registry")
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
