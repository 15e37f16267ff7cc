//! "did you mean X?" (BuildKit `util/suggest.Search`): the closest option by Levenshtein
//! distance, if that distance is below 3; nothing when `val` is itself an option.

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The option closest to `val` (case-sensitive), if any is closer than 3 edits.
pub(crate) fn search<'a>(val: &str, options: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best = None;
    let mut min = 3;
    for opt in options {
        if opt == val {
            return None;
        }
        let d = levenshtein(val, opt);
        if d < min {
            min = d;
            best = Some(opt.to_owned());
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_below_three() {
        assert_eq!(
            search("DIR_ASSET", ["DIR_BINARIES", "DIR_ASSETS", "PATH"]).as_deref(),
            Some("DIR_ASSETS")
        );
        assert_eq!(search("PAHT", ["PATH"]).as_deref(), Some("PATH"));
        assert_eq!(search("foo", ["PATH"]), None);
        assert_eq!(search("PATH", ["PATH", "PAT"]), None);
    }
}
