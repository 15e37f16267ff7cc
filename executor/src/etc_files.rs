//! The generated /etc/hosts, /etc/resolv.conf and /etc/hostname of a step (BuildKit's
//! `executor/oci/hosts.go` and `resolvconf.go`): bind-mounted read-only over the image's files,
//! so they never reach a layer.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::spec::Network;

/// `/etc/hosts`: localhost plus the sandbox hostname, then one line per extra host.
pub(crate) fn hosts(hostname: &str, extra: &[(String, String)]) -> Vec<u8> {
    let mut out =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra {
        let _ = writeln!(out, "{ip}\t{host}");
    }
    out.into_bytes()
}

/// `/etc/resolv.conf` from the host's: loopback nameservers are dropped unless the step shares
/// the host network, and Google's public servers are used when none remain.
pub(crate) fn resolv_conf(host: Option<&str>, network: Network) -> Vec<u8> {
    let host = host.unwrap_or("");
    if network == Network::Private {
        // The host's search and options, and slirp4netns's forwarder as the only server.
        let mut out = String::new();
        for line in host
            .lines()
            .filter(|l| l.split_whitespace().next() != Some("nameserver"))
        {
            out.push_str(line);
            out.push('\n');
        }
        let _ = writeln!(out, "nameserver {}", crate::nat::DNS);
        return out.into_bytes();
    }
    let keep_loopback = network != Network::None;
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            let loopback = addr
                .split('%')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|ip| match ip {
                    IpAddr::V4(v4) => v4.is_loopback(),
                    IpAddr::V6(v6) => {
                        v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                    }
                });
            if loopback && !keep_loopback {
                continue;
            }
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_buildkit() {
        assert_eq!(
            hosts("buildkitsandbox", &[("db".into(), "10.0.0.2".into())]),
            b"127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.2\tdb\n"
        );
    }

    #[test]
    fn resolv_conf_drops_loopback_only_without_host_network() {
        let host = "nameserver 127.0.0.53\nnameserver ::ffff:127.0.0.1\nsearch lan\n";
        assert_eq!(
            resolv_conf(Some(host), Network::None),
            b"search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(Some(host), Network::Host), host.as_bytes());
        assert_eq!(
            resolv_conf(
                Some("search lan\nnameserver 127.0.0.53\n"),
                Network::Private
            ),
            b"search lan\nnameserver 10.0.2.3\n"
        );
        assert_eq!(
            resolv_conf(None, Network::Default),
            b"nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }
}
