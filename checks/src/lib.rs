//! BuildKit's Dockerfile build checks (`docker build --check`) for kiln: every rule of
//! BuildKit's `frontend/dockerfile/linter` with its exact name, description, URL and detail
//! text, raised where and when BuildKit's frontend raises it (which stages, which build
//! arguments, which target), and the `# check=` directive / `BUILDKIT_DOCKERFILE_CHECK`
//! build argument that skip rules, enable experimental ones or turn warnings into an error.
//!
//! It reads a Dockerfile through kiln-parser and knows nothing of building: base images and
//! the context's `.dockerignore` come in through the [`BaseImages`] and [`ContextIgnore`]
//! traits, so an editor or a CI bot can run the checks offline.
//!
//! ```
//! use kiln_checks::{CheckOptions, check};
//!
//! let report = check(b"FROM alpine as base\nCMD echo hi\n", &CheckOptions::default());
//! let found: Vec<_> = report.warnings.iter().map(|w| (w.rule.name, w.line())).collect();
//! assert_eq!(found, [("FromAsCasing", 1), ("JSONArgsRecommended", 2)]);
//! assert_eq!(report.warnings[0].detail, "'as' and 'FROM' keywords' casing do not match");
//! assert!(report.error.is_none());
//! ```

use std::fmt::Write as _;
mod config;
mod dispatch;
mod engine;
mod excerpt;
mod output;
mod platform;
mod reference;
pub mod rules;
mod suggest;

use std::collections::BTreeMap;

pub use config::{LintConfig, directive};
pub use excerpt::Excerpt;
pub use output::{lint_results_json, render_text, summary_line};
pub use platform::Platform;
pub use rules::Rule;

/// A position in the Dockerfile: 1-based line, character offset (0 when not known, as
/// BuildKit reports it for every check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// Character offset on the line.
    pub character: usize,
}

/// A range of lines in the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Range {
    /// First position.
    pub start: Position,
    /// Last position.
    pub end: Position,
}

impl Range {
    /// Whole lines `start..=end`.
    pub fn lines(start: usize, end: usize) -> Self {
        Range {
            start: Position {
                line: start,
                character: 0,
            },
            end: Position {
                line: end,
                character: 0,
            },
        }
    }
}

/// One check that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The rule.
    pub rule: &'static Rule,
    /// BuildKit's detail message, e.g. `Stage name 'Base' should be lowercase`.
    pub detail: String,
    /// Where (usually the instruction's lines).
    pub ranges: Vec<Range>,
}

impl Warning {
    /// The first line the warning points at (0 when it has no location).
    pub fn line(&self) -> usize {
        self.ranges.first().map_or(0, |r| r.start.line)
    }

    /// BuildKit's one-line form (`linter.LintFormatShort`), as a build prints it:
    /// `FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)`.
    pub fn short(&self) -> String {
        let mut s = format!("{}: {}", self.rule.name, self.detail);
        if self.line() > 0 {
            let _ = write!(s, " (line {})", self.line());
        }
        s
    }
}

/// Why the Dockerfile cannot be built (BuildKit's `buildError` of a lint request): it does
/// not parse, a FROM cannot be expanded, or `check=error=true` and a check fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// BuildKit's message, e.g. `lint violation found for rules: FromAsCasing`.
    pub message: String,
    /// Where, when known.
    pub ranges: Vec<Range>,
}

/// The outcome of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The warnings, in the order BuildKit raises them.
    pub warnings: Vec<Warning>,
    /// Set when the Dockerfile cannot be built; warnings found before it are kept.
    pub error: Option<BuildError>,
}

/// What the checks need to know of a base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// `Env` of the image config (`KEY=value`).
    pub env: Vec<String>,
    /// `Shell` of the image config.
    pub shell: Vec<String>,
    /// `ONBUILD` triggers of the image config.
    pub onbuild: Vec<String>,
    /// The platform of the image that was found.
    pub platform: Platform,
    /// Whether the image has layers (BuildKit treats a layerless image like `scratch`).
    pub has_layers: bool,
}

/// Looks up base images (`FROM name`, `COPY --from=name`) for the checks that need their
/// config. Return `None` when the image is unknown: the checks then assume an empty config,
/// as for `scratch`.
pub trait BaseImages {
    /// The image `name` (as written in the Dockerfile, after ARG expansion) for `platform`.
    fn resolve(&self, name: &str, platform: &Platform) -> Option<BaseImage>;
}

/// The build context's `.dockerignore`, for `CopyIgnoredFile`.
pub trait ContextIgnore {
    /// Whether a context path (slash-separated, cleaned) is excluded, or lies under an
    /// excluded directory (patternmatcher's `MatchesOrParentMatches`).
    fn is_excluded(&self, path: &str) -> bool;
    /// Whether some pattern re-includes paths (`!pattern`); the check is then skipped.
    fn has_exclusions(&self) -> bool;
    /// Whether a pattern `*`, `**` or `**/*` excludes every root entry.
    fn ignores_root(&self) -> bool;
}

/// How to run the checks.
#[derive(Default)]
pub struct CheckOptions<'a> {
    /// `--build-arg` values (`BUILDKIT_DOCKERFILE_CHECK` among them).
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// Dispatch every stage (what `kiln check` without `--target` does, like BuildKit's lint
    /// request) instead of only those the target needs (what a build reports).
    pub all_stages: bool,
    /// Base image lookup; `None` treats every image as unknown.
    pub base_images: Option<&'a dyn BaseImages>,
    /// The context's `.dockerignore`; `None` disables `CopyIgnoredFile`.
    pub ignore: Option<&'a dyn ContextIgnore>,
}

impl std::fmt::Debug for CheckOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions")
            .field("build_args", &self.build_args)
            .field("target", &self.target)
            .field("all_stages", &self.all_stages)
            .field("base_images", &self.base_images.is_some())
            .field("ignore", &self.ignore.is_some())
            .finish()
    }
}

/// Runs every check over a Dockerfile's bytes.
pub fn check(source: &[u8], opts: &CheckOptions<'_>) -> Report {
    engine::check(source, opts)
}
