//! A parsed fluent.conf ([`Document`](super::syntax::Document)) into the relay's TOML, with a report of everything that
//! could not be converted faithfully.
//!
//! The rules, per directive (the README's "Coming from Fluentd" table says the same):
//!
//! * `<source>`: `forward` (module `source`: `port`/`bind`, limits, `<security>` with `<user>` and
//!   `<client>`, `<transport tls>`) and `sample` (old name `dummy`).
//! * `<filter>`: `stdout`.
//! * `<match>`: `kinesis_firehose` (module `output`: every fluent-plugin-kinesis parameter that has
//!   a meaning here, credentials sections, `<format>`, `<buffer>`), `file`, `stdout`.
//! * `<label @NAME>`: its filters and outputs get `label = "@NAME"` (the relay's labels route
//!   like Fluentd's); `<label @FLUENT_LOG>` and `<match fluent.**>` (Fluentd's own logs) and
//!   `<system>` are reported.
//! * `<buffer>` (module `buffer`): every parameter the relay has, same name and meaning; `path` of
//!   a file buffer becomes the relay's `data_dir` (one database for all outputs). The chunk keys
//!   `tag` and `time` become `chunk_keys` with `timekey*`, and `flush_mode` takes Fluentd's
//!   default for them; record-field chunk keys are reported. Placeholders in stream names
//!   (`${tag}`, `${tag[N]}`, strftime) convert when their chunk key is there; without it
//!   Fluentd would send to a stream literally named so, which is reported.
//!
//! What is reported is a [`Finding`] (file, line, why, what to do instead): a conversion with
//! findings is not faithful, and `convert` exits 1, `run`/`check` refuse it. What converts with
//! a difference worth knowing but no change to where records go is a warning.
//!
//! Parameters left out of the fluent.conf take the relay's defaults, not Fluentd's; where they
//! differ in a way that matters (buffer type, `flush_at_shutdown`, chunk sizes) a warning says
//! so.

mod buffer;
mod credentials;
mod kinesis;
mod output;
mod params;
mod render;
mod source;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::syntax::{Directive, Pos, Warning};
use super::{ParseError, Parsed};
use params::Params;
use render::Section;

/// Why something was not converted faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A plugin (`@type`) or section the relay does not have.
    UnsupportedPlugin,
    /// A parameter the relay has no equivalent for.
    UnsupportedParameter,
    /// The relay has the parameter or feature, but it would behave differently.
    DifferentSemantics,
    /// A value that is not of its type, or out of the relay's range.
    InvalidValue,
}

impl Why {
    /// Short text for the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::UnsupportedPlugin => "unsupported plugin",
            Why::UnsupportedParameter => "unsupported parameter",
            Why::DifferentSemantics => "different semantics",
            Why::InvalidValue => "invalid value",
        }
    }
}

/// One directive or parameter that was not converted faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where it is written.
    pub pos: Pos,
    /// What: `<match fluent.**>`, `ssl_verify_peer`…
    pub subject: String,
    /// Why.
    pub why: Why,
    /// The explanation.
    pub reason: String,
    /// What to do instead.
    pub advice: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}; {}",
            self.pos,
            self.subject,
            self.why.as_str(),
            self.reason,
            self.advice
        )
    }
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The relay's TOML, with a comment above each section naming its fluent.conf line. Holds
    /// everything that converted, also when there are findings.
    pub toml: String,
    /// What was not converted faithfully; empty when the TOML is equivalent.
    pub findings: Vec<Finding>,
    /// Differences worth knowing that do not change where records go (parser warnings too).
    pub warnings: Vec<Warning>,
}

impl Conversion {
    /// True when everything converted faithfully.
    pub fn is_faithful(&self) -> bool {
        self.findings.is_empty()
    }

    /// The findings, one per line, for stderr or an error message.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{} part(s) of the fluent.conf cannot be converted faithfully:\n",
            self.findings.len()
        );
        for f in &self.findings {
            out.push_str("  ");
            out.push_str(&f.to_string());
            out.push('\n');
        }
        out
    }
}

/// Why a fluent.conf could not be read at all.
pub type ReadError = ParseError;

/// Parses `path` (with its includes) and converts it.
pub fn convert_file(path: &Path) -> Result<Conversion, ReadError> {
    let parsed = super::parse_file(&super::include::FsLoader, path)?;
    Ok(convert(&parsed))
}

