//! URLs that may carry credentials (`http://user:password@proxy:3128`): kept whole for use,
//! never shown whole. `Debug` and `Display` print the URL with its user information replaced
//! by `<redacted>`; only [`SecretUrl::expose`] gives the text itself.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A URL whose user information is a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL as written, credentials included: for the code that connects, never for text
    /// a person reads.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        SecretUrl(s.to_owned())
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        SecretUrl(s)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_userinfo(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_userinfo(&self.0))
    }
}

/// `text` with the user information of a URL in it (between `://` and `@` in the authority)
/// replaced by `<redacted>`; other text unchanged.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
        return text.into();
    };
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &text[..scheme_end], &rest[at..]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_never_shown() {
        let url = SecretUrl::from("http://alice:pa%40ss@proxy.local:3128/path?q=a@b");
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(
                !shown.contains("alice") && !shown.contains("pa%40ss"),
                "{shown}"
            );
            assert!(
                shown.contains("http://<redacted>@proxy.local:3128/path?q=a@b"),
                "{shown}"
            );
        }
        assert_eq!(
            url.expose(),
            "http://alice:pa%40ss@proxy.local:3128/path?q=a@b"
        );
        assert_eq!(redact_userinfo("https://proxy:3128"), "https://proxy:3128");
        assert_eq!(redact_userinfo("not a url @ all"), "not a url @ all");
    }
}
