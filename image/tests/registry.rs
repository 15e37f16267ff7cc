//! Pull and push against a real `docker-registry` on loopback.

mod common;

use common::{Registry, store, test_image};
use kiln_image::{
    Compression, Credentials, Error, Image, Platform, Reference, RegistryClient, RegistryOptions,
    media_type,
};

fn client() -> RegistryClient {
    RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        ..Default::default()
    })
}

#[test]
fn push_then_pull_round_trips_an_image() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d1, src) = store();
    let image = test_image(&src, "rt", [Compression::Gzip, Compression::Zstd]);
    let r = Reference::parse(&format!("{}/kiln/rt:v1", reg.addr)).unwrap();
    let c = client();
    let report = c.push(&src, &image, &r).unwrap();
    assert_eq!(report.manifest_digest, image.manifest_digest);
    assert_eq!(report.manifest_size, image.manifest_size);
    assert_eq!(report.uploaded.len(), 3, "config + 2 layers: {report:?}");
    // A second push finds every blob with HEAD and uploads nothing.
    let again = c.push(&src, &image, &r).unwrap();
    assert!(
        again.uploaded.is_empty() && again.skipped.len() == 3,
        "{again:?}"
    );

    let (_d2, dst) = store();
    let pulled = c.pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.config_digest, image.config_digest);
    assert_eq!(pulled.config, image.config);
    assert_eq!(pulled.layers, image.layers);
    for l in &pulled.layers {
        assert_eq!(
            dst.read_blob(&l.digest).unwrap(),
            src.read_blob(&l.digest).unwrap()
        );
    }
    assert_eq!(
        dst.resolve_tag(&r).unwrap(),
        Some(image.manifest_digest.clone())
    );
    // By digest too.
    let by_digest = r.with_digest(image.manifest_digest.clone());
    let (_d3, dst3) = store();
    assert_eq!(
        c.pull(&dst3, &by_digest, &Platform::linux_amd64())
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );
    assert!(
        dst3.list_tags().unwrap().is_empty(),
        "a digest pull creates no tag"
    );
}

#[test]
fn chunked_upload_and_cross_repo_mount() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(
        &src,
        "chunk",
        [Compression::Uncompressed, Compression::Gzip],
    );
    let a = Reference::parse(&format!("{}/kiln/a:1", reg.addr)).unwrap();
    let chunked = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        chunk_size: Some(100),
        parallelism: 1,
        push_compression: None,
        ..Default::default()
    });
    chunked.push(&src, &image, &a).unwrap();
    let b = Reference::parse(&format!("{}/kiln/b:1", reg.addr)).unwrap();
    let mounting = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        mount_from: Some("kiln/a".into()),
        push_compression: None,
        ..Default::default()
    });
    let report = mounting.push(&src, &image, &b).unwrap();
    assert!(
        report.uploaded.is_empty(),
        "every blob should be mounted from kiln/a: {report:?}"
    );
    let (_d2, dst) = store();
    let pulled = client().pull(&dst, &b, &Platform::linux_amd64()).unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    // Blobs remember where they were pulled from: pushing them to a third repository of the
    // same registry mounts them without any option.
    let c = Reference::parse(&format!("{}/kiln/c:1", reg.addr)).unwrap();
    let report = mounting_free(&dst, &pulled, &c);
    assert!(report.uploaded.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 3);
}

