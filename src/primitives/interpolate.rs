//! `${VAR}` and `${VAR:-default}` in string values, the way users write
//! `"#{ENV['AWS_ROLE_ARN']}"` in Fluentd today. `$$` is a literal `$`.
//!
//! An unset variable without a default is an error rather than an empty string: an empty
//! `role_arn` or `shared_key` would fail much later with a far less helpful message. Write
//! `${VAR:-}` to accept an empty value.
//!
//! `${tag}` and `${tag[N]}` are not environment references but Fluentd's chunk placeholders
//! (`delivery_stream = "logs-${tag}"`): they are left as written for the output to resolve
//! per chunk.

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// `${VAR}` with `VAR` unset.
    #[error("environment variable `{0}` is not set (write `${{{0}:-default}}` to allow that)")]
    Unset(String),
    /// `${` without a closing `}` or with an invalid name.
    #[error("malformed `${{...}}` reference in `{0}`")]
    Malformed(String),
}

/// When `text` starts with a chunk placeholder (`${tag}`, `${tag[1]}`, `${tag[-1]}`), its
/// length in bytes.
pub fn placeholder_len(text: &str) -> Option<usize> {
    let body = text.strip_prefix("${tag")?;
    if body.starts_with('}') {
        return Some("${tag}".len());
    }
    let index = body.strip_prefix('[')?;
    let digits = index.strip_prefix('-').unwrap_or(index);
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || !digits[n..].starts_with("]}") {
        return None;
    }
    Some(text.len() - digits[n + 2..].len())
}

/// Expands references in `text` using `lookup` for variable values.
pub fn expand_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(len) = placeholder_len(&rest[pos..]) {
            out.push_str(&rest[pos..pos + len]);
            rest = &rest[pos + len..];
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = body_start
                .find('}')
                .ok_or_else(|| InterpolateError::Malformed(text.to_owned()))?;
            let body = &body_start[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(InterpolateError::Malformed(text.to_owned()));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(InterpolateError::Unset(name.to_owned())),
            }
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands references using the process environment.
pub fn expand(text: &str) -> Result<String, InterpolateError> {
    expand_with(text, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ROLE" => Some("arn:aws:iam::1:role/r".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(
            expand_with("${ROLE}", env).unwrap(),
            "arn:aws:iam::1:role/r"
        );
        assert_eq!(
            expand_with("x-${ROLE}-y", env).unwrap(),
            "x-arn:aws:iam::1:role/r-y"
        );
        assert_eq!(expand_with("${NOPE:-fallback}", env).unwrap(), "fallback");
        assert_eq!(expand_with("${EMPTY:-fallback}", env).unwrap(), "fallback");
        assert_eq!(expand_with("${NOPE:-}", env).unwrap(), "");
        assert_eq!(expand_with("no refs", env).unwrap(), "no refs");
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_are_literal() {
        assert_eq!(expand_with("$${ROLE}", env).unwrap(), "${ROLE}");
        assert_eq!(expand_with("cost: 5$", env).unwrap(), "cost: 5$");
        assert_eq!(expand_with("$HOME", env).unwrap(), "$HOME");
    }

    #[test]
    fn chunk_placeholders_are_not_environment_references() {
        assert_eq!(
            expand_with("logs-${tag}-${tag[1]}-${tag[-1]}", env).unwrap(),
            "logs-${tag}-${tag[1]}-${tag[-1]}"
        );
        assert_eq!(placeholder_len("${tag[12]}x"), Some(10));
        assert_eq!(placeholder_len("${tag[]}"), None);
        assert_eq!(placeholder_len("${tags}"), None);
        assert!(matches!(
            expand_with("${tag[x]}", env),
            Err(InterpolateError::Malformed(_))
        ));
    }

    #[test]
    fn unset_and_malformed_references_are_errors() {
        assert_eq!(
            expand_with("${NOPE}", env).unwrap_err().to_string(),
            "environment variable `NOPE` is not set (write `${NOPE:-default}` to allow that)"
        );
        assert!(matches!(
            expand_with("${ROLE", env),
            Err(InterpolateError::Malformed(_))
        ));
        assert!(matches!(
            expand_with("${}", env),
            Err(InterpolateError::Malformed(_))
        ));
        assert!(matches!(
            expand_with("${A B}", env),
            Err(InterpolateError::Malformed(_))
        ));
    }
}