/// Converts a parsed configuration.
pub fn convert(parsed: &Parsed) -> Conversion {
    let mut cx = Cx::default();
    let name = parsed
        .files
        .first()
        .map_or_else(|| PathBuf::from("fluent.conf"), Clone::clone);
    for p in &parsed.document.params {
        cx.finding(
            &p.pos,
            &p.key,
            Why::UnsupportedParameter,
            "a parameter outside any section; Fluentd ignores it",
            "remove it",
        );
    }
    for d in &parsed.document.directives {
        cx.top_directive(d);
    }
    // In reading order: files as they were included, lines within each.
    let file_rank = |pos: &Pos| {
        parsed
            .files
            .iter()
            .position(|f| f.as_path() == pos.path())
            .unwrap_or(usize::MAX)
    };
    cx.findings.sort_by_key(|f| (file_rank(&f.pos), f.pos.line));
    let mut warnings = parsed.warnings.clone();
    warnings.append(&mut cx.warnings);
    Conversion {
        toml: cx.render(&name),
        findings: cx.findings,
        warnings,
    }
}

/// The conversion in progress.
#[derive(Default)]
struct Cx {
    sections: Vec<Section>,
    names: BTreeSet<String>,
    findings: Vec<Finding>,
    warnings: Vec<Warning>,
    /// `data_dir`, from the first file buffer's `path`, with where it was written.
    data_dir: Option<(String, Pos)>,
}

impl Cx {
    fn finding(&mut self, pos: &Pos, subject: &str, why: Why, reason: &str, advice: &str) {
        self.findings.push(Finding {
            pos: pos.clone(),
            subject: subject.to_owned(),
            why,
            reason: reason.to_owned(),
            advice: advice.to_owned(),
        });
    }

