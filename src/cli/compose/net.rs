//! The project network of `kiln compose up` as root, docker compose's default network: a
//! bridge (`kbr-PID`, 10.213.X.1/24, X free on the host) and, per service, a network namespace
//! (held by a `sleep` that unshared it) with `eth0` at 10.213.X.(N+2) on a veth (`kvPID-N`)
//! into the bridge, `lo`, and a default route through the bridge, so services can all listen on
//! the same port and reach each other by address (names: `--add-host` in every container's
//! /etc/hosts). Outbound traffic is masqueraded by an nftables table (`kiln_PID`) when `nft` is
//! there. Everything is made with iproute2's `ip` (and util-linux's `nsenter`) and removed when
//! the network is dropped; what a killed `up` left (its PID gone) is removed by the next one.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

const NETNS_DIR: &str = "/run/netns";

/// Runs `ip ARGS`, its stderr the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (install iproute2: compose's network needs it)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether `pid` is a live process.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces, bridges and nftables tables of `compose up` runs that are gone.
fn sweep_stale() {
    if let Ok(dir) = std::fs::read_dir(NETNS_DIR) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("kiln-")
                .and_then(|r| r.split_once('-'))
                .and_then(|(p, _)| p.parse().ok())
                && !alive(pid)
            {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("kbr-").and_then(|p| p.parse().ok())
                && !alive(pid)
            {
                let _ = ip(&["link", "del", &name]);
                let _ = nft(&format!("delete table ip kiln_{pid}\n"));
            }
        }
    }
}

/// A free 10.213.X.0/24: no host address in it.
fn free_subnet() -> anyhow::Result<u8> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("running `ip` (install iproute2: compose's network needs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    (0..=255u8)
        .find(|x| !text.contains(&format!(" 10.213.{x}.")))
        .context("no free subnet in 10.213.0.0/16 for the project network")
}

/// The lock every `compose up` takes while it sets up its network (subnet choice, netns files).
fn setup_lock() -> anyhow::Result<File> {
    std::fs::create_dir_all("/run/kiln").context("creating /run/kiln")?;
    let lock = File::create("/run/kiln/compose-net.lock").context("creating the net lock")?;
    lock.lock().context("locking /run/kiln/compose-net.lock")?;
    Ok(lock)
}

/// One service's place on the network.
pub(crate) struct Endpoint {
    /// Its address.
    pub(crate) ip: Ipv4Addr,
    /// Its network namespace, for `setns` in the service's `kiln run`.
    pub(crate) netns: File,
}

/// The project's bridge and namespaces, removed on drop.
pub(crate) struct ProjectNet {
    bridge: String,
    subnet: u8,
    /// The processes holding the services' namespaces.
    holders: Vec<std::process::Child>,
    nat: bool,
}

impl ProjectNet {
    /// Makes the bridge (after removing what dead runs left).
    pub(crate) fn create() -> anyhow::Result<Self> {
        // Two `up`s at once must not pick the same subnet.
        let lock = setup_lock()?;
        sweep_stale();
        let pid = std::process::id();
        let mut net = ProjectNet {
            bridge: format!("kbr-{pid}"),
            subnet: free_subnet()?,
            holders: Vec::new(),
            nat: false,
        };
        let gw = format!("10.213.{}.1/24", net.subnet);
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gw, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        drop(lock);
        let forwarding =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
        if forwarding {
            let script = format!(
                "table ip kiln_{pid} {{\n chain post {{\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr 10.213.{}.0/24 oifname != \"{}\" masquerade\n }}\n}}\n",
                net.subnet, net.bridge
            );
            net.nat = nft(&script).is_ok();
        }
        if !net.nat {
            eprintln!(
                "warning: the services have no outbound network access (it needs nftables and \
                 net.ipv4.ip_forward=1); they reach each other and the host"
            );
        }
        Ok(net)
    }

    /// The address the host has on the project network.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    /// Adds service number `index` (0-based): its namespace, veth and address.
    pub(crate) fn add(&mut self, index: usize) -> anyhow::Result<Endpoint> {
        let pid = std::process::id();
        let host_byte = u8::try_from(index + 2)
            .ok()
            .filter(|b| *b < 255)
            .context("more than 252 services on one network")?;
        let veth = format!("kv{pid}-{index}");
        // The namespace is held by a `sleep` that unshared it (no /run/netns file: named ones
        // were seen to stop being namespaces while several `up`s set up at once); it dies with
        // compose and is killed when the network is dropped.
        let mut holder = Command::new("sleep");
        holder.arg("infinity");
        // SAFETY: unshare and prctl are async-signal-safe and touch no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            holder.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::unshare(libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let holder = holder
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting the process holding a service's network namespace")?;
        let holder_pid = holder.id().to_string();
        self.holders.push(holder);
        let addr = Ipv4Addr::new(10, 213, self.subnet, host_byte);
        let cidr = format!("{addr}/24");
        let gw = self.gateway().to_string();
        ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &holder_pid,
        ])?;
        ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        let inside = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("nsenter")
                .args(["-t", &holder_pid, "-n", "ip"])
                .args(args)
                .output()
                .context("running nsenter (util-linux)")?;
            if !out.status.success() {
                bail!(
                    "ip {} (in service {index}'s namespace): {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        inside(&["addr", "add", &cidr, "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        inside(&["route", "add", "default", "via", &gw])?;
        let path = format!("/proc/{holder_pid}/ns/net");
        let netns = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(Endpoint { ip: addr, netns })
    }
}

impl Drop for ProjectNet {
    fn drop(&mut self) {
        // The veth first: a namespace's devices go with it only when the kernel gets to it.
        let pid = std::process::id();
        for (i, h) in self.holders.iter_mut().enumerate() {
            let _ = ip(&["link", "del", &format!("kv{pid}-{i}")]);
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = ip(&["link", "del", &self.bridge]);
        if self.nat {
            let _ = nft(&format!("delete table ip kiln_{}\n", std::process::id()));
        }
    }
}
