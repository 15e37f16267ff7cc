//! Which rules run and whether a warning fails the build: the `# check=` parser directive and
//! the `BUILDKIT_DOCKERFILE_CHECK` build argument, read as BuildKit's `linter.ParseLintOptions`
//! reads them (the build argument, when given, replaces the directive entirely).

use std::collections::BTreeSet;

use crate::rules::Rule;

/// The parsed `check` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: a warning fails the build.
    pub error: bool,
}

impl LintConfig {
    /// Parses a `check` value such as `skip=A,B;error=true` (`ParseLintOptions`); the error is
    /// BuildKit's message.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let mut cfg = LintConfig::default();
        if value.is_empty() {
            return Ok(cfg);
        }
        // Go's strings.SplitN(s, ";", 3).
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", crate::rules::go_q(part)));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        cfg.skip_all = true;
                    } else {
                        cfg.skip = v.split(',').map(|r| r.trim().to_owned()).collect();
                    }
                }
                "experimental" => {
                    let v = v.trim();
                    if v == "all" {
                        cfg.experimental_all = true;
                    } else {
                        cfg.experimental = v.split(',').map(|r| r.trim().to_owned()).collect();
                    }
                }
                "error" => {
                    cfg.error = parse_go_bool(v.trim()).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            crate::rules::go_q(part),
                            crate::rules::go_q(v.trim())
                        )
                    })?;
                }
                other => {
                    return Err(format!(
                        "invalid check option {}",
                        crate::rules::go_q(other)
                    ));
                }
            }
        }
        Ok(cfg)
    }

    /// Whether `rule` runs under this configuration (`Linter.Run`): an experimental rule only
    /// when enabled, whatever `skip` says; any other rule unless skipped.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The value of the parser directive `name` (`# name=value` in the leading comment block),
/// as BuildKit's `parser.ParseDirective` finds it; works on files that do not parse.
pub fn directive(source: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(source);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(rest) = line.strip_prefix('#') else {
            break;
        };
        let rest = rest.trim_start();
        let key_len = rest
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(rest.len(), |(i, _)| i);
        if key_len == 0 {
            break;
        }
        let (key, after) = rest.split_at(key_len);
        let Some(value) = after.trim_start().strip_prefix('=') else {
            break;
        };
        let value = value.trim();
        if value.is_empty() {
            break;
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(value.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;

    #[test]
    fn parses_skip_error_and_experimental() {
        let c = LintConfig::parse("skip=A, B;error=true").unwrap();
        assert_eq!(c.skip.iter().cloned().collect::<Vec<_>>(), ["A", "B"]);
        assert!(c.error && !c.skip_all);
        let c = LintConfig::parse(" skip=all;experimental=CopyIgnoredFile ").unwrap();
        assert!(c.skip_all);
        assert!(c.enabled(&rules::COPY_IGNORED_FILE));
        assert!(!c.enabled(&rules::FROM_AS_CASING));
        assert!(!c.enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
        assert!(LintConfig::default().enabled(&rules::FROM_AS_CASING));
        assert!(!LintConfig::default().enabled(&rules::COPY_IGNORED_FILE));
    }

    #[test]
    fn rejects_bad_options_with_buildkit_messages() {
        assert_eq!(
            LintConfig::parse("nope").unwrap_err(),
            "invalid check option \"nope\""
        );
        assert_eq!(
            LintConfig::parse("foo=bar").unwrap_err(),
            "invalid check option \"foo\""
        );
        assert!(
            LintConfig::parse("error=maybe")
                .unwrap_err()
                .starts_with("failed to parse check option \"error=maybe\"")
        );
    }

    #[test]
    fn directive_only_in_leading_comments() {
        assert_eq!(
            directive(b"#check=skip=all\nFROM a\n", "check").as_deref(),
            Some("skip=all")
        );
        assert_eq!(
            directive(b"# syntax=x\n# check = error=true\nFROM a\n", "check").as_deref(),
            Some("error=true")
        );
        assert_eq!(directive(b"FROM a\n# check=error=true\n", "check"), None);
        assert_eq!(directive(b"# hello\n# check=error=true\n", "check"), None);
    }
}
