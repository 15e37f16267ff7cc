//! containerd's `compare.go` and the matcher of `platforms.go`: which platforms an image may
//! be for to run on a given one, and which of several to prefer (`Only`, `OnlyStrict`,
//! `Ordered`), plus the Windows OS version rule of `platform_windows_compat.go`.

use crate::Platform;

/// containerd's `NewMatcher`: one normalized platform, matched on OS, architecture, variant,
/// Windows OS version and OS features (the candidate's features must be a subset).
#[derive(Clone, Debug)]
struct Single {
    platform: Platform,
    windows: Option<WindowsVersion>,
}

impl Single {
    fn new(platform: &Platform) -> Self {
        let windows = (platform.os == "windows")
            .then(|| WindowsVersion::parse(platform.os_version.as_deref().unwrap_or("")));
        Self {
            platform: platform.normalize(),
            windows,
        }
    }

    fn matches(&self, candidate: &Platform) -> bool {
        let normalized = candidate.normalize();
        let m = &self.platform;
        if m.os != normalized.os
            || m.architecture != normalized.architecture
            || m.variant != normalized.variant
        {
            return false;
        }
        if let Some(w) = &self.windows
            && !w.matches(candidate.os_version.as_deref().unwrap_or(""))
        {
            return false;
        }
        let wanted = &normalized.os_features;
        if wanted.is_empty() {
            return true;
        }
        if m.os_features.len() < wanted.len() {
            return false;
        }
        // Both lists are sorted: walk them together.
        let mut j = 0;
        for feature in wanted {
            let mut found = false;
            while j < m.os_features.len() {
                if *feature == m.os_features[j] {
                    found = true;
                    j += 1;
                    break;
                }
                if *feature < m.os_features[j] {
                    return false;
                }
                j += 1;
            }
            if !found {
                return false;
            }
        }
        true
    }
}

/// Matches the platforms an image may be for to run on a platform, in order of preference:
/// containerd's `Only` (from [`Platform::matcher`]) or `OnlyStrict` ([`Matcher::strict`]).
#[derive(Clone, Debug)]
pub struct Matcher {
    matchers: Vec<Single>,
}

impl Matcher {
    /// containerd's `Only`: `platform` and, after it, the platforms it also runs.
    pub fn only(platform: &Platform) -> Self {
        Self::ordered(&platform_vector(&platform.normalize()))
    }

    /// containerd's `OnlyStrict`: just `platform` (normalized), no fallbacks.
    pub fn strict(platform: &Platform) -> Self {
        Self::ordered(&[platform.normalize()])
    }

    /// containerd's `Ordered`: any of `platforms`, preferred in that order.
    pub fn ordered(platforms: &[Platform]) -> Self {
        Self {
            matchers: platforms.iter().map(Single::new).collect(),
        }
    }

    /// The platforms matched, best first.
    pub fn platforms(&self) -> Vec<&Platform> {
        self.matchers.iter().map(|m| &m.platform).collect()
    }

    /// Whether an image for `candidate` may be used.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }

    /// The preference of `candidate`: 0 for the platform itself, higher for fallbacks,
    /// `None` when it does not match.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        self.matchers.iter().position(|m| m.matches(candidate))
    }

    /// containerd's `Less`: whether `a` is preferred over `b`.
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        match (self.rank(a), self.rank(b)) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The index of the candidate to use: the best match, the first of equally good ones (as
    /// containerd's stable sort by `Less` picks it), `None` when none matches.
    pub fn best(&self, candidates: &[&Platform]) -> Option<usize> {
        candidates
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.rank(p).map(|r| (r, i)))
            .min()
            .map(|(_, i)| i)
    }
}

