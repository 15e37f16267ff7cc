//! Go-compatible string quoting (`strconv.Quote`), used by the BuildKit AST dump and by error
//! messages that BuildKit formats with `%q`.

pub use kiln_platform::go_quote;

/// Formats a list like Go's `fmt.Sprintf("%q", []string{...})`: `["a" "b"]`.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&go_quote(item));
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\0"), r#""\t\n\x00""#);
        assert_eq!(go_quote("한국어"), "\"한국어\"");
        assert_eq!(go_quote("\u{a0}"), r#""\u00a0""#);
        assert_eq!(
            go_quote_list(&["--a=b".into(), "--c".into()]),
            r#"["--a=b" "--c"]"#
        );
    }
}
