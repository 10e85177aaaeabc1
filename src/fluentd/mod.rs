//! Reading Fluentd's `fluent.conf`, so users can run the relay on the config they have and
//! `convert` it to the relay's TOML.
//!
//! * [`parser`] (with [`scanner`], [`ruby`], [`mod@include`]): the v1 config language into a
//!   [`syntax::Document`], with file and line on everything, `@include` expanded, embedded
//!   Ruby's environment lookups mapped to `${X}`. Malformed input is a [`ParseError`] naming the
//!   file and line, never a panic (fuzzed: `fuzz/fuzz_targets/fluentd_config.rs`).
//! * [`convert`]: a parsed fluent.conf into the relay's TOML, with the report of what does
//!   not convert faithfully.
//! * [`types`]: parameter values read as Fluentd reads sizes, times, booleans and arrays.

pub mod convert;
pub mod error;
pub mod include;
pub mod parser;
pub mod ruby;
pub mod scanner;
pub mod syntax;
pub mod types;

pub use error::{ParseError, ParseErrorKind};
pub use parser::{parse_file, parse_str, Parsed};

/// True when `text` is written in Fluentd's config language rather than TOML: its first line
/// that is neither blank nor a comment opens a section (`<source>`) or includes a file
/// (`@include`). A TOML file starts with `key =` or `[table]` instead.
pub fn looks_like_fluent_conf(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| {
            l.starts_with('<') || l.starts_with("@include") || l.starts_with("include ")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fluent_conf_is_recognised_by_its_syntax() {
        assert!(looks_like_fluent_conf(
            "# fluentd\n\n<source>\n  @type forward\n</source>\n"
        ));
        assert!(looks_like_fluent_conf("@include conf.d/*.conf\n"));
        assert!(!looks_like_fluent_conf(
            "# relay\ndata_dir = \"/x\"\n[sources.a]\n"
        ));
        assert!(!looks_like_fluent_conf("[sources.a]\ntype = \"sample\"\n"));
        assert!(!looks_like_fluent_conf(""));
    }
}