/// containerd's `platformVector`: the platform, then what it also runs, best first.
fn platform_vector(platform: &Platform) -> Vec<Platform> {
    let with = |arch: &str, variant: Option<String>| Platform {
        architecture: arch.to_owned(),
        os: platform.os.clone(),
        os_version: platform.os_version.clone(),
        os_features: platform.os_features.clone(),
        variant,
    };
    let variant = platform.variant.clone().unwrap_or_default();
    let number = |v: &str| v.strip_prefix('v').unwrap_or(v).parse::<i64>().ok();
    let mut vector = vec![platform.clone()];
    match platform.architecture.as_str() {
        "amd64" => {
            if let Some(level) = number(&variant).filter(|l| *l > 1) {
                for l in (1..level).rev() {
                    vector.push(with("amd64", Some(format!("v{l}"))));
                }
            }
            vector.push(with("386", None));
        }
        "arm" => {
            if let Some(version) = number(&variant).filter(|v| *v > 5) {
                for v in (5..version).rev() {
                    vector.push(with("arm", Some(format!("v{v}"))));
                }
            }
        }
        "arm64" => {
            let mut variant = if variant.is_empty() {
                "v8".to_owned()
            } else {
                variant
            };
            let (major, minor) = match variant.split_once('.') {
                Some((major, minor)) => (major, Some(minor)),
                None => (variant.as_str(), None),
            };
            if let Some(mut arm_major) = number(major).filter(|m| *m >= 8) {
                let mut arm_minor = 0;
                if variant.len() == 4
                    && let Some(m) = minor.and_then(|m| m.parse::<i64>().ok())
                {
                    arm_minor = m;
                }
                let name = |major: i64, minor: i64| {
                    if minor == 0 {
                        format!("v{major}")
                    } else {
                        format!("v{major}.{minor}")
                    }
                };
                if arm_major == 9 {
                    for m in (0..arm_minor).rev() {
                        vector.push(with("arm64", Some(name(9, m))));
                    }
                    // v9.0 diverged from v8.5: v9.x runs v8.{x+5}.
                    arm_minor += 5;
                    arm_major = 8;
                    vector.push(with("arm64", Some(format!("v8.{arm_minor}"))));
                }
                for m in (0..arm_minor).rev() {
                    vector.push(with("arm64", Some(name(arm_major, m))));
                }
            }
            if variant.starts_with("v8.") || variant.starts_with("v9.") {
                "v8".clone_into(&mut variant);
            }
            vector.extend(platform_vector(&with("arm", Some(variant))));
        }
        _ => {}
    }
    vector
}

/// A Windows `major.minor.build` version (`getWindowsOSVersion`), zero when unparsable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WindowsVersion {
    major: u8,
    minor: u8,
    build: u16,
}

/// Windows Server 2022 (ltsc2022), the first release of the stable container ABI.
const V21H2_SERVER: u16 = 20348;
/// Stable-ABI LTSC releases, ascending.
const COMPAT_LTSC_RELEASES: [u16; 1] = [V21H2_SERVER];

impl WindowsVersion {
    fn parse(v: &str) -> Self {
        if v.matches('.').count() < 2 {
            return Self::default();
        }
        let mut parts = v.split('.');
        let (Some(major), Some(minor), Some(build)) = (parts.next(), parts.next(), parts.next())
        else {
            return Self::default();
        };
        match (major.parse(), minor.parse(), build.parse()) {
            (Ok(major), Ok(minor), Ok(build)) => Self {
                major,
                minor,
                build,
            },
            _ => Self::default(),
        }
    }

    /// `windowsVersionMatcher.Match`: this (host) version runs an image of version `v`.
    fn matches(self, v: &str) -> bool {
        if self == Self::default() || v.is_empty() {
            return true;
        }
        let ctr = Self::parse(v);
        if self.major != ctr.major || self.minor != ctr.minor {
            return false;
        }
        if self.build < V21H2_SERVER {
            return self.build == ctr.build;
        }
        let supported = COMPAT_LTSC_RELEASES
            .iter()
            .rev()
            .find(|r| self.build >= **r)
            .copied()
            .unwrap_or(0);
        ctr.build >= supported && ctr.build <= self.build
    }
}
