//! `kiln build --load` (and `-o type=docker` without `dest`): the built image streamed into a
//! docker daemon through its API (`POST /images/load`), the docker archive written straight into
//! the chunked request body, so no archive is ever written to disk. The daemon is the one
//! `DOCKER_HOST` names (`unix:///path` or `tcp://host:port`), else /var/run/docker.sock.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_image::{Digest, Image, Platform, Reference};

/// How long to wait for a daemon to answer a ping, or to answer once the archive is sent.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the docker daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DaemonAddr {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl std::fmt::Display for DaemonAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl DaemonAddr {
    /// The daemon `DOCKER_HOST` names, else docker's default socket.
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        Self::parse(std::env::var("DOCKER_HOST").ok().as_deref())
    }

    fn parse(host: Option<&str>) -> anyhow::Result<Self> {
        let host = host.map(str::trim).filter(|h| !h.is_empty());
        let Some(host) = host else {
            return Ok(Self::Unix("/var/run/docker.sock".into()));
        };
        if let Some(p) = host.strip_prefix("unix://") {
            return Ok(Self::Unix(p.into()));
        }
        if let Some(a) = host.strip_prefix("tcp://").or(host.strip_prefix("http://")) {
            let a = a.trim_end_matches('/');
            return Ok(Self::Tcp(if a.contains(':') {
                a.to_owned()
            } else {
                format!("{a}:2375")
            }));
        }
        bail!("DOCKER_HOST={host}: only unix:// and tcp:// daemons are supported")
    }

    fn connect(&self, timeout: Duration) -> anyhow::Result<Conn> {
        let conn = match self {
            Self::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
            Self::Tcp(a) => std::net::TcpStream::connect(a).map(Conn::Tcp),
        }
        .with_context(|| {
            format!(
                "cannot connect to the docker daemon at {self} (is dockerd running? \
                 DOCKER_HOST names another one)"
            )
        })?;
        conn.set_timeout(timeout)?;
        Ok(conn)
    }

    /// Checks that a docker daemon answers (`GET /_ping`).
    pub(crate) fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connect(PING_TIMEOUT)?;
        write!(
            conn,
            "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        )
        .with_context(|| format!("talking to the docker daemon at {self}"))?;
        let (status, body) = read_response(conn)
            .with_context(|| format!("the docker daemon at {self} does not answer"))?;
        if status != 200 {
            bail!(
                "the docker daemon at {self} answers {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(())
    }

    /// Sends what `write` produces as the body of `POST /images/load`, chunk by chunk, and
    /// returns the daemon's messages (`Loaded image: NAME`).
    pub(crate) fn load(
        &self,
        write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<String>> {
        let mut conn = self.connect(LOAD_TIMEOUT)?;
        let reader = conn.try_clone()?;
        write!(
            conn,
            "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .with_context(|| format!("talking to the docker daemon at {self}"))?;
        let mut body = Chunked::new(conn);
        let sent = write(&mut body).and_then(|()| body.finish());
        // A daemon that refuses the archive may close early: its answer says why.
        let answer = read_response(reader);
        let (status, data) = match (sent, answer) {
            (_, Ok(a)) => a,
            (Err(e), Err(_)) => return Err(e.context(format!("sending the image to {self}"))),
            (Ok(()), Err(e)) => {
                return Err(e.context(format!("reading the answer of the docker daemon at {self}")));
            }
        };
        let messages = messages(&data)?;
        if status != 200 {
            bail!(
                "the docker daemon at {self} refused the image ({status}): {}",
                messages.join("; ")
            );
        }
        Ok(messages)
    }
}

/// The daemon's JSON message stream (`{"stream":"..."}` lines, or `{"error":"..."}`), as text.
fn messages(data: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(data).into_iter::<serde_json::Value>() {
        let Ok(v) = v else {
            // Not JSON (an old daemon's plain error text).
            out.push(String::from_utf8_lossy(data).trim().to_owned());
            break;
        };
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            bail!("the docker daemon could not load the image: {e}");
        }
        if let Some(e) = v.get("message").and_then(|e| e.as_str()) {
            out.push(e.trim().to_owned());
        }
        if let Some(s) = v.get("stream").and_then(|s| s.as_str()) {
            out.extend(
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    Ok(out)
}

enum Conn {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Conn {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s
                .set_read_timeout(Some(t))
                .and_then(|()| s.set_write_timeout(Some(t))),
            Self::Tcp(s) => s
                .set_read_timeout(Some(t))
                .and_then(|()| s.set_write_timeout(Some(t))),
        }
    }

    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Unix(s) => Self::Unix(s.try_clone()?),
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
        })
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

/// An HTTP/1.1 chunked request body: writes are gathered into 1 MiB chunks.
struct Chunked<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl<W: Write> Chunked<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            write!(self.inner, "{:x}\r\n", self.buf.len())?;
            self.inner.write_all(&self.buf)?;
            self.inner.write_all(b"\r\n")?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.send()?;
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()?;
        Ok(())
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() && data.len() >= CHUNK {
            // A large write goes out as its own chunk, without a copy.
            write!(self.inner, "{:x}\r\n", data.len())?;
            self.inner.write_all(data)?;
            self.inner.write_all(b"\r\n")?;
            return Ok(data.len());
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()?;
        self.inner.flush()
    }
}

/// Reads an HTTP/1.1 response: its status and body (chunked, sized or up to EOF).
fn read_response(r: impl Read) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", line.trim()))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<u64>().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("bad chunk size {:?}", line.trim()))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        r.take(n).read_to_end(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

/// Streams the image `manifest` from the store under `state_dir` into the docker daemon,
/// named `names`, and prints the daemon's messages on stderr.
pub(crate) fn load_image(
    daemon: &DaemonAddr,
    state_dir: &Path,
    manifest: &str,
    names: &[String],
) -> anyhow::Result<()> {
    let store = kiln_solver::open_content_store(state_dir)
        .with_context(|| format!("opening the image store in {}", state_dir.display()))?;
    let digest = Digest::parse(manifest)?;
    let image = Image::load(&store, &digest, &Platform::host())?;
    let mut refs = Vec::new();
    for n in names {
        let r = Reference::parse(n)?;
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    let messages = daemon.load(|w| {
        let mut w = std::io::BufWriter::with_capacity(CHUNK, w);
        kiln_image::write_docker_archive(&store, &[(image, refs)], None, &mut w)?;
        w.flush()?;
        Ok(())
    })?;
    for m in messages {
        eprintln!("{m}");
    }
    Ok(())
}

/// `-o` of `kiln build`: buildx's syntax, where `type=docker` without `dest` means the docker
/// daemon (kept as an empty `dest`, which [`take_daemon_outputs`] removes before the build).
pub(crate) fn parse_output(s: &str) -> Result<kiln::OutputSpec, String> {
    let fields: Vec<&str> = s.split(',').map(str::trim).collect();
    let to_daemon =
        fields.contains(&"type=docker") && !fields.iter().any(|f| f.starts_with("dest="));
    let s = if to_daemon {
        format!("{s},dest=")
    } else {
        s.to_owned()
    };
    s.parse::<kiln::OutputSpec>().map_err(|e| match e {
        kiln::Error::InvalidOption { message, .. } => message,
        other => other.to_string(),
    })
}

/// What `kiln build` sends to the docker daemon: the image, under these names.
#[derive(Debug)]
pub(crate) struct LoadPlan {
    daemon: DaemonAddr,
    names: Vec<String>,
}

/// Takes the daemon outputs (`--load`, `-o type=docker` without `dest`) out of `outputs` and,
/// when there are any, checks before the build that the build has one platform (of
/// `platforms`, the `--platform` values) and that the daemon answers.
pub(crate) fn take_daemon_outputs(
    outputs: &mut Vec<kiln::OutputSpec>,
    load: bool,
    tags: &[String],
    platforms: &[Platform],
) -> anyhow::Result<Option<LoadPlan>> {
    let mut wanted = load;
    let mut names = tags.to_vec();
    outputs.retain(|o| match o {
        kiln::OutputSpec::Docker {
            dest: kiln::Destination::Path(p),
            names: n,
            ..
        } if p.as_os_str().is_empty() => {
            wanted = true;
            names.extend(n.iter().cloned());
            false
        }
        _ => true,
    });
    if !wanted {
        return Ok(None);
    }
    // A docker archive holds one image: buildx's words, before any work.
    let mut distinct: Vec<&Platform> = Vec::new();
    for p in platforms {
        if !distinct.contains(&p) {
            distinct.push(p);
        }
    }
    if distinct.len() > 1 {
        bail!("docker exporter does not currently support exporting manifest lists");
    }
    let daemon = DaemonAddr::from_env()?;
    daemon.ping().context(
        "`--load` (or `-o type=docker` without `dest`) needs a docker daemon; \
         use `-o type=docker,dest=FILE` to write an archive instead",
    )?;
    Ok(Some(LoadPlan { daemon, names }))
}

impl LoadPlan {
    /// Streams the built image into the daemon.
    pub(crate) fn run(&self, state_dir: &Path, image: &kiln::BuildResult) -> anyhow::Result<()> {
        load_image(&self.daemon, state_dir, &image.manifest_digest, &self.names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            DaemonAddr::parse(None).unwrap(),
            DaemonAddr::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            DaemonAddr::parse(Some("unix:///tmp/d.sock")).unwrap(),
            DaemonAddr::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            DaemonAddr::parse(Some("tcp://127.0.0.1")).unwrap(),
            DaemonAddr::Tcp("127.0.0.1:2375".into())
        );
        let e = DaemonAddr::parse(Some("ssh://me@host")).unwrap_err();
        assert!(e.to_string().contains("only unix:// and tcp://"), "{e}");
    }

    #[test]
    fn chunked_body_and_answers() {
        let mut out = Vec::new();
        let mut c = Chunked::new(&mut out);
        c.write_all(b"hello ").unwrap();
        c.write_all(b"world").unwrap();
        c.finish().unwrap();
        assert_eq!(out, b"b\r\nhello world\r\n0\r\n\r\n");
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            2f\r\n{\"stream\":\"Loaded image: hello-uncle:latest\\n\"}\r\n0\r\n\r\n";
        let (status, body) = read_response(&answer[..]).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            messages(&body).unwrap(),
            ["Loaded image: hello-uncle:latest"]
        );
        let e = messages(br#"{"errorDetail":{"message":"bad"},"error":"bad tar"}"#).unwrap_err();
        assert!(e.to_string().contains("bad tar"), "{e}");
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let addr = DaemonAddr::Unix(dir.path().join("none.sock"));
        let e = addr.ping().unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot connect to the docker daemon at unix://"),
            "{e:#}"
        );
    }
}