#[test]
fn pulls_indexes_and_docker_media_types() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "idx", [Compression::Gzip, Compression::Gzip]);
    let docker = kiln_image::convert_image(
        &src,
        &image,
        kiln_image::CompressionOptions::default(),
        true,
    )
    .unwrap();
    assert_eq!(docker.manifest_media_type, media_type::DOCKER_MANIFEST);
    let c = client();
    let dref = Reference::parse(&format!("{}/kiln/img:docker", reg.addr)).unwrap();
    c.push(&src, &docker, &dref).unwrap();
    // An index with an arm64 entry (config only) and the amd64 image.
    let mut arm_cfg = image.config.clone();
    arm_cfg.architecture = "arm64".into();
    arm_cfg.variant = Some("v8".into());
    let arm = kiln_image::write_image(&src, &arm_cfg, &image.layers).unwrap();
    let aref = Reference::parse(&format!("{}/kiln/img:arm", reg.addr)).unwrap();
    c.push(&src, &arm, &aref).unwrap();
    let oref = Reference::parse(&format!("{}/kiln/img:oci", reg.addr)).unwrap();
    c.push(&src, &image, &oref).unwrap();
    let index = kiln_image::Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![arm.descriptor(), image.descriptor()],
        annotations: std::collections::BTreeMap::default(),
    };
    let index_bytes = kiln_image::to_canonical_json(&index).unwrap();
    let index_digest = src.put_bytes(&index_bytes).unwrap();
    let iref = Reference::parse(&format!("{}/kiln/img:index", reg.addr)).unwrap();
    put_raw_manifest(
        &reg,
        "kiln/img",
        "index",
        media_type::OCI_INDEX,
        &index_bytes,
    );

    let (_d2, dst) = store();
    let got = c.pull(&dst, &iref, &Platform::linux_amd64()).unwrap();
    assert_eq!(got.manifest_digest, image.manifest_digest);
    assert_eq!(got.index_digest, Some(index_digest));
    let got = c
        .pull(&dst, &iref, &Platform::parse("linux/arm64").unwrap())
        .unwrap();
    assert_eq!(got.manifest_digest, arm.manifest_digest);
    let err = c
        .pull(&dst, &iref, &Platform::parse("linux/s390x").unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}/kiln/img:index has no image for linux/s390x (it has linux/arm64, linux/amd64)",
            reg.addr
        )
    );

    // A Docker manifest list over the Docker-typed image.
    let list = kiln_image::Index {
        schema_version: 2,
        media_type: Some(media_type::DOCKER_MANIFEST_LIST.into()),
        manifests: vec![docker.descriptor()],
        annotations: std::collections::BTreeMap::default(),
    };
    let list_bytes = kiln_image::to_canonical_json(&list).unwrap();
    put_raw_manifest(
        &reg,
        "kiln/img",
        "list",
        media_type::DOCKER_MANIFEST_LIST,
        &list_bytes,
    );
    let lref = Reference::parse(&format!("{}/kiln/img:list", reg.addr)).unwrap();
    let (_d3, dst3) = store();
    let got = c.pull(&dst3, &lref, &Platform::linux_amd64()).unwrap();
    assert_eq!(got.manifest_digest, docker.manifest_digest);
    assert_eq!(
        got.index_digest,
        Some(kiln_image::Digest::of_bytes(&list_bytes))
    );

    let got = c.pull(&dst, &dref, &Platform::linux_amd64()).unwrap();
    assert_eq!(got.manifest_media_type, media_type::DOCKER_MANIFEST);
    assert_eq!(got.layers[0].media_type, media_type::DOCKER_LAYER_GZIP);
    assert_eq!(got.config, image.config);
    let loaded = Image::resolve(&dst, &dref, &Platform::linux_amd64()).unwrap();
    assert_eq!(loaded.manifest_digest, docker.manifest_digest);
}

/// Pushes without recompressing plain layers and without a configured mount source.
fn mounting_free(
    store: &kiln_image::ContentStore,
    image: &Image,
    r: &Reference,
) -> kiln_image::PushReport {
    RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        push_compression: None,
        ..Default::default()
    })
    .push(store, image, r)
    .unwrap()
}

fn put_raw_manifest(reg: &Registry, repo: &str, tag: &str, mt: &str, body: &[u8]) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .put(&format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr))
        .header("Content-Type", mt)
        .send(body)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", reg.log());
}

