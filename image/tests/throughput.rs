//! Throughput figures (ignored by default; run in release):
//! `cargo test --release -p kiln-image --test throughput -- --ignored --nocapture`
//! A real-world layer (system libraries, ~200 MB) is compressed into the store with gzip and
//! zstd, pushed to and pulled from a real registry on loopback.

mod common;

use std::io::Write;
use std::time::Instant;

use common::{Registry, store};
use kiln_image::{
    Compression, CompressionOptions, ImageConfig, Platform, Reference, RegistryClient,
    RegistryOptions, write_image,
};

fn system_layer(limit: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut total = 0;
    for entry in walk("/usr/lib") {
        let Ok(meta) = std::fs::symlink_metadata(&entry) else {
            continue;
        };
        if !meta.is_file() || meta.len() == 0 {
            continue;
        }
        let Ok(data) = std::fs::read(&entry) else {
            continue;
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if b.append_data(&mut h, entry.strip_prefix("/").unwrap(), &data[..])
            .is_err()
        {
            continue;
        }
        total += data.len() as u64;
        if total >= limit {
            break;
        }
    }
    b.into_inner().unwrap()
}

fn walk(root: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn mbps(bytes: u64, secs: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / 1e6 / secs)
}

#[test]
#[ignore = "measurement, run in release"]
fn throughput() {
    let tar = system_layer(200_000_000);
    let size = tar.len() as u64;
    println!("layer: {:.0} MB uncompressed", size as f64 / 1e6);
    let (_d, s) = store();
    let mut layers = Vec::new();
    for c in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let t = Instant::now();
        let mut w = s
            .layer_writer(CompressionOptions {
                compression: c,
                level: None,
            })
            .unwrap();
        w.write_all(&tar).unwrap();
        let layer = w.finish().unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "store layer {:<12} {:>9} in, {:.0} MB blob ({:.0}%), {secs:.2}s",
            c.name(),
            mbps(size, secs),
            layer.descriptor.size as f64 / 1e6,
            100.0 * layer.descriptor.size as f64 / size as f64
        );
        layers.push(layer);
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let gz = &layers[0];
    let mut config = ImageConfig::new(&Platform::linux_amd64());
    config.rootfs.diff_ids.push(gz.diff_id.clone());
    let image = write_image(&s, &config, std::slice::from_ref(&gz.descriptor)).unwrap();
    let c = RegistryClient::new(RegistryOptions {
        docker_config_dir: "/nonexistent".into(),
        ..Default::default()
    });
    let r = Reference::parse(&format!("{}/bench/big:1", reg.addr)).unwrap();
    let t = Instant::now();
    c.push(&s, &image, &r).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "push (gzip blob)     {:>9} of blob, {secs:.2}s",
        mbps(gz.descriptor.size, secs)
    );
    let (_d2, dst) = store();
    let t = Instant::now();
    c.pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "pull (gzip blob)     {:>9} of blob, {secs:.2}s",
        mbps(gz.descriptor.size, secs)
    );
    let t = Instant::now();
    c.pull(&dst, &r, &Platform::linux_amd64()).unwrap();
    println!("pull again (present) {:.3}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let out = tempfile::tempdir().unwrap();
    kiln_image::export_docker(
        &s,
        &[(image.clone(), vec![r.clone()])],
        None,
        &out.path().join("d.tar"),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "docker-archive save  {:>9} of layer, {secs:.2}s (gunzip to docker save's plain layers)",
        mbps(size, secs)
    );
}
