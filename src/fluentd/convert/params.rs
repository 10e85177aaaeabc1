//! Taking a directive's parameters one by one, so that whatever is left at the end can be
//! reported, and reading their values with Fluentd's types.

use std::collections::BTreeSet;

use super::render::Section;
use super::{Cx, Why};
use crate::fluentd::syntax::{Directive, Param};
use crate::fluentd::types::{self, TypeError};

/// The parameters of one directive, with those already taken.
pub(super) struct Params<'d> {
    dir: &'d Directive,
    taken: BTreeSet<&'d str>,
}

impl<'d> Params<'d> {
    pub(super) fn new(dir: &'d Directive) -> Self {
        let mut taken = BTreeSet::new();
        // The name comes from @id (see `Cx::name`).
        taken.insert("@id");
        Params { dir, taken }
    }

    /// The parameter `key` (its last value), marked as taken.
    pub(super) fn take(&mut self, key: &'d str) -> Option<&'d Param> {
        self.taken.insert(key);
        self.dir.param(key)
    }

    /// The first of `keys` that is set (aliases), all marked as taken.
    pub(super) fn take_any(&mut self, keys: &[&'d str]) -> Option<&'d Param> {
        let mut found = None;
        for k in keys {
            if let Some(p) = self.take(k) {
                found.get_or_insert(p);
            }
        }
        found
    }

    /// Where the directive starts.
    pub(super) fn pos(&self) -> crate::fluentd::syntax::Pos {
        self.dir.pos.clone()
    }

    /// `@type` as written, taken.
    pub(super) fn plugin_type(&mut self) -> Option<String> {
        self.taken.insert("@type");
        self.dir.plugin_type()
    }

    /// Parameters not taken, in file order (one entry per key: the last value).
    pub(super) fn leftover(&self) -> Vec<&'d Param> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<&Param> = self
            .dir
            .params
            .iter()
            .rev()
            .filter(|p| !self.taken.contains(p.key.as_str()) && seen.insert(p.key.as_str()))
            .collect();
        out.reverse();
        out
    }
}

impl Cx {
    /// A string parameter in the relay's syntax (environment lookups as `${X}`), or a finding
    /// for Ruby the relay cannot evaluate.
    pub(super) fn string(&mut self, p: &Param) -> Option<String> {
        match p.value.to_relay_string() {
            Some(s) => Some(s),
            None => {
                let code = p.value.unsupported_ruby().unwrap_or_default().to_owned();
                self.finding(
                    &p.pos,
                    &p.key,
                    Why::UnsupportedParameter,
                    &format!("embedded Ruby `#{{{code}}}` cannot be evaluated by the relay (only ENV lookups are converted)"),
                    "write the value, or read it from the environment with \"#{ENV['NAME']}\"",
                );
                None
            }
        }
    }

    /// Moves string parameter `key` (if given) into `sec` as `to`; Ruby the relay cannot
    /// evaluate is a finding instead ([`Cx::string`]).
    pub(super) fn copy_string<'d>(
        &mut self,
        ps: &mut Params<'d>,
        key: &'d str,
        sec: &mut Section,
        to: &str,
    ) {
        if let Some(v) = ps.take(key).and_then(|p| self.string(p)) {
            sec.string(to, v);
        }
    }

    /// A typed parameter read as Fluentd reads it; a finding when it is not of its type or
    /// holds anything but literal text.
    pub(super) fn typed<T>(
        &mut self,
        p: &Param,
        read: impl FnOnce(&str) -> Result<T, TypeError>,
    ) -> Option<T> {
        let Some(text) = p.value.literal() else {
            self.finding(
                &p.pos,
                &p.key,
                Why::UnsupportedParameter,
                "embedded Ruby in a parameter that is not a string: the relay reads environment variables in strings only",
                "write the value itself",
            );
            return None;
        };
        match read(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.finding(&p.pos, &p.key, Why::InvalidValue, &e, "fix the value");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, p: &Param) -> Option<bool> {
        self.typed(p, types::bool)
    }

    pub(super) fn size(&mut self, p: &Param) -> Option<u64> {
        self.typed(p, types::size)
    }

    pub(super) fn time(&mut self, p: &Param) -> Option<std::time::Duration> {
        self.typed(p, types::time)
    }

    pub(super) fn integer(&mut self, p: &Param) -> Option<i64> {
        self.typed(p, types::integer)
    }

    pub(super) fn float(&mut self, p: &Param) -> Option<f64> {
        self.typed(p, types::float)
    }

    /// A non-negative integer that fits `T`.
    pub(super) fn count<T: TryFrom<i64>>(&mut self, p: &Param) -> Option<T> {
        let n = self.integer(p)?;
        match T::try_from(n) {
            Ok(v) if n >= 0 => Some(v),
            _ => {
                self.finding(
                    &p.pos,
                    &p.key,
                    Why::InvalidValue,
                    &format!("`{n}` is out of range"),
                    "fix the value",
                );
                None
            }
        }
    }

    /// One of `allowed` (a literal); a finding otherwise.
    pub(super) fn choice(&mut self, p: &Param, allowed: &[&str]) -> Option<String> {
        let v = self.typed(p, |t| Ok(t.trim().to_owned()))?;
        if allowed.contains(&v.as_str()) {
            Some(v)
        } else {
            self.finding(
                &p.pos,
                &p.key,
                Why::UnsupportedParameter,
                &format!("`{v}` is not one of: {}", allowed.join(", ")),
                "choose one of those",
            );
            None
        }
    }

    /// A parameter that has no effect in the relay: a warning, nothing converted.
    pub(super) fn ignored(&mut self, p: Option<&Param>, why: &str) {
        if let Some(p) = p {
            let message = format!("`{}` is not converted: {why}", p.key);
            self.warn(&p.pos, message);
        }
    }
}
