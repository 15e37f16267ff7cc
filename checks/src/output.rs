//! The two ways results are shown: BuildKit's `LintResults` JSON (what
//! `docker buildx build --call=check,format=json` prints) and the text of
//! `docker build --check` (`LintResults.PrintTo`: one `WARNING:` block per warning with the
//! Dockerfile excerpt).

use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

use crate::{Excerpt, Range, Report};

fn position(line: usize, character: usize) -> Value {
    // Protobuf JSON leaves out zero values.
    let mut m = Map::new();
    if line != 0 {
        m.insert("line".into(), line.into());
    }
    if character != 0 {
        m.insert("character".into(), character.into());
    }
    Value::Object(m)
}

fn location(ranges: &[Range]) -> Value {
    let mut m = Map::new();
    if !ranges.is_empty() {
        let r: Vec<Value> = ranges
            .iter()
            .map(|r| {
                json!({
                    "start": position(r.start.line, r.start.character),
                    "end": position(r.end.line, r.end.character),
                })
            })
            .collect();
        m.insert("ranges".into(), Value::Array(r));
    }
    Value::Object(m)
}

/// The `LintResults` document for `report` over the Dockerfile `source` named `filename`.
pub fn lint_results_json(report: &Report, filename: &str, source: &[u8]) -> Value {
    let warnings: Vec<Value> = report
        .warnings
        .iter()
        .map(|w| {
            let mut m = Map::new();
            m.insert("ruleName".into(), w.rule.name.into());
            m.insert("description".into(), w.rule.description.into());
            if !w.rule.url.is_empty() {
                m.insert("url".into(), w.rule.url.into());
            }
            if !w.detail.is_empty() {
                m.insert("detail".into(), w.detail.clone().into());
            }
            m.insert("location".into(), location(&w.ranges));
            Value::Object(m)
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("warnings".into(), Value::Array(warnings));
    doc.insert(
        "sources".into(),
        json!([{
            "filename": filename,
            "language": "Dockerfile",
            "data": base64::engine::general_purpose::STANDARD.encode(source),
        }]),
    );
    if let Some(e) = &report.error {
        doc.insert(
            "buildError".into(),
            json!({"message": e.message, "location": location(&e.ranges)}),
        );
    }
    Value::Object(doc)
}

/// BuildKit's source excerpt (`errdefs.Source.Print`) of the lines of `ranges`, as
/// `docker build --check` prints it (with the blank line after a trailing newline).
fn excerpt(out: &mut String, filename: &str, text: &str, ranges: &[Range]) {
    let marked: Vec<(usize, usize)> = ranges.iter().map(|r| (r.start.line, r.end.line)).collect();
    let excerpt = Excerpt {
        name: filename,
        text,
        marked: &marked,
        column: None,
        trim_blank_tail: false,
    };
    if let Some(e) = excerpt.render() {
        out.push_str(&e);
    }
}

/// The text `docker build --check` prints for `report`: warnings sorted by line, each with
/// its excerpt, then the error if there is one.
pub fn render_text(report: &Report, filename: &str, source: &[u8]) -> String {
    let text = String::from_utf8_lossy(source);
    let mut warnings: Vec<_> = report.warnings.iter().collect();
    warnings.sort_by_key(|w| (w.ranges.is_empty(), w.line()));
    let mut out = String::new();
    for w in warnings {
        let _ = write!(out, "\nWARNING: {}", w.rule.name);
        if !w.rule.url.is_empty() {
            let _ = write!(out, " - {}", w.rule.url);
        }
        let _ = write!(out, "\n{}\n", w.detail);
        excerpt(&mut out, filename, &text, &w.ranges);
    }
    if let Some(e) = &report.error {
        out.push('\n');
        out.push_str(&e.message);
        out.push('\n');
        excerpt(&mut out, filename, &text, &e.ranges);
    }
    out
}

/// The count line buildx prints before the warnings of a check run.
pub fn summary_line(report: &Report) -> String {
    match report.warnings.len() {
        0 => "Check complete, no warnings found.".to_owned(),
        1 => "Check complete, 1 warning has been found!".to_owned(),
        n => format!("Check complete, {n} warnings have been found!"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckOptions, check};

    #[test]
    fn json_omits_zero_values_like_protobuf() {
        let src = b"FROM scratch as base\n";
        let r = check(src, &CheckOptions::default());
        let v = lint_results_json(&r, "Dockerfile", src);
        assert_eq!(
            v["warnings"][0]["location"].to_string(),
            r#"{"ranges":[{"end":{"line":1},"start":{"line":1}}]}"#
        );
        assert_eq!(v["warnings"][0]["ruleName"], "FromAsCasing");
        assert_eq!(v["sources"][0]["data"], "RlJPTSBzY3JhdGNoIGFzIGJhc2UK");
        assert!(v.get("buildError").is_none());
    }

    #[test]
    fn text_has_buildkit_excerpt() {
        let src = b"FROM scratch\nCOPY a b\nCMD x\n";
        let r = check(src, &CheckOptions::default());
        let t = render_text(&r, "Dockerfile", src);
        assert_eq!(
            t,
            "\nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
             JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
             Dockerfile:3\n--------------------\n   1 |     FROM scratch\n   2 |     COPY a b\n   3 | >>> CMD x\n   4 |     \n--------------------\n"
        );
        assert_eq!(
            summary_line(&r),
            "Check complete, 1 warning has been found!"
        );
    }
}
