//! Issue 12, "nothing lost, nothing leaked": pulls from a registry that lies or stalls. A small
//! HTTP server on loopback (std only, one thread per connection, every thread bounded in time)
//! serves `/v2/`, a manifest and its config honestly, and the layer blob in a hostile way:
//! endlessly, stalling after the headers, dripping a byte at a time; or answers every upload
//! with 503. Each pull runs in a thread the test abandons after 20 s, so a client without the
//! limits fails the test instead of hanging it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{store, test_image};
use kiln_image::{
    Compression, ContentStore, Digest, Error, Platform, Reference, RegistryClient, RegistryOptions,
};

/// How the hostile server answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The layer blob never ends (with this `Content-Length`, or none and no end).
    EndlessBlob { content_length: Option<u64> },
    /// The layer blob sends its headers and 10 bytes, then nothing.
    StallAfterHeaders,
    /// The manifest request is read and never answered.
    StallBeforeHeaders,
    /// The layer blob arrives one byte every 100 ms.
    Drip,
    /// HEAD of a blob is 404, every POST (upload start) 503.
    UploadsUnavailable,
    /// The manifest asked for by tag never ends.
    EndlessManifest,
    /// The tag is an index; the manifest it points at (by digest and size) never ends.
    EndlessChildManifest,
}

/// No server thread lives longer than this, whatever the client does.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);

/// The endless body stops here even if the client reads on (keeps an unfixed run's disk use
/// bounded).
const ENDLESS_CAP: u64 = 256 << 20;

struct Hostile {
    addr: String,
    stop: Arc<AtomicBool>,
    layer_sent: Arc<AtomicU64>,
    posts: Arc<AtomicU64>,
    layer: (Digest, u64),
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The image the server offers: a real config, and a layer descriptor of `layer_size` bytes.
struct Served {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: Digest,
}

impl Hostile {
    fn start(mode: Mode, layer_size: u64) -> Self {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]}}"#.to_vec();
        let config_digest = Digest::of_bytes(&config);
        let layer_digest = Digest::of_bytes(format!("layer of {layer_size} bytes").as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#,
            config.len()
        )
        .into_bytes();
        let served = Arc::new(Served {
            manifest,
            config,
            config_digest,
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let layer_sent = Arc::new(AtomicU64::new(0));
        let posts = Arc::new(AtomicU64::new(0));
        let (s, ls, p) = (stop.clone(), layer_sent.clone(), posts.clone());
        std::thread::spawn(move || {
            let born = Instant::now();
            while !s.load(Ordering::SeqCst) && born.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, ls, p, served) = (s.clone(), ls.clone(), p.clone(), served.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, mode, &served, &s, &ls, &p, born);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            stop,
            layer_sent,
            posts,
            layer: (layer_digest, layer_size),
        }
    }

    fn reference(&self) -> Reference {
        Reference::parse(&format!("{}/hostile/app:v1", self.addr)).unwrap()
    }
}

fn alive(stop: &AtomicBool, born: Instant) -> bool {
    !stop.load(Ordering::SeqCst) && born.elapsed() < SERVER_LIFETIME
}

/// Answers one request per connection (`Connection: close`).
fn serve(
    conn: TcpStream,
    mode: Mode,
    served: &Served,
    stop: &AtomicBool,
    layer_sent: &AtomicU64,
    posts: &AtomicU64,
    born: Instant,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        // A TLS probe (the client tries HTTPS first on loopback) is no HTTP: give up on it.
        if reader.read_line(&mut line)? == 0 || line.len() > 8192 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = conn;
    let send = |out: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        )?;
        out.write_all(body)
    };
    let layer_path = format!("/v2/hostile/app/blobs/{}", layer_digest_of(served));
    match (method, path) {
        ("GET", "/v2/") => send(&mut out, "200 OK", "", b"{}"),
        ("GET", "/v2/hostile/app/manifests/v1") => {
            if matches!(mode, Mode::StallBeforeHeaders) {
                while alive(stop, born) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
            if matches!(mode, Mode::EndlessManifest) {
                return endless(
                    &mut out,
                    "application/vnd.oci.image.manifest.v1+json",
                    &served.manifest,
                    stop,
                    layer_sent,
                    born,
                );
            }
            if matches!(mode, Mode::EndlessChildManifest) {
                let index = format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
                    Digest::of_bytes(&served.manifest),
                    served.manifest.len()
                );
                let headers = "Content-Type: application/vnd.oci.image.index.v1+json\r\n";
                return send(&mut out, "200 OK", headers, index.as_bytes());
            }
            let headers = format!(
                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {}\r\n",
                Digest::of_bytes(&served.manifest)
            );
            send(&mut out, "200 OK", &headers, &served.manifest)
        }
        ("GET", p) if p == format!("/v2/hostile/app/blobs/{}", served.config_digest) => {
            send(&mut out, "200 OK", "", &served.config)
        }
        ("GET", p) if p == layer_path => layer(&mut out, mode, stop, layer_sent, born),
        ("GET", p)
            if p == format!(
                "/v2/hostile/app/manifests/{}",
                Digest::of_bytes(&served.manifest)
            ) =>
        {
            endless(
                &mut out,
                "application/vnd.oci.image.manifest.v1+json",
                &served.manifest,
                stop,
                layer_sent,
                born,
            )
        }
        ("HEAD", _) => send(&mut out, "404 Not Found", "", b""),
        ("POST", _) => {
            posts.fetch_add(1, Ordering::SeqCst);
            send(&mut out, "503 Service Unavailable", "", b"")
        }
        _ => send(&mut out, "404 Not Found", "", b""),
    }
}

