//! Why a fluent.conf cannot be read. Every error names the file and line; `main` turns it into
//! exit status 2.

use std::path::PathBuf;

use super::syntax::Pos;

/// A fluent.conf that cannot be parsed, with where.
#[derive(Debug, thiserror::Error)]
#[error("{pos}: {kind}")]
pub struct ParseError {
    /// Where the problem was found.
    pub pos: Pos,
    /// What it is.
    pub kind: ParseErrorKind,
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ParseErrorKind {
    /// The file ended inside a section.
    #[error("`<{name}>` opened at line {opened_line} is never closed (expected `</{name}>` before the end of the file)")]
    Unclosed {
        /// The section name.
        name: String,
        /// Line of its opening tag.
        opened_line: u32,
    },
    /// `</x>` that does not close the innermost open section.
    #[error("{}", unmatched(found, expected.as_deref()))]
    UnmatchedEnd {
        /// The name in the end tag.
        found: String,
        /// The section that is open, if any.
        expected: Option<String>,
    },
    /// Something else than what the grammar allows here.
    #[error("expected {0}")]
    Expected(&'static str),
    /// A quoted string that does not end.
    #[error("unterminated {0}-quoted string (a quoted value must end on the line it starts on unless every line but the last ends inside double quotes)")]
    UnterminatedString(&'static str),
    /// `\x` with a letter or digit Fluentd does not know.
    #[error("unknown escape `\\{0}` in a double-quoted string (Fluentd knows \\n \\t \\r \\f \\b \\0 and escaped symbols)")]
    BadEscape(char),
    /// `#{` without its `}`.
    #[error("embedded Ruby `#{{` is never closed with `}}`")]
    UnterminatedRuby,
    /// A JSON array or hash value that does not parse.
    #[error("invalid JSON {what} value: {source}")]
    Json {
        /// `array` or `hash`.
        what: &'static str,
        /// serde_json's reason.
        #[source]
        source: serde_json::Error,
    },
    /// `@foo` where only Fluentd's own `@type`, `@id`, `@label`, `@log_level` may be.
    #[error("`{0}`: `@` is reserved for Fluentd's own parameters (@type, @id, @label, @log_level, @include)")]
    ReservedPrefix(String),
    /// `@include` of a file that does not exist.
    #[error("`@include {pattern}`: no such file ({resolved})")]
    IncludeNotFound {
        /// As written.
        pattern: String,
        /// Resolved against the including file's directory.
        resolved: String,
    },
    /// `@include` of something that is not a local file.
    #[error("`@include {0}`: only local files can be included (no URLs)")]
    IncludeRemote(String),
    /// A glob pattern the glob library refuses.
    #[error("`@include {pattern}`: invalid pattern: {reason}")]
    IncludePattern {
        /// As written.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A file that includes itself, directly or not.
    #[error("`@include` loop: {}", chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" includes "))]
    IncludeLoop {
        /// The files of the loop, the first again at the end.
        chain: Vec<PathBuf>,
    },
    /// A file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that are not UTF-8 (Fluentd reads configs as UTF-8).
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    /// Sections or includes nested deeper than any real config does.
    #[error("nested more than {0} levels deep")]
    TooDeep(usize),
    /// More data than any real config has.
    #[error("{0}")]
    TooLarge(String),
}

fn unmatched(found: &str, expected: Option<&str>) -> String {
    match expected {
        Some(open) => format!("`</{found}>` does not match the open `<{open}>`"),
        None => format!("`</{found}>` closes no open section"),
    }
}
