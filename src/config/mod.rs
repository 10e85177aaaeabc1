//! Configuration: built-in defaults < TOML file < `RELAY_*` environment, merged by figment.
//!
//! * File: `--config FILE` or `$RELAY_CONFIG`. `${VAR}` / `${VAR:-default}` are expanded in its
//!   strings ([`interpolate`]).
//!   A fluent.conf given there (recognised by its syntax, not its name) is converted in memory
//!   by [`crate::fluentd::convert`] and refused with its report when it does not convert
//!   faithfully; the conversion's warnings are kept in [`Config::fluentd_warnings`].
//! * Environment: `RELAY_` + the key path joined by `__`, e.g.
//!   `RELAY_OUTPUTS__FIREHOSE__BUFFER__FLUSH_INTERVAL=5s`. Names of sources, filters and outputs
//!   are lowercased by this path, so give them lowercase names. Only variables that start with
//!   a top-level key are read; other `RELAY_*` variables (Kubernetes service links, wrapper
//!   scripts) are left alone ([`mod@env`]).
//! * Every mistake (unknown key, wrong type, impossible value) is a [`ConfigError`] naming the
//!   key and where it came from; `main` turns it into exit status 2.
//!
//! Filters apply, and outputs are matched, in the order they appear in the file (Fluentd's
//! semantics); figment's maps are sorted, so that order is read from the file separately
//! ([`declared_order`]). Components added only through the environment come after, by name.

// figment::Error is large (~200 bytes) but config is loaded once at startup: boxing it would
// only add noise.
#![allow(clippy::result_large_err)]

pub mod env;
mod file;
pub mod interpolate;
mod secrets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::buffer::config::StorageConfig;
use crate::ops::http::HttpConfig;
use crate::ops::logging::LogFormat;
use crate::pipeline::filter::FilterConfig;
use crate::pipeline::router::TagPattern;
use crate::primitives::ConfigDuration;
use crate::sink::OutputConfig;
use crate::source::SourceConfig;
use file::{ConfigFile, ConvertedFrom};
pub use secrets::SECRET_KEYS;
use secrets::{is_secret_path, redact};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "RELAY_CONFIG";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "RELAY_";

/// The whole configuration.
///
/// Deserialized in two steps (see [`Config::load`]): the top level with component names only,
/// then each component from its own focused figment, so that an error inside a component keeps
/// its full key path (serde's internally tagged enums buffer their content and would lose it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Where the buffer database, dead letters and quarantine live.
    pub data_dir: PathBuf,
    /// `text` or `json`; the level comes from `RUST_LOG`.
    pub log_format: LogFormat,
    /// On SIGTERM, how long to keep flushing before exiting (keep it below the pod's
    /// `terminationGracePeriodSeconds`).
    pub shutdown_timeout: ConfigDuration,
    /// Operations endpoint.
    pub http: HttpConfig,
    /// Buffer storage.
    pub storage: StorageConfig,
    /// Inputs, by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Filters, by name (applied in file order).
    pub filters: BTreeMap<String, FilterConfig>,
    /// Outputs, by name (matched in file order).
    pub outputs: BTreeMap<String, OutputConfig>,
    /// Declaration order of filters and outputs, read from the file.
    #[serde(skip)]
    pub order: DeclaredOrder,
    /// `RELAY_*` environment variables that are not configuration and were ignored.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
    /// When the file is a fluent.conf: the conversion's warnings (`file:line: message`), to
    /// log at startup.
    #[serde(skip)]
    pub fluentd_warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/firehose-relay"),
            log_format: LogFormat::Text,
            shutdown_timeout: ConfigDuration::secs(60),
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            sources: BTreeMap::new(),
            filters: BTreeMap::new(),
            outputs: BTreeMap::new(),
            order: DeclaredOrder::default(),
            ignored_env: Vec::new(),
            fluentd_warnings: Vec::new(),
        }
    }
}

/// The top level of the config as first extracted: components by name only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    data_dir: PathBuf,
    log_format: LogFormat,
    shutdown_timeout: ConfigDuration,
    http: HttpConfig,
    storage: StorageConfig,
    #[serde(default)]
    sources: BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    filters: BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    outputs: BTreeMap<String, serde::de::IgnoredAny>,
}