    /// The children of `d`, with every repeat of a single-valued section (one of `single`)
    /// reported and left out. Fluentd refuses such a section written twice in one directive,
    /// and two would make one TOML table twice; the first is the one converted.
    fn without_repeats<'d>(&mut self, d: &'d Directive, single: &[&str]) -> Vec<&'d Directive> {
        let mut seen: Vec<&str> = Vec::new();
        let mut kept = Vec::with_capacity(d.children.len());
        for c in &d.children {
            let name = c.name.as_str();
            if single.contains(&name) {
                if seen.contains(&name) {
                    self.finding(
                        &c.pos,
                        &c.describe(),
                        Why::InvalidValue,
                        &format!("<{name}> is given more than once here; Fluentd refuses that"),
                        "keep one",
                    );
                    continue;
                }
                seen.push(name);
            }
            kept.push(c);
        }
        kept
    }

    fn warn(&mut self, pos: &Pos, message: impl Into<String>) {
        self.warnings.push(Warning {
            pos: pos.clone(),
            message: message.into(),
        });
    }

    /// A unique component name: the `@id` if given (made a valid lowercase key), else the
    /// plugin type.
    fn name(&mut self, d: &Directive, fallback: &str) -> String {
        let wanted = d
            .param("@id")
            .and_then(|p| p.value.literal())
            .map(|id| sanitize(&id))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| sanitize(fallback));
        let mut name = wanted.clone();
        let mut n = 2;
        while !self.names.insert(name.clone()) {
            name = format!("{wanted}_{n}");
            n += 1;
        }
        name
    }

    fn top_directive(&mut self, d: &Directive) {
        match d.name.as_str() {
            "source" => self.source(d),
            "filter" => self.filter(d, None),
            "match" => self.output(d, None),
            "label" => self.label(d),
            "system" => self.system(d),
            _ => self.finding(
                &d.pos,
                &d.describe(),
                Why::UnsupportedPlugin,
                "not a directive the relay knows",
                "remove it",
            ),
        }
    }

    fn label(&mut self, d: &Directive) {
        let label = d.arg.trim();
        if label == "@FLUENT_LOG" {
            self.finding(
                &d.pos,
                &d.describe(),
                Why::UnsupportedPlugin,
                "Fluentd's own log events; the relay has none (it logs to stderr, and reports through /metrics and /status)",
                "remove the section; collect the relay's stderr like any container log",
            );
            return;
        }
        if !label.starts_with('@') || label.len() < 2 {
            self.finding(
                &d.pos,
                &d.describe(),
                Why::InvalidValue,
                "a label name starts with `@`",
                "name it like `<label @mainstream>`",
            );
            return;
        }
        if label == crate::pipeline::ERROR_LABEL {
            self.warn(
                &d.pos,
                "<label @ERROR>: the relay sends here the records an output cannot format (e.g. a missing data_key); records Firehose refuses are retried, then dead-lettered, as with Fluentd's buffer retries",
            );
        }
        for p in &d.params {
            self.finding(
                &p.pos,
                &p.key,
                Why::UnsupportedParameter,
                "parameters of a <label> have no meaning",
                "remove it",
            );
        }
        for child in &d.children {
            match child.name.as_str() {
                "filter" => self.filter(child, Some(label)),
                "match" => self.output(child, Some(label)),
                _ => self.finding(
                    &child.pos,
                    &child.describe(),
                    Why::UnsupportedPlugin,
                    "only <filter> and <match> can be inside a <label>",
                    "move it out of the label",
                ),
            }
        }
    }

    fn system(&mut self, d: &Directive) {
        if d.params.is_empty() && d.children.is_empty() {
            return;
        }
        for p in &d.params {
            let advice = match p.key.as_str() {
                "log_level" => "set RUST_LOG (e.g. RUST_LOG=info) instead",
                "workers" => "remove it: the relay is one process using every core it is given; scale with replicas",
                "root_dir" => "remove it: set data_dir in the relay's TOML (or a buffer path)",
                "log" | "format" => "remove it: set log_format = \"json\" in the relay's TOML for JSON logs",
                _ => "remove it",
            };
            self.finding(
                &p.pos,
                &format!("<system> {}", p.key),
                Why::UnsupportedParameter,
                "Fluentd's process settings have no equivalent in the relay",
                advice,
            );
        }
        for c in &d.children {
            self.finding(
                &c.pos,
                &format!("<system> {}", c.describe()),
                Why::UnsupportedParameter,
                "Fluentd's process settings have no equivalent in the relay",
                "remove it (log format: log_format in the relay's TOML; level: RUST_LOG)",
            );
        }
    }

    fn filter(&mut self, d: &Directive, label: Option<&str>) {
        let mut ps = Params::new(d);
        let ty = ps.plugin_type();
        match ty.as_deref() {
            Some("stdout") => {}
            other => {
                self.unsupported_plugin(d, other, "filter", "stdout");
                return;
            }
        }
        let name = self.name(d, "stdout_filter");
        let mut sec = Section::new(&d.pos, d.describe(), format!("filters.{name}"));
        sec.string("type", "stdout");
        sec.string("match", match_pattern(d));
        if let Some(l) = label {
            sec.string("label", l);
        }
        self.common_params(&mut ps);
        for c in &d.children {
            self.finding(
                &c.pos,
                &c.describe(),
                Why::UnsupportedParameter,
                "the stdout filter prints Fluentd's default line format only",
                "remove the section",
            );
        }
        self.leftovers(&ps, "the stdout filter has no parameters");
        self.sections.push(sec);
    }

    /// `@log_level` (a warning) and `@label` outside sources (reported).
    fn common_params(&mut self, ps: &mut Params<'_>) {
        if let Some(p) = ps.take("@log_level") {
            self.warn(
                &p.pos,
                "@log_level is not converted: the relay's log level is set for the whole process with RUST_LOG",
            );
        }
        if let Some(p) = ps.take("@label") {
            self.finding(
                &p.pos,
                "@label",
                Why::UnsupportedParameter,
                "only a <source> (and Fluentd's relabel output) can send events to a label",
                "move the label to the source",
            );
        }
    }

    fn unsupported_plugin(&mut self, d: &Directive, ty: Option<&str>, kind: &str, supported: &str) {
        let (subject, reason) = match ty {
            Some(t) => (
                format!("{} @type {t}", d.describe()),
                format!("the relay has no {kind} plugin `{t}`"),
            ),
            None => (d.describe(), format!("the {kind} has no @type")),
        };
        let advice = format!(
            "the relay's {kind}s are: {supported}; remove the section or do this step elsewhere"
        );
        self.finding(&d.pos, &subject, Why::UnsupportedPlugin, &reason, &advice);
    }

    /// Reports every parameter of `ps` not taken, and every child section not handled.
    fn leftovers(&mut self, ps: &Params<'_>, why: &str) {
        for p in ps.leftover() {
            self.finding(
                &p.pos,
                &p.key,
                Why::UnsupportedParameter,
                why,
                "remove it (see the README's \"Coming from Fluentd\" table)",
            );
        }
    }
}

/// The match pattern of a `<match>`/`<filter>`: its argument, `**` when empty.
fn match_pattern(d: &Directive) -> String {
    if d.arg.trim().is_empty() {
        "**".to_owned()
    } else {
        d.arg.trim().to_owned()
    }
}

/// A component name usable as a bare TOML key and an environment variable part: lowercase
/// ASCII letters, digits and `_`.
fn sanitize(id: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}
