//! BuildKit's instruction flags (`BFlags`): declared per instruction as bool, string or
//! repeatable string; unknown, duplicate and malformed flags are errors with BuildKit's words.

use crate::suggest::suggest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    Bool,
    String,
    Strings,
}

#[derive(Debug, Clone)]
struct Flag {
    name: &'static str,
    kind: FlagKind,
    value: Option<String>,
    values: Vec<String>,
}

/// The flags given to one instruction, checked against the declared ones.
#[derive(Debug, Clone)]
pub(crate) struct Flags {
    flags: Vec<Flag>,
}

impl Flags {
    /// Parses `args` (`--name=value` words from the AST) against `decl`. An error names the
    /// index of the offending word.
    pub(crate) fn parse(
        args: &[String],
        decl: &[(&'static str, FlagKind)],
    ) -> Result<Flags, (usize, String)> {
        if args.is_empty() {
            return Ok(Flags { flags: Vec::new() });
        }
        let mut flags: Vec<Flag> = decl
            .iter()
            .map(|&(name, kind)| Flag {
                name,
                kind,
                value: None,
                values: Vec::new(),
            })
            .collect();
        for (index, a) in args.iter().enumerate() {
            let fail = |message: String| Err((index, message));
            if a == "--" {
                break;
            }
            let Some(body) = a.strip_prefix("--") else {
                return fail(format!("arg should start with -- : {a}"));
            };
            let (name, value, has_value) = match body.split_once('=') {
                Some((n, v)) => (n, v, true),
                None => (body, "", false),
            };
            let Some(flag) = flags.iter_mut().find(|f| f.name == name) else {
                let names: Vec<&str> = decl.iter().map(|d| d.0).collect();
                let mut msg = format!("unknown flag: {name}");
                if let Some(s) = suggest(name, &names, true) {
                    crate::suggest::append(&mut msg, &s);
                }
                return fail(msg);
            };
            let used = flag.value.is_some() || !flag.values.is_empty();
            if used && flag.kind != FlagKind::Strings {
                return fail(format!("duplicate flag specified: {name}"));
            }
            match flag.kind {
                FlagKind::Bool => {
                    if has_value && value.is_empty() {
                        return fail(format!("missing a value on flag: {name}"));
                    }
                    match value.to_ascii_lowercase().as_str() {
                        "true" | "" => flag.value = Some("true".to_owned()),
                        "false" => flag.value = Some("false".to_owned()),
                        _ => {
                            return fail(format!(
                                "expecting boolean value for flag {name}, not: {value}"
                            ));
                        }
                    }
                }
                FlagKind::String => {
                    if !has_value {
                        return fail(format!("missing a value on flag: {name}"));
                    }
                    flag.value = Some(value.to_owned());
                }
                FlagKind::Strings => {
                    if !has_value {
                        return fail(format!("missing a value on flag: {name}"));
                    }
                    flag.values.push(value.to_owned());
                }
            }
        }
        Ok(Flags { flags })
    }

    fn get(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }

    /// Moves a string flag's value out (`None` when not given; read each flag once).
    pub(crate) fn string(&mut self, name: &str) -> Option<String> {
        self.flags
            .iter_mut()
            .find(|f| f.name == name)
            .and_then(|f| f.value.take())
    }

    /// A bool flag: `None` when not given.
    pub(crate) fn bool_opt(&self, name: &str) -> Option<bool> {
        self.get(name)
            .and_then(|f| f.value.as_deref())
            .map(|v| v == "true")
    }

    /// A bool flag, false when not given.
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bool_opt(name).unwrap_or(false)
    }

    /// A repeatable flag's values in order.
    /// Moves the values out (each repeatable flag is read once).
    pub(crate) fn strings(&mut self, name: &str) -> Vec<String> {
        self.flags
            .iter_mut()
            .find(|f| f.name == name)
            .map(|f| std::mem::take(&mut f.values))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &[(&str, FlagKind)] = &[
        ("link", FlagKind::Bool),
        ("from", FlagKind::String),
        ("exclude", FlagKind::Strings),
    ];

    fn p(args: &[&str]) -> Result<Flags, String> {
        let v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Flags::parse(&v, DECL).map_err(|(_, e)| e)
    }

    #[test]
    fn values_and_errors() {
        let mut f = p(&["--link", "--from=a", "--exclude=x", "--exclude=y"]).unwrap();
        assert!(f.bool("link"));
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.strings("exclude"), ["x", "y"]);
        assert_eq!(
            p(&["--lnk"]).unwrap_err(),
            "unknown flag: lnk (did you mean link?)"
        );
        assert_eq!(
            p(&["--from=a", "--from=b"]).unwrap_err(),
            "duplicate flag specified: from"
        );
        assert_eq!(p(&["--from"]).unwrap_err(), "missing a value on flag: from");
        assert_eq!(
            p(&["--link="]).unwrap_err(),
            "missing a value on flag: link"
        );
        assert_eq!(
            p(&["--link=maybe"]).unwrap_err(),
            "expecting boolean value for flag link, not: maybe"
        );
        assert!(!p(&["--link=FALSE"]).unwrap().bool("link"));
    }
}
