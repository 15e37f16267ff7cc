//! "did you mean X?" (BuildKit `util/suggest.Search`): the closest option by Levenshtein
//! distance, if that distance is below 3; nothing when `val` is itself an option.

/// The option closest to `val` (case-sensitive), if any is closer than 3 edits: the parser's
/// search (one implementation for the parser's messages and the checks' details).
pub(crate) fn search<'a>(val: &str, options: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let options: Vec<&str> = options.into_iter().collect();
    kiln_parser::suggest(val, &options, true)
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
