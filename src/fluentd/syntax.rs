//! What the parser produces: directives (`<source>`, `<match app.**>`…) with their parameters,
//! every piece tagged with the file and line it came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place in a configuration file: which file (after `@include`) and which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// The file, as it was named (the top file as given, included files as resolved).
    pub file: Arc<PathBuf>,
    /// 1-based line number.
    pub line: u32,
}

impl Pos {
    /// A position in `file`.
    pub fn new(file: &Arc<PathBuf>, line: u32) -> Self {
        Pos {
            file: Arc::clone(file),
            line,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One piece of a parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text as written (escapes already applied).
    Text(String),
    /// An environment variable read by embedded Ruby (`"#{ENV['X']}"`), with the default Ruby
    /// would fall back to, if any.
    Env {
        /// Variable name.
        name: String,
        /// Value when the variable is unset.
        default: Option<String>,
    },
    /// Embedded Ruby the relay cannot evaluate (`"#{Time.now}"`), as written between `#{` and
    /// `}`.
    Ruby(String),
}

/// How a value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// Bare text up to the end of the line (or an empty value: `key` alone).
    Bare,
    /// `'…'`: no escapes but `\'` and `\\`, no embedded Ruby.
    Single,
    /// `"…"`: escapes and embedded Ruby.
    Double,
    /// A JSON array or object, possibly over several lines; the text is the JSON.
    Json,
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Its pieces, in order (one `Text` for most values).
    pub segments: Vec<Segment>,
    /// How it was written.
    pub quoting: Quoting,
}

impl Value {
    /// A plain text value.
    pub fn text(text: impl Into<String>, quoting: Quoting) -> Self {
        Value {
            segments: vec![Segment::Text(text.into())],
            quoting,
        }
    }

    /// The value's text when it holds no embedded Ruby.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Env { .. } | Segment::Ruby(_) => return None,
            }
        }
        Some(out)
    }

    /// True when some embedded Ruby could not be mapped to an environment variable.
    pub fn unsupported_ruby(&self) -> Option<&str> {
        self.segments.iter().find_map(|s| match s {
            Segment::Ruby(code) => Some(code.as_str()),
            _ => None,
        })
    }

    /// The value in the relay's interpolation syntax: literal `$` doubled, environment
    /// variables as `${X}` / `${X:-default}`. `None` when it holds unsupported Ruby.
    ///
    /// Fluentd's chunk placeholders `${tag}` and `${tag[N]}` are left as they are: the relay
    /// reads them as placeholders too, not as environment variables.
    pub fn to_relay_string(&self) -> Option<String> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => escape_dollars(t, &mut out),
                Segment::Env { name, default } => {
                    out.push_str("${");
                    out.push_str(name);
                    if let Some(d) = default {
                        out.push_str(":-");
                        out.push_str(d);
                    }
                    out.push('}');
                }
                Segment::Ruby(_) => return None,
            }
        }
        Some(out)
    }
}

/// Doubles every `$` of `text` except those starting a chunk placeholder (`${tag}`,
/// `${tag[N]}`), which the relay keeps as written.
fn escape_dollars(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        match crate::primitives::interpolate::placeholder_len(after) {
            Some(len) => {
                out.push_str(&after[..len]);
                rest = &after[len..];
            }
            None => {
                out.push_str("$$");
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
}

/// `key value` inside a directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The key (`@type`, `flush_interval`…).
    pub key: String,
    /// The value (empty text for a key written alone).
    pub value: Value,
    /// Where it was written.
    pub pos: Pos,
}

/// A section: `<name arg> … </name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `source`, `match`, `buffer`…
    pub name: String,
    /// What follows the name in the opening tag (`app.**`, `@mainstream`), trimmed.
    pub arg: String,
    /// Where the opening tag is.
    pub pos: Pos,
    /// Parameters, in file order. A key written twice keeps both entries; the last wins, as
    /// in Fluentd.
    pub params: Vec<Param>,
    /// Nested sections, in file order.
    pub children: Vec<Directive>,
}

impl Directive {
    /// The last value given for `key`.
    pub fn param(&self, key: &str) -> Option<&Param> {
        self.params.iter().rev().find(|p| p.key == key)
    }

    /// The `@type` as written, if any.
    pub fn plugin_type(&self) -> Option<String> {
        self.param("@type").and_then(|p| p.value.literal())
    }

    /// A short description for messages: `<match app.**>`, `<buffer>`.
    pub fn describe(&self) -> String {
        if self.arg.is_empty() {
            format!("<{}>", self.name)
        } else {
            format!("<{} {}>", self.name, self.arg)
        }
    }
}

/// A whole configuration: the top level of the main file with every `@include` expanded in
/// place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Parameters at the top level (Fluentd ignores them; kept to report them).
    pub params: Vec<Param>,
    /// Top-level directives in file order.
    pub directives: Vec<Directive>,
}

/// Something worth telling the user that does not stop parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub pos: Pos,
    /// What, in a sentence.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_strings_double_dollars_but_keep_placeholders_and_map_env() {
        let v = Value {
            segments: vec![
                Segment::Text("cost $5 logs-${tag}-${tag[1]}-".into()),
                Segment::Env {
                    name: "STREAM".into(),
                    default: Some("x".into()),
                },
                Segment::Text("${HOME}".into()),
            ],
            quoting: Quoting::Double,
        };
        assert_eq!(
            v.to_relay_string().unwrap(),
            "cost $$5 logs-${tag}-${tag[1]}-${STREAM:-x}$${HOME}"
        );
        assert_eq!(v.literal(), None);
    }
}
