//! The lexical layer of Fluentd's v1 config language: spacing and comments, the three kinds of
//! strings, JSON values and the bounds of embedded Ruby, each read the way Fluentd's
//! `BasicParser`/`LiteralParser` read them:
//!
//! * `#` starts a comment only where spacing is expected: at the start of a line, after a
//!   section tag, or after a value with blanks before it (`path /a#b` keeps the `#`).
//! * A bare value runs to the end of the line (trailing blanks and comment excluded).
//! * `'…'` knows only `\'` and `\\`, and ends on its line.
//! * `"…"` knows `\n \t \r \f \b \0` and escaped symbols, may span lines (a backslash at the
//!   end of a line joins it with the next), and holds embedded Ruby `#{…}`.
//! * A value starting with `[` or `{` is JSON, possibly over several lines, with `#` comments
//!   outside its strings.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::{ParseError, ParseErrorKind};
use super::ruby;
use super::syntax::{Pos, Quoting, Segment, Value, Warning};

/// Where a bare string stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// At the end of the line (blanks and a comment before it excluded): values.
    LineEnd,
    /// At any blank: keys.
    Spacing,
    /// At `>`, blanks before it excluded: the argument of a section tag.
    TagEnd,
}

/// A cursor over one file's text.
pub struct Scanner<'a> {
    src: &'a str,
    pos: usize,
    file: Arc<PathBuf>,
    line_starts: Vec<usize>,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `src`, which came from `file`.
    pub fn new(src: &'a str, file: Arc<PathBuf>) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Scanner {
            src,
            pos: 0,
            file,
            line_starts,
        }
    }

    /// The file being read.
    pub fn file(&self) -> &Arc<PathBuf> {
        &self.file
    }

    /// The current position as file and line.
    pub fn here(&self) -> Pos {
        self.pos_at(self.pos)
    }

    fn pos_at(&self, offset: usize) -> Pos {
        let line = self.line_starts.partition_point(|&s| s <= offset);
        Pos::new(&self.file, u32::try_from(line).unwrap_or(u32::MAX))
    }

    /// An error at the current position.
    pub fn error(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            pos: self.here(),
            kind,
        }
    }

    /// True at the end of the text.
    pub fn eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + offset).copied()
    }

    /// True when the rest starts with `s`.
    pub fn starts_with(&self, s: &str) -> bool {
        self.src[self.pos..].starts_with(s)
    }

    /// Consumes `s` if the rest starts with it.
    pub fn eat(&mut self, s: &str) -> bool {
        if self.starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Consumes one whole character and returns it.
    fn bump(&mut self) -> Option<char> {
        let c = self.src[self.pos..].chars().next()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Skips blanks, newlines and comments (Fluentd's `SPACING`).
    pub fn skip_spacing(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'#' => self.skip_to_newline(),
                _ => break,
            }
        }
    }

    /// Skips blanks and newlines but not comments; true if a newline was skipped or the text
    /// ended (a key with no value).
    pub fn skip_blanks(&mut self) -> bool {
        let mut newline = false;
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    newline = true;
                    self.pos += 1;
                }
                _ => break,
            }
        }
        newline || self.eof()
    }

    fn skip_to_newline(&mut self) {
        match self.src[self.pos..].find('\n') {
            Some(i) => self.pos += i,
            None => self.pos = self.src.len(),
        }
    }

    /// Length of Fluentd's `LINE_END` (blanks, an optional comment, then newlines or the end,
    /// repeated) at `at`, if it matches there.
    fn line_end_len(&self, at: usize) -> Option<usize> {
        let bytes = self.src.as_bytes();
        let mut p = at;
        let mut matched = false;
        loop {
            let group = p;
            while p < bytes.len() && (bytes[p] == b' ' || bytes[p] == b'\t') {
                p += 1;
            }
            if p < bytes.len() && bytes[p] == b'#' {
                while p < bytes.len() && bytes[p] != b'\n' {
                    p += 1;
                }
            }
            if p >= bytes.len() {
                return Some(p - at);
            }
            if bytes[p] == b'\r' || bytes[p] == b'\n' {
                p += 1;
                matched = true;
                continue;
            }
            return matched.then_some(group - at);
        }
    }

    /// Consumes the end of a line (with a trailing comment and blank lines); false if the line
    /// goes on.
    pub fn line_end(&mut self) -> bool {
        match self.line_end_len(self.pos) {
            Some(n) => {
                self.pos += n;
                true
            }
            None => false,
        }
    }

    /// A section name: `[A-Za-z0-9_]*`.
    pub fn scan_name(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    fn at_boundary(&self, boundary: Boundary) -> bool {
        let bytes = self.src.as_bytes();
        match boundary {
            Boundary::LineEnd => self.line_end_len(self.pos).is_some(),
            Boundary::Spacing => self
                .peek()
                .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n')),
            Boundary::TagEnd => {
                let mut p = self.pos;
                while p < bytes.len() && matches!(bytes[p], b' ' | b'\t' | b'\r' | b'\n') {
                    p += 1;
                }
                bytes.get(p) == Some(&b'>')
            }
        }
    }

    /// A bare string up to `boundary` (never past a newline); `None` when empty.
    pub fn scan_bare(&mut self, boundary: Boundary) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == b'#' {
                self.pos += 1;
                continue;
            }
            if c == b'\n' || self.at_boundary(boundary) {
                break;
            }
            self.bump();
        }
        (self.pos > start).then(|| self.src[start..self.pos].to_owned())
    }

    /// A string in any of the three notations, bare ones ending at `boundary`.
    pub fn scan_string(
        &mut self,
        boundary: Boundary,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Value>, ParseError> {
        if self.eat("\"") {
            self.scan_double_quoted(warnings).map(Some)
        } else if self.eat("'") {
            self.scan_single_quoted().map(Some)
        } else {
            Ok(self
                .scan_bare(boundary)
                .map(|s| Value::text(s, Quoting::Bare)))
        }
    }

    fn scan_single_quoted(&mut self) -> Result<Value, ParseError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => {
                    return Err(self.error(ParseErrorKind::UnterminatedString("single")))
                }
                Some(b'\'') => {
                    self.pos += 1;
                    return Ok(Value::text(out, Quoting::Single));
                }
                Some(b'\\') if matches!(self.peek_at(1), Some(b'\'') | Some(b'\\')) => {
                    self.pos += 1;
                    out.extend(self.bump());
                }
                Some(_) => out.extend(self.bump()),
            }
        }
    }

    fn scan_double_quoted(&mut self, warnings: &mut Vec<Warning>) -> Result<Value, ParseError> {
        let start_pos = self.here();
        let mut segments = Vec::new();
        let mut text = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(ParseError {
                    pos: start_pos,
                    kind: ParseErrorKind::UnterminatedString("double"),
                });
            };
            match c {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' if matches!(self.peek_at(1), Some(b'\n') | Some(b'\r')) => {
                    // A backslash at the end of a line joins it with the next one.
                    self.pos += 1;
                    while matches!(self.peek(), Some(b'\n') | Some(b'\r')) {
                        self.pos += 1;
                    }
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(e) = self.bump() else { continue };
                    text.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'f' => '\u{c}',
                        'b' => '\u{8}',
                        '0' => '\0',
                        c if c.is_ascii_alphanumeric() => {
                            self.pos -= 1;
                            return Err(self.error(ParseErrorKind::BadEscape(c)));
                        }
                        c => c,
                    });
                }
                b'#' if self.peek_at(1) == Some(b'{') => {
                    let pos = self.here();
                    self.pos += 2;
                    let code = self.scan_ruby_code()?;
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    let (segment, warning) = ruby::map(code);
                    if let Some(message) = warning {
                        warnings.push(Warning { pos, message });
                    }
                    segments.push(segment);
                }
                _ => text.extend(self.bump()),
            }
        }
        if !text.is_empty() || segments.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Value {
            segments,
            quoting: Quoting::Double,
        })
    }

    /// The Ruby code after `#{`, up to its closing `}` (consumed), with braces and Ruby string
    /// literals inside it balanced.
    fn scan_ruby_code(&mut self) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut depth = 1usize;
        let mut quote: Option<u8> = None;
        let mut p = self.pos;
        while p < bytes.len() {
            let c = bytes[p];
            match quote {
                Some(q) => {
                    if c == b'\\' {
                        p += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    b'\'' | b'"' => quote = Some(c),
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            self.pos = p + 1;
                            return Ok(&self.src[start..p]);
                        }
                    }
                    _ => {}
                },
            }
            p += 1;
        }
        Err(self.error(ParseErrorKind::UnterminatedRuby))
    }

    /// A JSON array (`open` = `[`) or hash (`{`), the opening bracket already consumed;
    /// returns it as compact JSON text, as Fluentd passes it on.
    pub fn scan_json(&mut self, open: u8) -> Result<Value, ParseError> {
        let start_pos = self.here();
        let what = if open == b'[' { "array" } else { "hash" };
        let bytes = self.src.as_bytes();
        let mut text = String::from(if open == b'[' { "[" } else { "{" });
        let mut depth = 1usize;
        let mut in_string = false;
        let mut p = self.pos;
        let mut copied_to = p;
        while p < bytes.len() && depth > 0 {
            let c = bytes[p];
            if in_string {
                match c {
                    b'\\' => p += 1,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth -= 1,
                    b'#' => {
                        // A comment outside JSON strings runs to the end of the line.
                        text.push_str(&self.src[copied_to..p]);
                        while p < bytes.len() && bytes[p] != b'\n' {
                            p += 1;
                        }
                        copied_to = p;
                        continue;
                    }
                    _ => {}
                }
            }
            p += 1;
        }
        let end = p.min(bytes.len());
        text.push_str(&self.src[copied_to..end]);
        self.pos = end;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ParseError {
                pos: start_pos,
                kind: ParseErrorKind::Json { what, source },
            })?;
        Ok(Value::text(parsed.to_string(), Quoting::Json))
    }

    /// A parameter value: JSON, or a string up to the end of the line.
    pub fn scan_value(&mut self, warnings: &mut Vec<Warning>) -> Result<Value, ParseError> {
        while matches!(self.peek(), Some(b' ') | Some(b'\t')) {
            self.pos += 1;
        }
        if self.eat("[") {
            return self.scan_json(b'[');
        }
        if self.eat("{") {
            return self.scan_json(b'{');
        }
        Ok(self
            .scan_string(Boundary::LineEnd, warnings)?
            .unwrap_or_else(|| Value::text("", Quoting::Bare)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(text: &str) -> Scanner<'_> {
        Scanner::new(text, Arc::new(PathBuf::from("t.conf")))
    }

    fn value(text: &str) -> Value {
        let mut s = scanner(text);
        let v = s.scan_value(&mut Vec::new()).unwrap();
        assert!(s.line_end(), "line end after {text:?} at {}", s.pos);
        v
    }

    #[test]
    fn bare_values_end_at_a_comment_with_blanks_before_it() {
        assert_eq!(value("abc def  # note\n").literal().unwrap(), "abc def");
        assert_eq!(value("/a#b\n").literal().unwrap(), "/a#b");
        assert_eq!(
            value("#not-a-comment\n").literal().unwrap(),
            "#not-a-comment"
        );
        assert_eq!(value("x").literal().unwrap(), "x");
    }

    #[test]
    fn quoted_strings_apply_fluentd_escapes() {
        assert_eq!(
            value(r#""a\tb\"c\\d\$e""#).literal().unwrap(),
            "a\tb\"c\\d$e"
        );
        assert_eq!(value(r"'it\'s \n'").literal().unwrap(), "it's \\n");
        assert_eq!(
            value("\"one \\\n  two\"").literal().unwrap(),
            "one   two",
            "backslash-newline joins lines"
        );
        assert_eq!(value("\"a\nb\"").literal().unwrap(), "a\nb");
        let mut s = scanner(r#""\q""#);
        assert!(matches!(
            s.scan_value(&mut Vec::new()).unwrap_err().kind,
            ParseErrorKind::BadEscape('q')
        ));
    }

    #[test]
    fn json_values_span_lines_and_drop_comments() {
        let v = value("[\n  {\"message\": \"a # b\"}, # first\n  {\"n\": 2}\n]\n");
        assert_eq!(v.quoting, Quoting::Json);
        assert_eq!(v.literal().unwrap(), r##"[{"message":"a # b"},{"n":2}]"##);
        let mut s = scanner("[1, 2\n");
        s.eat("[");
        assert!(matches!(
            s.scan_json(b'[').unwrap_err().kind,
            ParseErrorKind::Json { what: "array", .. }
        ));
    }

    #[test]
    fn embedded_ruby_becomes_environment_references() {
        let v = value(r##""#{ENV['ROLE']}/x-#{ENV.fetch("A", 'b')}""##);
        assert_eq!(v.to_relay_string().unwrap(), "${ROLE}/x-${A:-b}");
        let v = value(r##""#{Time.now.to_i}""##);
        assert_eq!(v.unsupported_ruby(), Some("Time.now.to_i"));
        let mut s = scanner(r##""#{ENV['A']"##);
        assert!(matches!(
            s.scan_value(&mut Vec::new()).unwrap_err().kind,
            ParseErrorKind::UnterminatedRuby
        ));
    }

    #[test]
    fn unterminated_strings_report_where_they_started() {
        let mut s = scanner("\n\n\"abc\n\ndef");
        s.skip_spacing();
        let e = s.scan_value(&mut Vec::new()).unwrap_err();
        assert_eq!(e.pos.line, 3);
        assert!(matches!(
            e.kind,
            ParseErrorKind::UnterminatedString("double")
        ));
        let mut s = scanner("'abc\n'");
        assert!(matches!(
            s.scan_value(&mut Vec::new()).unwrap_err().kind,
            ParseErrorKind::UnterminatedString("single")
        ));
    }
}
