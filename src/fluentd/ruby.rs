//! Embedded Ruby in double-quoted values (`"#{ENV['AWS_ROLE_ARN']}"`), mapped to the relay's
//! `${X}` / `${X:-default}` references. The relay does not run Ruby; these are the forms that
//! real configs use to read the environment:
//!
//! | Ruby | relay |
//! |---|---|
//! | `ENV['X']`, `ENV["X"]`, `ENV.fetch('X')` | `${X}` |
//! | `ENV.fetch('X', 'd')`, `ENV['X'] \|\| 'd'` | `${X:-d}` |
//! | `ENV['X'] \|\| some-name` (unquoted) | `${X:-some-name}`, with a warning: Ruby would evaluate `some-name` as code |
//! | `hostname`, `Socket.gethostname` | `${HOSTNAME}`, with a warning |
//! | `worker_id` | `0`, with a warning (the relay is one process) |
//!
//! Anything else stays [`Segment::Ruby`] and is reported with its line where it is used.
//!
//! Differences users should know, also in the README: an unset `${X}` is an error in the
//! relay (Ruby gives an empty string), and `${X:-d}` also uses `d` when `X` is set but empty
//! (Ruby's `||` only when it is unset).

use super::syntax::Segment;

/// Maps one `#{…}` body; returns the segment and, when the mapping is approximate, why.
pub fn map(code: &str) -> (Segment, Option<String>) {
    let trimmed = code.trim();
    match trimmed {
        "hostname" | "Socket.gethostname" => {
            return (
                env("HOSTNAME", None),
                Some(format!(
                    "`#{{{trimmed}}}` is read from $HOSTNAME (Kubernetes sets it to the pod name, which is the host name Ruby would see)"
                )),
            )
        }
        "worker_id" => {
            return (
                Segment::Text("0".into()),
                Some("`#{worker_id}` is 0: the relay runs as one process".into()),
            )
        }
        _ => {}
    }
    match parse_env(trimmed) {
        Some(Parsed {
            name,
            default,
            bare_default,
        }) => {
            let warning = bare_default.then(|| {
                format!(
                    "`#{{{trimmed}}}`: the default `{}` is not quoted; Fluentd would run it as Ruby code, the relay takes it as the literal text (quote it to silence this)",
                    default.as_deref().unwrap_or_default()
                )
            });
            (env(name, default), warning)
        }
        None => (Segment::Ruby(trimmed.to_owned()), None),
    }
}

fn env(name: impl Into<String>, default: Option<String>) -> Segment {
    Segment::Env {
        name: name.into(),
        default,
    }
}

struct Parsed {
    name: String,
    default: Option<String>,
    bare_default: bool,
}

/// A tiny cursor over the Ruby code.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    /// A Ruby string literal without interpolation: `'…'` or `"…"`.
    fn string(&mut self) -> Option<String> {
        self.skip_ws();
        let quote = self
            .rest
            .chars()
            .next()
            .filter(|&c| c == '\'' || c == '"')?;
        let mut out = String::new();
        let mut chars = self.rest[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    let (_, e) = chars.next()?;
                    out.push(match (quote, e) {
                        ('"', 'n') => '\n',
                        ('"', 't') => '\t',
                        (_, e) => e,
                    });
                }
                '#' if quote == '"' && self.rest[1 + i..].starts_with("#{") => return None,
                c if c == quote => {
                    self.rest = &self.rest[1 + i + 1..];
                    return Some(out);
                }
                c => out.push(c),
            }
        }
        None
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.rest.is_empty()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A default the relay's `${X:-d}` can hold (it ends at the first `}`).
fn valid_default(d: &str) -> bool {
    !d.contains('}')
}

fn parse_env(code: &str) -> Option<Parsed> {
    let mut c = Cursor { rest: code };
    if !c.eat("ENV") {
        return None;
    }
    let (name, mut default) = if c.eat("[") {
        let name = c.string()?;
        if !c.eat("]") {
            return None;
        }
        (name, None)
    } else if c.eat(".fetch") || (c.eat(".") && c.eat("fetch")) {
        if !c.eat("(") {
            return None;
        }
        let name = c.string()?;
        let default = if c.eat(",") { Some(c.string()?) } else { None };
        if !c.eat(")") {
            return None;
        }
        (name, default)
    } else {
        return None;
    };
    let mut bare_default = false;
    if default.is_none() && c.eat("||") {
        c.skip_ws();
        default = match c.string() {
            Some(d) => Some(d),
            None => {
                // `ENV['X'] || some-name`: what users mean is the text.
                let bare = c.rest.trim();
                if bare.is_empty() || bare.contains(['\'', '"', '(', ')', '#']) {
                    return None;
                }
                c.rest = "";
                // An integer literal is Ruby that gives its own digits: no surprise there.
                bare_default = !bare.bytes().all(|b| b.is_ascii_digit());
                Some(bare.to_owned())
            }
        };
    }
    if !c.at_end() || !valid_name(&name) || default.as_deref().is_some_and(|d| !valid_default(d)) {
        return None;
    }
    Some(Parsed {
        name,
        default,
        bare_default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(code: &str) -> Segment {
        map(code).0
    }

    fn env_seg(name: &str, default: Option<&str>) -> Segment {
        env(name, default.map(str::to_owned))
    }

    #[test]
    fn the_forms_users_write_become_references() {
        assert_eq!(mapped("ENV['X']"), env_seg("X", None));
        assert_eq!(mapped(" ENV[\"X\"] "), env_seg("X", None));
        assert_eq!(mapped("ENV.fetch('X')"), env_seg("X", None));
        assert_eq!(mapped("ENV.fetch('X', 'd')"), env_seg("X", Some("d")));
        assert_eq!(
            mapped("ENV.fetch(\"X\",\"a b\")"),
            env_seg("X", Some("a b"))
        );
        assert_eq!(mapped("ENV['X'] || 'd'"), env_seg("X", Some("d")));
        assert_eq!(mapped("ENV['X']||\"\""), env_seg("X", Some("")));
        assert!(map("ENV['X'] || 'd'").1.is_none());
    }

    #[test]
    fn an_unquoted_default_is_taken_literally_with_a_warning() {
        let (seg, warning) = map("ENV['FIREHOSE_STREAM_NAME'] || my-stream");
        assert_eq!(seg, env_seg("FIREHOSE_STREAM_NAME", Some("my-stream")));
        assert!(warning.unwrap().contains("not quoted"));
        // An integer literal evaluates to its digits in Ruby too: no warning.
        let (seg, warning) = map("ENV['PORT'] || 24224");
        assert_eq!(seg, env_seg("PORT", Some("24224")));
        assert!(warning.is_none());
    }

    #[test]
    fn host_name_and_worker_id() {
        assert_eq!(mapped("hostname"), env_seg("HOSTNAME", None));
        assert_eq!(mapped("Socket.gethostname"), env_seg("HOSTNAME", None));
        assert_eq!(mapped("worker_id"), Segment::Text("0".into()));
    }

    #[test]
    fn other_ruby_is_kept_for_the_report() {
        for code in [
            "Time.now",
            "ENV['X'].downcase",
            "ENV['X'] || ENV['Y']",
            "ENV['a-b']",
            "ENV['X'] || 'a}b'",
            "ENV[X]",
            "ENV['X'] || \"#{y}\"",
            "`rm -rf /`",
        ] {
            assert_eq!(mapped(code), Segment::Ruby(code.trim().into()), "{code}");
        }
    }
}
