//! `RUN --mount=type=ssh`: a per-run proxy socket owned by the mount's uid/gid with its mode
//! (BuildKit's default 0600), relaying every connection to the host's ssh-agent socket, so a
//! non-root `USER` can use an agent whose own socket it could not open, and the host socket's
//! permissions are never touched. The proxy lives for one run; dropping it stops it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

/// A listening socket relaying to an agent, served by one accept thread.
#[derive(Debug)]
pub(crate) struct SshProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SshProxy {
    /// Listens at `path` (owned `uid:gid`, `mode`) and relays connections to `agent`.
    pub(crate) fn start(
        agent: &Path,
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Self> {
        let listener =
            UnixListener::bind(&path).map_err(|e| Error::io("listen on ssh proxy", &path, e))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|e| Error::io("chown ssh proxy", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod ssh proxy", &path, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configure ssh proxy", &path, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let agent = agent.to_path_buf();
            std::thread::Builder::new()
                .name("kiln-ssh-proxy".into())
                .spawn(move || accept_loop(&listener, &agent, &stop))
                .map_err(|e| Error::io("start ssh proxy thread", &path, e))?
        };
        Ok(SshProxy {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The proxy socket on the host (bind-mounted into the container).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, agent: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let agent = agent.to_path_buf();
                let _ = std::thread::Builder::new()
                    .name("kiln-ssh-relay".into())
                    .spawn(move || relay(client, &agent));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("ssh proxy stopped: {e}");
                return;
            }
        }
    }
}

/// Copies both ways until each side has finished, then closes.
fn relay(client: UnixStream, agent: &Path) {
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let Ok(upstream) = UnixStream::connect(agent) else {
        return;
    };
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let forward = std::thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn relays_both_ways_with_its_own_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = agent.accept().unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&[buf, *b"-ack"].concat()).unwrap();
        });
        let uid = std::fs::metadata(dir.path()).unwrap().uid();
        let proxy =
            SshProxy::start(&agent_path, dir.path().join("proxy.sock"), uid, uid, 0o640).unwrap();
        let meta = std::fs::metadata(proxy.path()).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        let mut client = UnixStream::connect(proxy.path()).unwrap();
        client.write_all(b"ping").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"ping-ack");
        server.join().unwrap();
        let path = proxy.path().to_path_buf();
        drop(proxy);
        assert!(!path.exists());
    }
}
