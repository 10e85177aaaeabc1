//! The config file: read as TOML, or, when it is a fluent.conf (recognised by its syntax),
//! converted to TOML in memory by [`crate::fluentd::convert`] and refused when the conversion is
//! not faithful.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// A TOML provider that, for the TOML converted from a fluent.conf, names the fluent.conf as
/// where values come from (errors then say `in /etc/fluent/fluent.conf`).
pub(super) struct ConvertedFrom<P> {
    pub(super) inner: P,
    pub(super) fluent_conf: Option<PathBuf>,
}

impl<P: figment::Provider> figment::Provider for ConvertedFrom<P> {
    fn metadata(&self) -> figment::Metadata {
        match &self.fluent_conf {
            Some(path) => {
                figment::Metadata::from("fluent.conf", figment::Source::File(path.clone()))
            }
            None => self.inner.metadata(),
        }
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.inner.data()
    }

    fn profile(&self) -> Option<figment::Profile> {
        self.inner.profile()
    }
}

/// The config file as TOML: as written, or converted from a fluent.conf.
pub(super) struct ConfigFile {
    pub(super) path: PathBuf,
    pub(super) toml: String,
    /// True when `toml` was converted from a fluent.conf.
    pub(super) converted: bool,
    pub(super) fluentd_warnings: Vec<String>,
}

impl ConfigFile {
    /// Reads `path`; a fluent.conf (recognised by its syntax) is converted in memory, and
    /// refused with the conversion's report when it does not convert faithfully.
    pub(super) fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        if !crate::fluentd::looks_like_fluent_conf(&text) {
            return Ok(ConfigFile {
                path: path.to_owned(),
                toml: text,
                converted: false,
                fluentd_warnings: Vec::new(),
            });
        }
        let conversion = crate::fluentd::convert::convert_file(path)
            .map_err(|e| ConfigError(format!("cannot read the fluent.conf: {e}")))?;
        if !conversion.is_faithful() {
            return Err(ConfigError(format!(
                "{} is a fluent.conf that the relay cannot run as it is. {}(`firehose-relay convert {}` prints the TOML of what converts)",
                path.display(),
                conversion.report(),
                path.display()
            )));
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            toml: conversion.toml,
            converted: true,
            fluentd_warnings: conversion
                .warnings
                .iter()
                .map(|w| format!("{}: {}", w.pos, w.message))
                .collect(),
        })
    }
}