/// Names of filters and outputs in the order the file declares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredOrder {
    /// Filter names.
    pub filters: Vec<String>,
    /// Output names.
    pub outputs: Vec<String>,
}

/// A configuration that cannot be used. The message names the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
}

impl ConfigSource {
    /// `--config` if given, else `$RELAY_CONFIG`, else no file (defaults and environment).
    pub fn resolve(cli: Option<PathBuf>) -> Self {
        let file = cli.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        ConfigSource { file }
    }
}

/// How much of the configuration [`Config::load_with`] checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Leave out what only the machine that runs the relay has: in outputs' credentials
    /// sections, `${VAR}` references to unset variables stay as written, and the role ARN,
    /// token file and static keys are not checked ([`CREDENTIAL_INPUTS`]). For
    /// `check --no-credentials`.
    pub skip_credentials: bool,
}

/// The keys under an output that `check --no-credentials` does not check: they come from the
/// pod (IRSA variables, the projected token file) or are secrets.
pub const CREDENTIAL_INPUTS: &[&str] = &[
    "credentials.role_arn",
    "credentials.web_identity_token_file",
    "credentials.access_key_id",
    "credentials.secret_access_key",
    "credentials.session_token",
];

impl Config {
    /// Loads, merges and validates the configuration.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Self::load_with(source, LoadOptions::default())
    }

    /// [`Config::load`], checking as much as `options` say.
    pub fn load_with(source: &ConfigSource, options: LoadOptions) -> Result<Config, ConfigError> {
        let file = source.file.as_deref().map(ConfigFile::read).transpose()?;
        let figment = Self::figment(file.as_ref(), options)?;
        let mut config =
            Self::extract(&figment).map_err(|e| ConfigError(describe_figment_error(e)))?;
        if let Some(file) = &file {
            config.order = declared_order_in(&file.toml, &file.path)?;
            config.fluentd_warnings = file.fluentd_warnings.clone();
        } else if config.sources.is_empty() && config.outputs.is_empty() {
            return Err(ConfigError(format!(
                "no configuration file: give one with --config FILE or ${CONFIG_ENV} \
                 (conf/quickstart.toml runs without AWS); the built-in defaults and RELAY_* \
                 variables alone define no source and no output"
            )));
        }
        config.validate(&figment, options)?;
        config.ignored_env = env::foreign_variables();
        Ok(config)
    }

    fn extract(figment: &Figment) -> Result<Config, figment::Error> {
        let top: TopLevel = figment.extract()?;
        let mut errors: Option<figment::Error> = None;
        let mut keep = |r: Result<(), figment::Error>| {
            if let Err(e) = r {
                errors = Some(match errors.take() {
                    None => e,
                    Some(prev) => prev.chain(e),
                });
            }
        };
        let mut config = Config {
            data_dir: top.data_dir,
            log_format: top.log_format,
            shutdown_timeout: top.shutdown_timeout,
            http: top.http,
            storage: top.storage,
            ..Config::default()
        };
        for name in top.sources.keys() {
            keep(
                SourceConfig::extract(figment, &format!("sources.{name}"))
                    .map(|c| drop(config.sources.insert(name.clone(), c))),
            );
        }
        for name in top.filters.keys() {
            keep(
                FilterConfig::extract(figment, &format!("filters.{name}"))
                    .map(|c| drop(config.filters.insert(name.clone(), c))),
            );
        }
        for name in top.outputs.keys() {
            keep(
                OutputConfig::extract(figment, &format!("outputs.{name}"))
                    .map(|c| drop(config.outputs.insert(name.clone(), c))),
            );
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    fn figment(file: Option<&ConfigFile>, options: LoadOptions) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            let toml = if file.converted {
                ConvertedFrom {
                    inner: Toml::string(&file.toml),
                    fluent_conf: Some(file.path.clone()),
                }
            } else {
                ConvertedFrom {
                    inner: Toml::file_exact(&file.path),
                    fluent_conf: None,
                }
            };
            figment = if options.skip_credentials {
                figment.merge(interpolate::InterpolatedExceptCredentials(toml))
            } else {
                figment.merge(interpolate::Interpolated(toml))
            };
        }
        // `RELAY_CONFIG` (the file) and other programs' `RELAY_*` variables are filtered out.
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| env::is_config_key(key.as_str()))
            .split("__");
        Ok(figment.merge(env))
    }

    /// Where the value at `path` (dotted) came from, for error messages.
    fn origin(figment: &Figment, path: &str) -> String {
        match figment.find_metadata(path) {
            Some(md) => {
                let keys: Vec<&str> = path.split('.').collect();
                match &md.source {
                    Some(figment::Source::File(p)) => format!("in {}", p.display()),
                    Some(_) | None if md.name.contains("environment") => {
                        format!("from environment variable {}", env_var_name(&keys))
                    }
                    _ if md.name == std::any::type_name::<Config>() => {
                        "(built-in default)".to_owned()
                    }
                    _ => format!("from {}", md.name),
                }
            }
            None => "(built-in default)".to_owned(),
        }
    }

    fn validate(&self, figment: &Figment, options: LoadOptions) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |path: String, msg: String| {
            let origin = Self::origin(figment, &path);
            problems.push(format!("`{path}` {origin}: {msg}"));
        };
        if self.sources.is_empty() {
            problem("sources".into(), "at least one source is required".into());
        }
        if self.outputs.is_empty() {
            problem("outputs".into(), "at least one output is required".into());
        }
        for (name, src) in &self.sources {
            for (key, msg) in src.problems() {
                problem(format!("sources.{name}.{key}"), msg);
            }
        }
        for (name, f) in &self.filters {
            if let Err(e) = TagPattern::parse(f.pattern()) {
                problem(format!("filters.{name}.match"), e.to_string());
            }
        }
        for (name, out) in &self.outputs {
            if let Err(e) = TagPattern::parse(out.pattern()) {
                problem(format!("outputs.{name}.match"), e.to_string());
            }
            for (key, msg) in out.buffer().problems() {
                problem(format!("outputs.{name}.buffer.{key}"), msg);
            }
            for (key, msg) in out.problems() {
                if !(options.skip_credentials && CREDENTIAL_INPUTS.contains(&key)) {
                    problem(format!("outputs.{name}.{key}"), msg);
                }
            }
        }
        for (path, msg) in self.label_problems() {
            problem(path, msg);
        }
        if let Some(f) = self.http.ready_max_buffer_fill {
            if !(f > 0.0 && f <= 1.0) {
                problem(
                    "http.ready_max_buffer_fill".into(),
                    "must be in (0, 1]".into(),
                );
            }
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            problem(
                "http.listen".into(),
                format!(
                    "`{}` is not an address like 0.0.0.0:24231",
                    self.http.listen
                ),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            problem("data_dir".into(), "must not be empty".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(format!(
                "invalid configuration:\n  {}",
                problems.join("\n  ")
            )))
        }
    }

    /// Labels that are misspelled or lead nowhere, as (key, message). A label is defined by
    /// the filters and outputs that carry it; a source may only name a defined one (Fluentd
    /// refuses to start otherwise).
    fn label_problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let defined: std::collections::BTreeSet<&str> = self
            .filters
            .values()
            .filter_map(FilterConfig::label)
            .chain(self.outputs.values().filter_map(OutputConfig::label))
            .collect();
        let components = self
            .sources
            .iter()
            .map(|(n, c)| (format!("sources.{n}.label"), c.label()))
            .chain(
                self.filters
                    .iter()
                    .map(|(n, c)| (format!("filters.{n}.label"), c.label())),
            )
            .chain(
                self.outputs
                    .iter()
                    .map(|(n, c)| (format!("outputs.{n}.label"), c.label())),
            );
        for (path, label) in components {
            let Some(label) = label else { continue };
            if label.len() < 2 || !label.starts_with('@') {
                p.push((
                    path,
                    format!("`{label}` is not a label: labels start with `@`, like `@mainstream`"),
                ));
            } else if path.starts_with("sources.") && !defined.contains(label) {
                p.push((
                    path,
                    format!("no filter or output has label `{label}` (give `label = \"{label}\"` to the outputs that take these events)"),
                ));
            }
        }
        p
    }

    /// Filter names in application order.
    pub fn filter_order(&self) -> Vec<&str> {
        ordered(&self.order.filters, self.filters.keys())
    }

    /// Output names in matching order.
    pub fn output_order(&self) -> Vec<&str> {
        ordered(&self.order.outputs, self.outputs.keys())
    }

    /// The effective configuration as TOML, with secrets replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let mut value =
            toml::Value::try_from(self).map_err(|e| ConfigError(format!("cannot print: {e}")))?;
        redact(&mut value);
        toml::to_string_pretty(&value).map_err(|e| ConfigError(format!("cannot print: {e}")))
    }
}

