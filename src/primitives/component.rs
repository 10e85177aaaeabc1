//! Reading one component (`[sources.NAME]`, `[filters.NAME]`, `[outputs.NAME]`) from the
//! merged configuration: its `type` picks the struct, and errors keep the full key path.

// figment::Error is large (~200 bytes) but config is loaded once at startup: boxing it would
// only add noise.
#![allow(clippy::result_large_err)]

use figment::Figment;
use serde::Deserialize;

/// Accepts (and ignores) the `type` key inside a component's own struct: the enum around it has
/// already used it to pick the struct.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TypeTag(Option<String>);

/// Extracts component `section.name` of type chosen by its `type` key.
pub fn component_type(figment: &Figment, path: &str) -> Result<String, figment::Error> {
    figment
        .extract_inner::<String>(&format!("{path}.type"))
        .map_err(|mut e| {
            if e.path.is_empty() || e.path.last().is_some_and(|k| k != "type") {
                e.path = path.split('.').map(str::to_owned).collect();
                e.path.push("type".to_owned());
            }
            e
        })
}

/// Extracts a component struct from `path`, keeping full key paths in errors.
pub fn extract_component<T: serde::de::DeserializeOwned>(
    figment: &Figment,
    path: &str,
) -> Result<T, figment::Error> {
    figment.focus(path).extract::<T>().map_err(|err| {
        let prefix: Vec<String> = path.split('.').map(str::to_owned).collect();
        // Every error in the chain gets the component's path in front of its own.
        let mut fixed: Option<figment::Error> = None;
        for mut e in err {
            let mut full = prefix.clone();
            full.append(&mut e.path);
            e.path = full;
            fixed = Some(match fixed {
                None => e,
                Some(prev) => prev.chain(e),
            });
        }
        fixed.unwrap_or_else(|| figment::Error::from(format!("invalid `{path}`")))
    })
}

/// An error for an unknown `type` value.
pub fn unknown_type(path: &str, found: &str, expected: &[&str]) -> figment::Error {
    let mut e = figment::Error::from(super::suggest::unknown_name("type", found, expected));
    e.path = path.split('.').map(str::to_owned).collect();
    e.path.push("type".to_owned());
    e
}

/// Default `match` of outputs and filters: every tag.
pub fn match_all() -> String {
    "**".to_owned()
}

/// Default of boolean options that are on unless turned off (e.g. `append_new_line`).
pub fn default_true() -> bool {
    true
}
