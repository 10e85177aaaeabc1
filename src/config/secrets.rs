//! Secrets in the configuration: which keys hold them, and how they are kept out of `check`'s
//! output and out of error messages.

/// Keys whose values are secrets and are never printed or logged.
pub const SECRET_KEYS: &[&str] = &[
    "shared_key",
    "password",
    "secret_access_key",
    "session_token",
    "proxy_password",
    "access_key_id",
];

/// Replaces secret values by `<redacted>`, and the user information of URLs anywhere
/// (`proxy_url = "http://user:pw@proxy"`).
pub(super) fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && !matches!(v, toml::Value::Table(_)) {
                    *v = toml::Value::String("<redacted>".to_owned());
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact),
        toml::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = crate::primitives::secret_url::redact_userinfo(s) {
                *s = r;
            }
        }
        _ => {}
    }
}

/// True when the key path names a secret: its value must not appear in an error message.
pub(super) fn is_secret_path<S: AsRef<str>>(path: &[S]) -> bool {
    path.iter().any(|k| SECRET_KEYS.contains(&k.as_ref()))
        || path.last().is_some_and(|k| k.as_ref().ends_with("_url"))
}