/// What went wrong, without the value when the key is a secret (serde's messages quote it:
/// "invalid type: found unsigned int `12345`, expected a string").
fn describe_kind(e: &figment::Error) -> String {
    use crate::primitives::suggest::unknown_name;
    use figment::error::Kind;
    let secret = is_secret_path(&e.path);
    match &e.kind {
        // figment's own text nests quotes (``expected `one of `a`, `b``…``): a plain list and
        // the nearest valid name instead. A key name is never secret; a value may be.
        Kind::UnknownField(found, expected) => return unknown_name("key", found, expected),
        Kind::UnknownVariant(found, expected) if !secret => {
            return unknown_name("value", found, expected)
        }
        _ if !secret => return e.kind.to_string(),
        _ => {}
    }
    match &e.kind {
        Kind::InvalidType(actual, expected) => format!(
            "invalid type: found {}, expected {expected} (the value is not shown: it is secret)",
            kind_of(actual)
        ),
        Kind::InvalidValue(actual, expected) => format!(
            "invalid value: found {}, expected {expected} (the value is not shown: it is secret)",
            kind_of(actual)
        ),
        Kind::Message(_) => {
            "invalid value (the message is not shown: it may quote a secret)".to_owned()
        }
        other => other.to_string(),
    }
}

/// The type of a value figment found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Map => "a table",
        Actual::Seq => "an array",
        _ => "another type",
    }
}

