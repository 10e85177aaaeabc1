//! Writing the converted configuration as TOML: one table per section, in fluent.conf order,
//! each under a comment naming the line it came from.

use std::path::Path;

use super::Cx;
use crate::fluentd::syntax::Pos;

/// One TOML table (`[outputs.firehose]`) or array-of-tables element (`[[… .users]]`).
#[derive(Debug, Clone)]
pub(super) struct Section {
    /// `file:line <match app.**>` for the comment.
    origin: String,
    /// Where the section comes from.
    pub(super) pos: Pos,
    /// The dotted key path.
    pub(super) path: String,
    /// `[[path]]` instead of `[path]`.
    array: bool,
    entries: Vec<(String, toml::Value)>,
    /// Sub-tables, written after this one.
    pub(super) children: Vec<Section>,
}

impl Section {
    pub(super) fn new(pos: &Pos, what: impl AsRef<str>, path: impl Into<String>) -> Self {
        Section {
            origin: format!("{pos} {}", what.as_ref()),
            pos: pos.clone(),
            path: path.into(),
            array: false,
            entries: Vec::new(),
            children: Vec::new(),
        }
    }

    /// An element of an array of tables.
    pub(super) fn array_element(pos: &Pos, what: impl AsRef<str>, path: impl Into<String>) -> Self {
        Section {
            array: true,
            ..Section::new(pos, what, path)
        }
    }

    /// Sets `key` (replacing an earlier value).
    pub(super) fn set(&mut self, key: &str, value: impl Into<toml::Value>) {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.to_owned(), value)),
        }
    }

    /// Removes `key`, if set.
    pub(super) fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    pub(super) fn string(&mut self, key: &str, value: impl Into<String>) {
        self.set(key, toml::Value::String(value.into()));
    }

    /// The string value of `key`, if set.
    pub(super) fn get_str(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_str())
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.children.is_empty()
    }

    fn write(&self, out: &mut String) {
        out.push_str(&format!("\n# from {}\n", self.origin));
        if self.array {
            out.push_str(&format!("[[{}]]\n", self.path));
        } else {
            out.push_str(&format!("[{}]\n", self.path));
        }
        for (k, v) in &self.entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
        for c in &self.children {
            c.write(out);
        }
    }
}

impl Cx {
    /// The whole TOML text.
    pub(super) fn render(&self, main: &Path) -> String {
        let mut out = format!(
            "# Converted from {} by `firehose-relay convert`.\n",
            main.display()
        );
        if let Some((dir, pos)) = &self.data_dir {
            out.push_str(&format!("\n# from {pos} <buffer> path\n"));
            out.push_str(&format!(
                "data_dir = {}\n",
                toml::Value::String(dir.clone())
            ));
        }
        for s in &self.sections {
            s.write(&mut out);
        }
        out
    }
}