/// `start`, then spaces without end (no `Content-Length`), up to [`ENDLESS_CAP`].
fn endless(
    out: &mut TcpStream,
    content_type: &str,
    start: &[u8],
    stop: &AtomicBool,
    sent: &AtomicU64,
    born: Instant,
) -> std::io::Result<()> {
    out.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
    )?;
    out.write_all(start)?;
    let chunk = vec![b' '; 64 * 1024];
    while alive(stop, born) && sent.load(Ordering::SeqCst) < ENDLESS_CAP {
        out.write_all(&chunk)?;
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}

fn layer_digest_of(served: &Served) -> String {
    let v: serde_json::Value = serde_json::from_slice(&served.manifest).unwrap();
    v["layers"][0]["digest"].as_str().unwrap().to_owned()
}

fn layer(
    out: &mut TcpStream,
    mode: Mode,
    stop: &AtomicBool,
    sent: &AtomicU64,
    born: Instant,
) -> std::io::Result<()> {
    out.set_write_timeout(Some(Duration::from_secs(5)))?;
    let length = match mode {
        Mode::EndlessBlob { content_length } => content_length,
        _ => None,
    };
    let length = length
        .map(|l| format!("Content-Length: {l}\r\n"))
        .unwrap_or_default();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n{length}\r\n"
    )?;
    let chunk = vec![b'k'; 64 * 1024];
    match mode {
        Mode::EndlessBlob { .. } => {
            while alive(stop, born) && sent.load(Ordering::SeqCst) < ENDLESS_CAP {
                out.write_all(&chunk)?;
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        Mode::StallAfterHeaders => {
            out.write_all(&chunk[..10])?;
            out.flush()?;
            while alive(stop, born) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Mode::Drip => {
            while alive(stop, born) {
                out.write_all(b"d")?;
                out.flush()?;
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Runs `f` in a thread and fails the test if it has not finished after 20 s.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

/// Bytes of files under `dir` (recursively).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Samples the size of the store's `content/` directory every 5 ms until stopped; the peak.
fn watch_disk(dir: &Path) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let dir = dir.to_path_buf();
    let handle = std::thread::spawn(move || {
        let mut peak = 0;
        while !d.load(Ordering::SeqCst) {
            peak = peak.max(dir_bytes(&dir));
            std::thread::sleep(Duration::from_millis(5));
        }
        peak.max(dir_bytes(&dir))
    });
    (done, handle)
}

fn options() -> RegistryOptions {
    RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        parallelism: 1,
        attempts: 1,
        backoff: Duration::from_millis(10),
        read_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(2),
        progress_window: Duration::from_secs(1),
        progress_min_bytes: 4096,
        ..Default::default()
    }
}

/// Nothing tagged, the layer not stored, no temp file left.
fn assert_nothing_kept(store: &ContentStore, layer: &Digest) {
    assert!(store.list_tags().unwrap().is_empty(), "a tag was set");
    assert!(!store.has_blob(layer), "the hostile layer was stored");
    let ingest = store.state_dir().join("content/ingest");
    assert_eq!(
        std::fs::read_dir(&ingest).unwrap().count(),
        0,
        "partial download left in {}",
        ingest.display()
    );
}

fn pull_err(
    opts: RegistryOptions,
    server: &Hostile,
    what: &str,
) -> (Error, Duration, u64, ContentStore, tempfile::TempDir) {
    let (dir, store) = store();
    let (done, peak) = watch_disk(&dir.path().join("content"));
    let r = server.reference();
    let s = store.clone();
    let started = Instant::now();
    let result = bounded(what, move || {
        RegistryClient::new(opts).pull(&s, &r, &Platform::linux_amd64())
    });
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let peak = peak.join().unwrap();
    let err = result.expect_err("the hostile pull succeeded");
    (err, elapsed, peak, store, dir)
}

#[test]
fn issue12_endless_blob_stops_at_its_descriptor_size() {
    const N: u64 = 1 << 20;
    // No Content-Length (read until close), and a Content-Length of 10 GiB: neither is trusted.
    for content_length in [None, Some(10 << 30)] {
        let server = Hostile::start(Mode::EndlessBlob { content_length }, N);
        let (err, elapsed, peak, store, _dir) =
            pull_err(options(), &server, "a pull of an endless blob");
        let text = err.to_string();
        println!(
            "endless blob (content-length {content_length:?}): failed after {elapsed:?}, peak disk {peak} bytes for a {N}-byte descriptor, server sent {} bytes: {text}",
            server.layer_sent.load(Ordering::SeqCst)
        );
        assert!(matches!(err, Error::BodyTooLarge { .. }), "{err:?}");
        for part in [
            server.layer.0.as_str(),
            server.addr.as_str(),
            "hostile/app",
            "1048576 bytes",
        ] {
            assert!(text.contains(part), "`{part}` missing from: {text}");
        }
        // The config (a few hundred bytes) and at most the descriptor's size of the layer.
        assert!(
            peak <= N + 64 * 1024,
            "peak disk {peak} for a {N}-byte blob"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_nothing_kept(&store, &server.layer.0);
    }
}

#[test]
fn issue12_stall_after_headers_fails_within_the_read_timeout() {
    let server = Hostile::start(Mode::StallAfterHeaders, 1 << 20);
    let (err, elapsed, _, store, _dir) =
        pull_err(options(), &server, "a pull of a blob that stalls");
    let text = err.to_string();
    println!("stall after headers: failed after {elapsed:?}: {text}");
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    for part in [
        server.layer.0.as_str(),
        server.addr.as_str(),
        "read timeout",
    ] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
    // read_timeout is 1 s.
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    assert_nothing_kept(&store, &server.layer.0);

    // With retries, each attempt waits once: bounded by attempts x read_timeout + backoff.
    let (err, elapsed, _, store, _dir) = pull_err(
        RegistryOptions {
            attempts: 3,
            ..options()
        },
        &server,
        "a retried pull of a blob that stalls",
    );
    println!("stall after headers, 3 attempts: failed after {elapsed:?}: {err}");
    assert!(
        elapsed >= Duration::from_millis(2700) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert_nothing_kept(&store, &server.layer.0);
}

#[test]
fn issue12_server_that_never_answers_fails_within_the_read_timeout() {
    let server = Hostile::start(Mode::StallBeforeHeaders, 1 << 20);
    let (err, elapsed, _, store, _dir) =
        pull_err(options(), &server, "a pull whose manifest never comes");
    let text = err.to_string();
    println!("stall before headers: failed after {elapsed:?}: {text}");
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(
        text.contains(&server.addr) && text.contains("timeout"),
        "{text}"
    );
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    assert!(store.list_tags().unwrap().is_empty());
}

#[test]
fn issue12_dripping_blob_fails_the_low_speed_rule() {
    let server = Hostile::start(Mode::Drip, 1 << 20);
    let (err, elapsed, _, store, _dir) = pull_err(options(), &server, "a pull of a dripping blob");
    let text = err.to_string();
    println!("drip of 10 bytes/s: failed after {elapsed:?}: {text}");
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    for part in [server.layer.0.as_str(), server.addr.as_str(), "too slow"] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
    // One 1 s window, plus the read that ends it.
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    assert_nothing_kept(&store, &server.layer.0);
}

#[test]
fn issue12_an_upload_start_is_not_retried() {
    let server = Hostile::start(Mode::UploadsUnavailable, 1);
    let (_d, src) = store();
    let image = test_image(&src, "post", [Compression::Gzip, Compression::Gzip]);
    let r = server.reference();
    let err = bounded("a push to a registry answering 503", move || {
        RegistryClient::new(RegistryOptions {
            attempts: 4,
            ..options()
        })
        .push(&src, &image, &r)
    })
    .expect_err("the push succeeded");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(
        server.posts.load(Ordering::SeqCst),
        1,
        "a POST that reached the server was sent again"
    );
}

#[test]
fn issue12_endless_manifests_stop_at_their_size() {
    // By tag: no descriptor, so the 4 MiB cap.
    let server = Hostile::start(Mode::EndlessManifest, 1);
    let (err, elapsed, _, store, _dir) =
        pull_err(options(), &server, "a pull of an endless manifest");
    let text = err.to_string();
    println!("endless manifest by tag: failed after {elapsed:?}: {text}");
    assert!(
        matches!(
            err,
            Error::BodyTooLarge {
                limit: 4_194_304,
                ..
            }
        ),
        "{err:?}"
    );
    for part in ["manifest `v1`", server.addr.as_str(), "hostile/app"] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
    assert!(store.list_tags().unwrap().is_empty());

    // Through an index: the child's descriptor says how long it is, and no more is read.
    let server = Hostile::start(Mode::EndlessChildManifest, 1);
    let (err, elapsed, _, store, _dir) =
        pull_err(options(), &server, "a pull of an endless child manifest");
    let text = err.to_string();
    println!("endless child manifest: failed after {elapsed:?}: {text}");
    let Error::BodyTooLarge { limit, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        *limit < 1024,
        "limit {limit}: the descriptor's size, not the 4 MiB cap"
    );
    assert!(text.contains("manifest `sha256:"), "{text}");
    assert!(store.list_tags().unwrap().is_empty());
    assert!(
        store.list_blobs().unwrap().is_empty(),
        "{:?}",
        store.list_blobs()
    );
}
