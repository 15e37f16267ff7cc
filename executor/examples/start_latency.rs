//! Prints the median start-to-reap latency of a container running `true` in a busybox overlay
//! rootfs: `start_latency <init-binary> [runs]` (the init binary is `kiln` or
//! `kiln-executor-init`). Root and /bin/busybox needed; `KILN_NETWORK=none|private|host` picks
//! the network mode. The criterion bench in the root
//! package measures the same through the `kiln` binary. On a loaded machine, run it under
//! `chrt -f 50` to see the container's own cost rather than the scheduler's queue.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::Instant;

use kiln_executor::{CancelToken, Executor, ExecutorConfig, ProcessSpec, RootFs, RootMount};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let init = PathBuf::from(
        args.next()
            .ok_or("usage: start_latency <init-binary> [runs]")?,
    );
    let runs: usize = args.next().map_or(Ok(100), |n| n.parse())?;
    let dir = std::env::temp_dir().join(format!("kiln-start-latency-{}", std::process::id()));
    let lower = dir.join("lower");
    for d in ["bin", "etc", "upper", "work", "state"] {
        fs::create_dir_all(if d == "bin" || d == "etc" {
            lower.join(d)
        } else {
            dir.join(d)
        })?;
    }
    fs::copy("/bin/busybox", lower.join("bin/busybox"))?;
    symlink("busybox", lower.join("bin/true"))?;
    let rootfs = RootFs::Mounts(vec![RootMount::overlay(
        &lower,
        &dir.join("upper"),
        &dir.join("work"),
    )]);
    let executor = Executor::new(ExecutorConfig {
        init_binary: init,
        state_dir: dir.join("state"),
    })?;
    // `KILN_NETWORK=none|private|host` picks the network mode (default: the default mode).
    let network = match std::env::var("KILN_NETWORK").as_deref() {
        Ok("none") => kiln_executor::Network::None,
        Ok("private") => kiln_executor::Network::Private,
        Ok("host") => kiln_executor::Network::Host,
        _ => kiln_executor::Network::Default,
    };
    let spec = ProcessSpec {
        args: vec!["/bin/true".into()],
        network,
        ..ProcessSpec::default()
    };
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let status = executor.run(&spec, &rootfs, &[], &mut |_, _| {}, &CancelToken::new())?;
        samples.push(start.elapsed());
        if !status.success() {
            return Err(format!("`true` exited {}", status.code()).into());
        }
    }
    samples.sort();
    println!(
        "median {:.2} ms, p10 {:.2} ms, p90 {:.2} ms over {runs} runs",
        samples[runs / 2].as_secs_f64() * 1e3,
        samples[runs / 10].as_secs_f64() * 1e3,
        samples[runs * 9 / 10].as_secs_f64() * 1e3,
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}
