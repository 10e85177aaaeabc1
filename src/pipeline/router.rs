//! Fluentd tag patterns.
//!
//! * `a.b` matches exactly that tag.
//! * `*` matches one tag part: `a.*` matches `a.b` but not `a` or `a.b.c`.
//! * `**` matches zero or more parts: `a.**` matches `a`, `a.b` and `a.b.c`; `**` matches all.
//! * `{x,y}` matches any of the alternatives, which may hold patterns: `{app,web}.*`.
//! * Several patterns separated by spaces match when any of them does: `app.** sys.*`.

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// No pattern at all.
    #[error("match pattern is empty")]
    Empty,
    /// `{` and `}` do not pair up.
    #[error("unbalanced braces in match pattern `{0}`")]
    UnbalancedBraces(String),
}

/// A compiled match pattern (possibly several alternatives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern {
    source: String,
    globs: Vec<Vec<u8>>,
}

impl TagPattern {
    /// Parses a pattern as written in `match = "..."`.
    pub fn parse(text: &str) -> Result<TagPattern, PatternError> {
        let mut globs = Vec::new();
        for word in text.split_whitespace() {
            for g in expand_braces(word)? {
                globs.push(g.into_bytes());
            }
        }
        if globs.is_empty() {
            return Err(PatternError::Empty);
        }
        Ok(TagPattern {
            source: text.to_owned(),
            globs,
        })
    }

    /// True when `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.globs.iter().any(|g| glob_match(g, tag.as_bytes()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Expands `{a,b}` alternations (nested too) into plain globs.
fn expand_braces(word: &str) -> Result<Vec<String>, PatternError> {
    let bytes = word.as_bytes();
    let Some(open) = word.find('{') else {
        if word.contains('}') {
            return Err(PatternError::UnbalancedBraces(word.to_owned()));
        }
        return Ok(vec![word.to_owned()]);
    };
    // Find the matching close brace and the top-level commas between.
    let mut depth = 0usize;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| PatternError::UnbalancedBraces(word.to_owned()))?;
    let prefix = &word[..open];
    let suffix = &word[close + 1..];
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for pair in bounds.windows(2) {
        let alt = &word[pair[0] + 1..pair[1]];
        for expanded in expand_braces(&format!("{prefix}{alt}{suffix}"))? {
            out.push(expanded);
        }
    }
    Ok(out)
}

/// Backtracking glob match with Fluentd's `*` / `**` rules.
fn glob_match(pat: &[u8], tag: &[u8]) -> bool {
    if pat.is_empty() {
        return tag.is_empty();
    }
    if pat.starts_with(b"**") {
        let rest = &pat[2..];
        // `**.x` may match zero parts: then the dot goes too.
        if let Some(after_dot) = rest.strip_prefix(b".") {
            if glob_match(after_dot, tag) {
                return true;
            }
        }
        return (0..=tag.len()).any(|i| glob_match(rest, &tag[i..]));
    }
    if pat.starts_with(b".**") {
        // `x.**` matches `x` itself: the dot and zero parts.
        if glob_match(&pat[3..], tag) {
            return true;
        }
    }
    match pat[0] {
        b'*' => {
            let rest = &pat[1..];
            let max = tag.iter().position(|&b| b == b'.').unwrap_or(tag.len());
            (0..=max).any(|i| glob_match(rest, &tag[i..]))
        }
        c => !tag.is_empty() && tag[0] == c && glob_match(&pat[1..], &tag[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, tag: &str) -> bool {
        TagPattern::parse(p).unwrap().matches(tag)
    }

    #[test]
    fn exact_tags() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.bc"));
        assert!(!m("a.b", "a"));
    }

    #[test]
    fn single_star_is_one_part() {
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("*.b", "x.b"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(!m("a.*.c", "a.x.y.c"));
        assert!(m("a.b*", "a.bcd"));
    }

    #[test]
    fn double_star_is_zero_or_more_parts() {
        assert!(m("**", "anything.at.all"));
        assert!(m("**", "x"));
        assert!(m("a.**", "a"));
        assert!(m("a.**", "a.b"));
        assert!(m("a.**", "a.b.c"));
        assert!(!m("a.**", "ab"));
        assert!(m("**.c", "c"));
        assert!(m("**.c", "a.b.c"));
        assert!(m("a.**.d", "a.d"));
        assert!(m("a.**.d", "a.b.c.d"));
    }

    #[test]
    fn braces_and_spaces_are_alternatives() {
        assert!(m("{a,b}.*", "a.x"));
        assert!(m("{a,b}.*", "b.x"));
        assert!(!m("{a,b}.*", "c.x"));
        assert!(m("{a.{x,y},c}", "a.y"));
        assert!(m("app.** sys.*", "sys.kernel"));
        assert!(m("app.** sys.*", "app"));
        assert!(!m("app.** sys.*", "sys.a.b"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert_eq!(TagPattern::parse("  "), Err(PatternError::Empty));
        assert!(matches!(
            TagPattern::parse("{a,b"),
            Err(PatternError::UnbalancedBraces(_))
        ));
        assert!(matches!(
            TagPattern::parse("a}"),
            Err(PatternError::UnbalancedBraces(_))
        ));
    }
}
