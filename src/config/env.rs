//! Which `RELAY_*` environment variables are configuration, and which belong to someone else.
//!
//! `RELAY_` is a natural prefix for other things too. Kubernetes gives every pod
//! `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT`, `<SERVICE>_PORT`,
//! `<SERVICE>_PORT_<port>_TCP_ADDR`… for each Service of its namespace (service links), so a
//! Service named `relay` puts `RELAY_SERVICE_HOST` and `RELAY_PORT=tcp://10.0.0.1:24224` into
//! every pod; wrapper scripts set `RELAY_BIN`. Reading those as configuration made the relay
//! refuse to start ("unknown field `bin`") and crash-loop.
//!
//! The rule: a variable is configuration when the key it starts with (the part after `RELAY_`
//! up to the first `__`) is a top-level key of the config. Everything below such a key is
//! checked like a key of the file, so a misspelling under a known section
//! (`RELAY_OUTPUTS__FIREHOSE__BUFER__FLUSH_INTERVAL`) is still an error naming the variable.
//! Every other `RELAY_*` variable is not ours: ignored, logged once at debug level, and listed
//! by `check`. `RELAY_CONFIG` names the config file and is neither.

use super::{CONFIG_ENV, ENV_PREFIX};

/// The top-level keys of the configuration (a unit test holds this to [`super::Config`]).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "log_format",
    "shutdown_timeout",
    "http",
    "storage",
    "sources",
    "filters",
    "outputs",
];

/// Whether `key` — a variable's name without the `RELAY_` prefix, `__` not yet split —
/// addresses a configuration key. Case-insensitive, like the rest of the variable names.
pub fn is_config_key(key: &str) -> bool {
    let first = key.split("__").next().unwrap_or_default();
    TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
}

/// The `RELAY_*` variables of this process that are not configuration (sorted names; values
/// are never shown, they may be secrets of someone else).
pub fn foreign_variables() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| is_foreign(name))
        .collect();
    names.sort();
    names
}

fn is_foreign(name: &str) -> bool {
    let Some(prefix) = name.get(..ENV_PREFIX.len()) else {
        return false;
    };
    prefix.eq_ignore_ascii_case(ENV_PREFIX)
        && !name.eq_ignore_ascii_case(CONFIG_ENV)
        && !is_config_key(&name[ENV_PREFIX.len()..])
}

/// Logs the ignored variables once, at debug level (call after logging is set up).
pub fn log_foreign(names: &[String]) {
    if !names.is_empty() {
        tracing::debug!(
            variables = %names.join(", "),
            "RELAY_* environment variables that are not configuration keys are ignored"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_level_keys_are_those_of_the_config() {
        let value = toml::Value::try_from(super::super::Config::default()).unwrap();
        let mut keys: Vec<&str> = value
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = TOP_LEVEL_KEYS.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn keys_under_a_top_level_key_are_ours_even_when_misspelled() {
        for key in [
            "DATA_DIR",
            "log_format",
            "HTTP__LISTEN",
            "OUTPUTS__FIREHOSE__BUFER__FLUSH_INTERVAL",
            "SOURCES__FORWARD__LISTEN",
            "HTTP__NO_SUCH_KEY",
        ] {
            assert!(is_config_key(key), "{key}");
        }
    }

    #[test]
    fn service_links_and_other_programs_variables_are_not_ours() {
        for name in [
            "RELAY_SERVICE_HOST",
            "RELAY_SERVICE_PORT_FORWARD",
            "RELAY_PORT",
            "RELAY_PORT_24224_TCP_ADDR",
            "RELAY_BIN",
            "relay_bin",
            // One underscore is not the separator: this is not `http.listen`.
            "RELAY_HTTP_LISTEN",
        ] {
            assert!(is_foreign(name), "{name}");
        }
        for name in ["RELAY_CONFIG", "RELAY_DATA_DIR", "PATH", "RELAY", "RELA"] {
            assert!(!is_foreign(name), "{name}");
        }
    }
}
