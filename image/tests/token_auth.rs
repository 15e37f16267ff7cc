//! The bearer-token flow against a real `docker-registry` configured for token auth. The token
//! server is a small fixture here that signs real RS256 JWTs (with the `openssl` CLI) that the
//! registry verifies against the certificate in its `rootcertbundle`, as with Docker Hub's
//! auth.docker.io.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Registry, store, test_image};
use kiln_image::{
    Compression, Credentials, Error, Platform, Reference, RegistryClient, RegistryOptions,
};

const ISSUER: &str = "kiln-test-issuer";
const SERVICE: &str = "kiln-test-registry";
const IDENTITY_TOKEN: &str = "refresh-me-0123";

struct TokenServer {
    url: String,
    requests: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    cert: PathBuf,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn sign(key: &Path, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

impl TokenServer {
    /// Grants every requested scope to `user:pass` (Basic on the token request); anonymous
    /// requests get `pull` only.
    fn start(user: &'static str, pass: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kiln-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let expected_auth = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut authed = false;
                let mut bad_auth = false;
                let mut content_length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authed = v.trim() == expected_auth;
                            bad_auth = !authed;
                        } else if k.eq_ignore_ascii_case("content-length") {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                // The OAuth2 form (identity tokens): POST grant_type=refresh_token.
                let mut form = String::new();
                if content_length > 0 {
                    let mut body = vec![0u8; content_length];
                    std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                    form = String::from_utf8(body).unwrap();
                    let refresh = form
                        .split('&')
                        .find_map(|p| p.strip_prefix("refresh_token="));
                    authed = refresh.map(percent_decode).as_deref() == Some(IDENTITY_TOKEN);
                    bad_auth = !authed;
                }
                if bad_auth {
                    let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let target = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_owned();
                let query = if form.is_empty() {
                    target.split_once('?').map_or("", |(_, q)| q).to_owned()
                } else {
                    form
                };
                let mut access = Vec::new();
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|p| p.strip_prefix("scope="))
                    .flat_map(|v| {
                        percent_decode(v)
                            .split(' ')
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for scope in scopes {
                    let parts: Vec<&str> = scope.split(':').collect();
                    if parts.len() == 3 {
                        let actions: Vec<&str> = parts[2]
                            .split(',')
                            .filter(|a| authed || *a == "pull")
                            .collect();
                        access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}));
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": if authed { user } else { "" }, "aud": SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
                    "access": access,
                });
                let input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                let sig = sign(&key, input.as_bytes());
                let body = serde_json::json!({"token": format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))}).to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            url,
            requests,
            _dir: dir,
            cert,
        }
    }
}

#[test]
fn bearer_token_flow_with_a_real_registry() {
    if !kiln_testkit::require_tool(
        "bearer_token_flow_with_a_real_registry",
        "openssl",
        "openssl",
    ) {
        return;
    }
    let tokens = TokenServer::start("kiln", "t0ken");
    let auth = format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        tokens.url,
        tokens.cert.display()
    );
    let Some(reg) = Registry::start_with(None, &auth) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "tok", [Compression::Gzip, Compression::Gzip]);
    let r = Reference::parse(&format!("{}/kiln/tok:1", reg.addr)).unwrap();
    let anon = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        ..Default::default()
    });
    let err = anon.push(&src, &image, &r).unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { .. }),
        "anonymous tokens only pull: {err}"
    );

    let authed = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        credentials: Some(Credentials {
            username: "kiln".into(),
            password: "t0ken".into(),
        }),
        ..Default::default()
    });
    authed.push(&src, &image, &r).unwrap();
    let before = tokens.requests.load(Ordering::SeqCst);
    authed.push(&src, &image, &r).unwrap();
    assert_eq!(
        tokens.requests.load(Ordering::SeqCst),
        before,
        "the token is cached per scope"
    );

    // Anonymous pull is granted by this token server.
    let (_d2, dst) = store();
    assert_eq!(
        anon.pull(&dst, &r, &Platform::linux_amd64())
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );

    // A mount needs pull on the source repository too: the challenge names both scopes.
    let other = Reference::parse(&format!("{}/kiln/other:1", reg.addr)).unwrap();
    let mounting = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        credentials: Some(Credentials {
            username: "kiln".into(),
            password: "t0ken".into(),
        }),
        mount_from: Some("kiln/tok".into()),
        ..Default::default()
    });
    let report = mounting.push(&src, &image, &other).unwrap();
    assert!(
        report.uploaded.is_empty(),
        "mounted: {report:?}\n{}",
        reg.log()
    );
}
