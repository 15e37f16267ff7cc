//! Go's `path.Clean`, the normal form BuildKit and moby give slash-separated Dockerfile and
//! context paths (`.dockerignore` patterns, COPY sources in the checks).

/// Go's `path.Clean` for slash-separated paths: repeated and trailing slashes, `.` and
/// `name/..` removed lexically; `..` above a rooted path dropped; `.` for an empty result.
///
/// ```
/// assert_eq!(kiln_parser::clean_path("./a//b/../c/"), "a/c");
/// assert_eq!(kiln_parser::clean_path("/../x"), "/x");
/// ```
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn go_clean() {
        for (a, b) in [
            ("", "."),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("a//b/./c/", "a/b/c"),
            ("/", "/"),
            ("./", "."),
            ("build/", "build"),
        ] {
            assert_eq!(clean_path(a), b, "clean({a:?})");
        }
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_path("./a//b/../c/"), "a/c");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("."), ".");
        assert_eq!(clean_path("/../x"), "/x");
    }
}