#[test]
fn basic_auth_with_htpasswd() {
    let Some(reg) = Registry::start(Some(("kiln", "s3cret"))) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "auth", [Compression::Gzip, Compression::Gzip]);
    let r = Reference::parse(&format!("{}/kiln/private:1", reg.addr)).unwrap();
    let err = client().push(&src, &image, &r).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{}/kiln/private:1", reg.addr)),
        "{err}"
    );

    let with = |user: &str, pass: &str| {
        RegistryClient::new(RegistryOptions {
            docker_config_dir: "/nonexistent".into(),
            credentials: Some(Credentials {
                username: user.into(),
                password: pass.into(),
            }),
            ..Default::default()
        })
    };
    let err = with("kiln", "wrong")
        .pull(&src, &r, &Platform::linux_amd64())
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    with("kiln", "s3cret").push(&src, &image, &r).unwrap();

    // Credentials from a docker config.json `auths` entry.
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"a2lsbjpzM2NyZXQ="}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let c = RegistryClient::new(RegistryOptions {
        docker_config_dir: cfg.path().into(),
        ..Default::default()
    });
    let (_d2, dst) = store();
    assert_eq!(
        c.pull(&dst, &r, &Platform::linux_amd64())
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );
}

#[test]
fn missing_images_and_blobs_give_clear_errors() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, dst) = store();
    let r = Reference::parse(&format!("{}/kiln/nothing:here", reg.addr)).unwrap();
    let err = client()
        .pull(&dst, &r, &Platform::linux_amd64())
        .unwrap_err();
    assert!(matches!(err, Error::RegistryNotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("kiln/nothing:here") && text.contains("404"),
        "{text}"
    );

    // A manifest that points at a blob the registry no longer has (deleted after the push).
    let (_d2, src) = store();
    let image = test_image(&src, "missing", [Compression::Gzip, Compression::Gzip]);
    let c = client();
    let partial = Reference::parse(&format!("{}/kiln/partial:1", reg.addr)).unwrap();
    c.push(&src, &image, &partial).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .delete(&format!(
            "http://{}/v2/kiln/partial/blobs/{}",
            reg.addr, image.layers[1].digest
        ))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{}", reg.log());
    let err = c
        .pull(&dst, &partial, &Platform::linux_amd64())
        .unwrap_err()
        .to_string();
    assert!(err.contains("blob") && err.contains("404"), "{err}");
    assert!(
        dst.list_tags().unwrap().is_empty(),
        "no tag after a failed pull"
    );
    assert!(
        !dst.has_blob(&image.manifest_digest),
        "no manifest after a failed pull"
    );
}

#[test]
fn corrupted_and_truncated_blobs_are_rejected() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "bad", [Compression::Gzip, Compression::Gzip]);
    let r = Reference::parse(&format!("{}/kiln/bad:1", reg.addr)).unwrap();
    let c = client();
    c.push(&src, &image, &r).unwrap();

    // Same length, different bytes: a digest mismatch.
    let layer = &image.layers[1];
    let data_path = reg.blob_data_path(&layer.digest);
    let mut data = std::fs::read(&data_path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&data_path, &data).unwrap();
    let (_d2, dst) = store();
    let err = c.pull(&dst, &r, &Platform::linux_amd64()).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(layer.digest.as_str()), "{err}");
    assert!(!dst.has_blob(&layer.digest));
    assert!(dst.list_tags().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dst.state_dir().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );

    // Shorter than the descriptor says: a truncated download.
    data.truncate(data.len() / 2);
    std::fs::write(&data_path, &data).unwrap();
    let err = c.pull(&dst, &r, &Platform::linux_amd64()).unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    assert!(err.to_string().contains(layer.digest.as_str()), "{err}");
    assert!(dst.list_tags().unwrap().is_empty());
}

#[test]
fn unknown_media_type_is_rejected_before_download() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "mt", [Compression::Gzip, Compression::Gzip]);
    let c = client();
    let r = Reference::parse(&format!("{}/kiln/mt:1", reg.addr)).unwrap();
    c.push(&src, &image, &r).unwrap();
    let mut m = image.manifest.clone();
    m.layers[0].media_type = "application/vnd.example.squashfs".into();
    let bytes = kiln_image::to_canonical_json(&m).unwrap();
    put_raw_manifest(&reg, "kiln/mt", "odd", media_type::OCI_MANIFEST, &bytes);
    let (_d2, dst) = store();
    let odd = Reference::parse(&format!("{}/kiln/mt:odd", reg.addr)).unwrap();
    let err = c
        .pull(&dst, &odd, &Platform::linux_amd64())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsupported media type `application/vnd.example.squashfs`"),
        "{err}"
    );
    assert!(
        dst.list_blobs().unwrap().is_empty(),
        "nothing downloaded: {:?}",
        dst.list_blobs()
    );
}

