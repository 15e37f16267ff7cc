//! The crate's error type, worded as containerd's `platforms.Parse` words its errors (Go's `%q`
//! quoting included), so a message matches what docker and BuildKit print.

use crate::quote::go_quote;

/// A platform specifier that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The specifier holds a `*`.
    #[error("{}: wildcards not yet supported: invalid argument", go_quote(.specifier))]
    Wildcard {
        /// The specifier as given.
        specifier: String,
    },
    /// The first component is not `os[(version[+feature]*)]`.
    #[error(
        "{} is an invalid OS component of {}: OSAndVersion specifier component must match {}: invalid argument",
        go_quote(.component), go_quote(.specifier), go_quote(OS_RE)
    )]
    InvalidOsComponent {
        /// The component.
        component: String,
        /// The specifier as given.
        specifier: String,
    },
    /// An OS version or feature holds a bad `%` escape.
    #[error("{} has an invalid OS {what} {}: invalid URL escape {}", go_quote(.specifier), go_quote(.value), go_quote(.escape))]
    InvalidOsOption {
        /// The specifier as given.
        specifier: String,
        /// `version` or `feature`.
        what: &'static str,
        /// The encoded value.
        value: String,
        /// The bad escape (`%zz`).
        escape: String,
    },
    /// An architecture or variant component has characters outside `[A-Za-z0-9_.-]`.
    #[error(
        "{} is an invalid component of {}: platform specifier component must match {}: invalid argument",
        go_quote(.component), go_quote(.specifier), go_quote(SPECIFIER_RE)
    )]
    InvalidComponent {
        /// The component.
        component: String,
        /// The specifier as given.
        specifier: String,
    },
    /// A single component that is neither a known OS nor a known architecture.
    #[error("{}: unknown operating system or architecture: invalid argument", go_quote(.specifier))]
    UnknownOsOrArch {
        /// The specifier as given.
        specifier: String,
    },
    /// More than three components.
    #[error("{}: cannot parse platform specifier: invalid argument", go_quote(.specifier))]
    CannotParse {
        /// The specifier as given.
        specifier: String,
    },
}

/// containerd's `specifierRe`, as its error messages print it.
pub(crate) const SPECIFIER_RE: &str = "^[A-Za-z0-9_.-]+$";
/// containerd's `osRe`, as its error messages print it.
pub(crate) const OS_RE: &str =
    r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$";
