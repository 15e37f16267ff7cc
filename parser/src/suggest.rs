//! "did you mean X?" suggestions (BuildKit `util/suggest`): the closest option by Levenshtein
//! distance, if that distance is below 3.

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

/// Appends BuildKit's ` (did you mean X?)` to a message.
pub(crate) fn append(msg: &mut String, suggestion: &str) {
    msg.push_str(" (did you mean ");
    msg.push_str(suggestion);
    msg.push_str("?)");
}

/// The option closest to `val` (distance < 3), in `val`'s case when matching case-insensitively;
/// `None` when there is none or `val` matches an option exactly.
pub fn suggest(val: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let v = if case_sensitive {
        val.to_owned()
    } else {
        val.to_lowercase()
    };
    let mut best: Option<String> = None;
    let mut min = 3;
    for opt in options {
        let o = if case_sensitive {
            (*opt).to_owned()
        } else {
            opt.to_lowercase()
        };
        if v == o {
            return None;
        }
        let d = levenshtein(&v, &o);
        if d < min {
            min = d;
            best = Some(if case_sensitive {
                o
            } else if val == val.to_lowercase() {
                o.to_lowercase()
            } else if val == val.to_uppercase() {
                o.to_uppercase()
            } else {
                o
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("RUNN", &["RUN", "CMD"], false).as_deref(),
            Some("RUN")
        );
        assert_eq!(suggest("runn", &["RUN"], false).as_deref(), Some("run"));
        assert_eq!(suggest("XYZZY", &["RUN"], false), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