fn ordered<'a>(declared: &'a [String], all: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut out: Vec<&str> = declared.iter().map(String::as_str).collect();
    for name in all {
        if !declared.contains(name) {
            out.push(name);
        }
    }
    out
}

/// Reads the order in which `[filters.*]` and `[outputs.*]` are declared in the file.
pub fn declared_order(file: &Path) -> Result<DeclaredOrder, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", file.display())))?;
    declared_order_in(&text, file)
}

/// Reads the order in which `[filters.*]` and `[outputs.*]` are declared in TOML `text`
/// (from `file`, for messages).
pub fn declared_order_in(text: &str, file: &Path) -> Result<DeclaredOrder, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
    let names = |key: &str| -> Vec<String> {
        table
            .get(key)
            .and_then(|v| v.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };
    Ok(DeclaredOrder {
        filters: names("filters"),
        outputs: names("outputs"),
    })
}

/// The environment variable that sets the key at `path`.
pub fn env_var_name<S: AsRef<str>>(path: &[S]) -> String {
    let joined: Vec<String> = path
        .iter()
        .map(|k| k.as_ref().to_ascii_uppercase())
        .collect();
    format!("{ENV_PREFIX}{}", joined.join("__"))
}

/// Turns figment's errors into lines that name the key and where it came from.
fn describe_figment_error(err: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in err {
        let path = e.path.join(".");
        let origin = match &e.metadata {
            Some(md) => match &md.source {
                Some(figment::Source::File(p)) => format!(" in {}", p.display()),
                _ if md.name.contains("environment") => {
                    format!(" from environment variable {}", env_var_name(&e.path))
                }
                _ => format!(" from {}", md.name),
            },
            None => String::new(),
        };
        let key = if path.is_empty() {
            String::new()
        } else {
            format!("`{path}`")
        };
        lines.push(format!("{key}{origin}: {}", describe_kind(&e)));
    }
    format!("invalid configuration:\n  {}", lines.join("\n  "))
}

#[cfg(test)]
mod tests;