#[test]
fn transient_connection_failures_are_retried() {
    let Some(mut reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "retry", [Compression::Gzip, Compression::Gzip]);
    let r = Reference::parse(&format!("{}/kiln/retry:1", reg.addr)).unwrap();
    client().push(&src, &image, &r).unwrap();
    reg.stop();
    // While the registry is down, a client with no retries fails with a network error naming it.
    let once = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        attempts: 1,
        ..Default::default()
    });
    let (_d2, dst) = store();
    let err = once.pull(&dst, &r, &Platform::linux_amd64()).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(err.to_string().contains(&reg.addr), "{err}");
    // The registry comes back while a retrying client waits.
    let patient = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        attempts: 8,
        backoff: std::time::Duration::from_millis(100),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        reg.restart();
        reg
    });
    let pulled = patient.pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    let _reg = t.join().unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[test]
fn plain_layers_are_compressed_for_push() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(
        &src,
        "plain",
        [Compression::Uncompressed, Compression::Uncompressed],
    );
    let r = Reference::parse(&format!("{}/kiln/plain:1", reg.addr)).unwrap();
    let report = client().push(&src, &image, &r).unwrap();
    assert_ne!(report.manifest_digest, image.manifest_digest);
    let (_d2, dst) = store();
    let pulled = client().pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    assert_eq!(pulled.manifest_digest, report.manifest_digest);
    assert_eq!(
        pulled.config_digest, image.config_digest,
        "same config, same diff_ids"
    );
    for l in &pulled.layers {
        assert_eq!(l.media_type, media_type::OCI_LAYER_GZIP);
        assert_eq!(
            Compression::detect(&dst.read_blob(&l.digest).unwrap()),
            Compression::Gzip
        );
    }
}

#[test]
fn transfers_report_progress() {
    use kiln_image::TransferEvent;
    use std::sync::{Arc, Mutex};
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let image = test_image(&src, "prog", [Compression::Gzip, Compression::Gzip]);
    let r = Reference::parse(&format!("{}/kiln/prog:1", reg.addr)).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let c = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        ..Default::default()
    })
    .with_progress(move |e| sink.lock().unwrap().push(e.clone()));
    c.push(&src, &image, &r).unwrap();
    let (_d2, dst) = store();
    c.pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    c.pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    let ev = events.lock().unwrap();
    let blobs = |present: bool| {
        ev.iter()
            .filter(|e| matches!(e, TransferEvent::Blob { present: p, .. } if *p == present))
            .count()
    };
    let done = ev
        .iter()
        .filter(|e| matches!(e, TransferEvent::Done { .. }))
        .count();
    // push: 3 uploaded; first pull: 3 downloaded; second pull: 3 present.
    assert_eq!((blobs(false), blobs(true), done), (6, 3, 6), "{ev:?}");
    let last_progress = ev.iter().rev().find_map(|e| match e {
        TransferEvent::Progress { done, total, .. } => Some((*done, *total)),
        _ => None,
    });
    let (d, t) = last_progress.expect("downloads report progress");
    assert_eq!(d, t);
}

#[test]
fn blob_and_manifest_primitives_for_other_content() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    let data = b"{\"cache\":\"record\"}".repeat(100);
    let digest = src.put_bytes(&data).unwrap();
    let desc = kiln_image::Descriptor::new(
        "application/vnd.kiln.cache.v1+json",
        digest.clone(),
        data.len() as u64,
    );
    let r = Reference::parse(&format!("{}/kiln/cache:buildcache", reg.addr)).unwrap();
    let c = client();
    assert!(
        c.push_blob(&src, &r, &desc).unwrap(),
        "uploaded the first time"
    );
    assert!(
        !c.push_blob(&src, &r, &desc).unwrap(),
        "found by HEAD the second time"
    );
    let (_d2, dst) = store();
    c.pull_blob(&dst, &r, &desc).unwrap();
    assert_eq!(dst.read_blob(&digest).unwrap(), data);
    let mut bad = desc.clone();
    bad.digest = kiln_image::Digest::of_bytes(b"absent");
    let err = c.pull_blob(&dst, &r, &bad).unwrap_err();
    assert!(matches!(err, Error::RegistryNotFound { .. }), "{err}");
    // A hand-made index goes up with push_manifest and comes back byte for byte.
    let image = test_image(&src, "prim", [Compression::Gzip, Compression::Gzip]);
    c.push(&src, &image, &r.with_tag("img").unwrap()).unwrap();
    let index = kiln_image::Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![image.descriptor()],
        annotations: std::collections::BTreeMap::default(),
    };
    let bytes = kiln_image::to_canonical_json(&index).unwrap();
    c.push_manifest(&r, "buildcache", media_type::OCI_INDEX, &bytes)
        .unwrap();
    let (got, mt, d) = c.fetch_manifest(&r, "buildcache").unwrap();
    assert_eq!(
        (got, mt.as_str(), d),
        (
            bytes.clone(),
            media_type::OCI_INDEX,
            kiln_image::Digest::of_bytes(&bytes)
        )
    );
}

