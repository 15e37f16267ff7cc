//! HTTPS against a real `docker-registry` serving TLS with a test CA: the CA is trusted through
//! Docker's `certs.d/<host:port>/ca.crt` layout, and loopback registries fall back to
//! unverified TLS as Docker's insecure registries do.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Registry, store, test_image};
use kiln_image::{Compression, Platform, Reference, RegistryClient, RegistryOptions};

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path, ca_name: &str) {
    let ca_subj = format!("/CN={ca_name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &ca_subj,
            "-keyout", "ca.key", "-out", "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "reg.key",
            "-out",
            "reg.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "reg.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "reg.crt",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[test]
fn https_registry_with_certs_d_and_insecure_fallback() {
    if !kiln_testkit::require_tool(
        "https_registry_with_certs_d_and_insecure_fallback",
        "openssl",
        "openssl",
    ) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "kiln-test-ca");
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        certs.path().join("reg.crt").display(),
        certs.path().join("reg.key").display()
    );
    let Some(reg) = Registry::start_with(None, &tls) else {
        return;
    };

    // Trusted through certs.d.
    let certs_d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(certs_d.path().join(&reg.addr)).unwrap();
    std::fs::copy(
        certs.path().join("ca.crt"),
        certs_d.path().join(&reg.addr).join("ca.crt"),
    )
    .unwrap();
    let trusted = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        certs_dir: certs_d.path().into(),
        ..Default::default()
    });
    let (_d, src) = store();
    let image = test_image(&src, "tls", [Compression::Gzip, Compression::Gzip]);
    let r = Reference::parse(&format!("{}/kiln/tls:1", reg.addr)).unwrap();
    trusted.push(&src, &image, &r).unwrap();
    let (_d2, dst) = store();
    assert_eq!(
        trusted
            .pull(&dst, &r, &Platform::linux_amd64())
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );

    // Loopback without a CA: TLS without verification, as Docker does for insecure registries.
    let insecure = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        certs_dir: "/nonexistent".into(),
        ..Default::default()
    });
    let (_d3, dst3) = store();
    assert_eq!(
        insecure
            .pull(&dst3, &r, &Platform::linux_amd64())
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );

    // A CA that did not sign the server: no TLS, and plain HTTP to a TLS port fails clearly.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), "someone-else");
    let wrong_d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(wrong_d.path().join(&reg.addr)).unwrap();
    std::fs::copy(
        other.path().join("ca.crt"),
        wrong_d.path().join(&reg.addr).join("ca.crt"),
    )
    .unwrap();
    let wrong = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        certs_dir: wrong_d.path().into(),
        attempts: 1,
        ..Default::default()
    });
    let (_d4, dst4) = store();
    let err = wrong
        .pull(&dst4, &r, &Platform::linux_amd64())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&reg.addr) && err.contains("HTTP request to an HTTPS server"),
        "{err}"
    );
    assert!(dst4.list_tags().unwrap().is_empty());
}
