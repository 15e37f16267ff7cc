//! Whether a base image name is a valid Docker reference, as
//! `distribution/reference.ParseNormalizedNamed` decides (for `InvalidDefaultArgInFrom`).

use std::sync::OnceLock;

use regex::Regex;

fn grammar() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
        let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
        let host = format!(r"(?:{domain_name}|{ipv6})");
        let domain = format!(r"{host}(?::[0-9]+)?");
        let path_component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
        let name = format!(r"(?:{domain}/)?{path_component}(?:/{path_component})*");
        let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        let re = format!(r"^({name})(?::{tag})?(?:@{digest})?$");
        Regex::new(&re).unwrap_or_else(|e| unreachable!("reference grammar: {e}"))
    })
}

/// Whether `s` parses as a normalized named reference (`busybox`, `busybox:1.36`,
/// `127.0.0.1:5000/a/b@sha256:...`).
pub(crate) fn is_valid(s: &str) -> bool {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return false;
    }
    match grammar().captures(s) {
        Some(c) => c.get(1).is_some_and(|n| n.as_str().len() <= 255),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn valid_and_invalid_names() {
        for ok in [
            "busybox",
            "busybox:stable",
            "127.0.0.1:5000/busybox:latest",
            "docker.io/library/alpine:3.20@sha256:0123456789abcdef0123456789abcdef",
            "scratch",
            "localhost/a_b/c-d",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "busybox:", "busy box", "Busybox", ":latest", "a//b"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