/// A TCP proxy in front of the registry that cuts the first plain-HTTP connection after
/// `cut_after` bytes from the server, like a network dropping mid-download.
fn cutting_proxy(
    upstream: String,
    cut_after: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let cut_done = std::sync::Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let cut_done = cut_done.clone();
            std::thread::spawn(move || {
                let mut c_in = client.try_clone().unwrap();
                let mut s_out = server.try_clone().unwrap();
                let mut first = [0u8; 1];
                if c_in.peek(&mut first).is_err() {
                    return;
                }
                // Plain HTTP (not the TLS probe) and no cut yet: this connection gets cut.
                let cut = first[0] == b'G' && !cut_done.swap(true, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                });
                let mut s_in = server;
                let mut c_out = client;
                let mut sent = 0;
                let mut buf = [0u8; 8192];
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = if cut { n.min(cut_after - sent) } else { n };
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if cut && sent >= cut_after {
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                        let _ = s_in.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[test]
fn a_download_cut_mid_body_is_retried_or_reported() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (_d, src) = store();
    // One big incompressible layer (1 MiB) so the cut lands inside it.
    let mut noise = vec![0u8; 1 << 20];
    let mut x: u32 = 0x1234_5678;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let tar = common::layer_tar(&[("noise.bin", &noise, 0o644)]);
    let mut w = src
        .layer_writer(kiln_image::CompressionOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut w, &tar).unwrap();
    let layer = w.finish().unwrap();
    let mut config = kiln_image::ImageConfig::new(&Platform::linux_amd64());
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    let image =
        kiln_image::write_image(&src, &config, std::slice::from_ref(&layer.descriptor)).unwrap();
    let direct = Reference::parse(&format!("{}/kiln/cut:1", reg.addr)).unwrap();
    client().push(&src, &image, &direct).unwrap();

    let sequential = |attempts| {
        RegistryClient::new(RegistryOptions {
            docker_config_dir: "/nonexistent".into(),
            parallelism: 1,
            attempts,
            backoff: std::time::Duration::from_millis(50),
            ..Default::default()
        })
    };
    // Without retries: a network error naming the blob, and nothing half-stored.
    let (addr, _) = cutting_proxy(reg.addr.clone(), 300_000);
    let via = Reference::parse(&format!("{addr}/kiln/cut:1")).unwrap();
    let (_d2, dst) = store();
    let err = sequential(1)
        .pull(&dst, &via, &Platform::linux_amd64())
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(
        err.to_string().contains(layer.descriptor.digest.as_str()),
        "{err}"
    );
    assert!(!dst.has_blob(&layer.descriptor.digest));
    assert!(dst.list_tags().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dst.state_dir().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );

    // With retries: the blob is fetched again on a new connection.
    let (addr, connections) = cutting_proxy(reg.addr.clone(), 300_000);
    let via = Reference::parse(&format!("{addr}/kiln/cut:1")).unwrap();
    let pulled = sequential(3)
        .pull(&dst, &via, &Platform::linux_amd64())
        .unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "probe, cut connection, retry"
    );
    assert_eq!(
        dst.read_blob(&layer.descriptor.digest).unwrap(),
        src.read_blob(&layer.descriptor.digest).unwrap()
    );
}
