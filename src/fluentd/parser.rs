//! The structure of Fluentd's v1 config language, as `Fluent::Config::V1Parser` reads it:
//!
//! ```text
//! file      := (section | include | param)*
//! section   := '<' name arg? '>' EOL (section | include | param)* '</' name '>' EOL
//! include   := ('@include' | 'include') path EOL     (`include` only at the top of a file)
//! param     := key (value)? EOL                       (a key alone has the empty value)
//! ```
//!
//! `@include` is expanded in place: the included files' sections and parameters join the
//! section that includes them. Limits that no real config reaches bound the work a hostile or
//! broken file can cause: [`MAX_DEPTH`] nested sections or includes, [`MAX_FILES`] files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ParseError, ParseErrorKind};
use super::include::{self, Loader};
use super::scanner::{Boundary, Scanner};
use super::syntax::{Directive, Document, Param, Pos, Warning};

/// Deepest nesting of sections, and separately of includes.
pub const MAX_DEPTH: usize = 32;
/// Most files one configuration may read.
pub const MAX_FILES: usize = 1024;

/// Parameters Fluentd itself interprets; any other `@key` in a plugin section is an error.
const RESERVED: &[&str] = &["@type", "@id", "@label", "@log_level"];
/// Sections where an unknown `@key` is an error (elsewhere Fluentd only warns).
const PLUGIN_SECTIONS: &[&str] = &["match", "source", "filter", "system"];

/// A parsed configuration and what was worth a warning while reading it.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The configuration.
    pub document: Document,
    /// Warnings (approximated Ruby, patterns that matched nothing, deprecated syntax).
    pub warnings: Vec<Warning>,
    /// Every file read, the main one first.
    pub files: Vec<PathBuf>,
}

/// Parses `path` and everything it includes.
pub fn parse_file(loader: &dyn Loader, path: &Path) -> Result<Parsed, ParseError> {
    let mut ctx = Context {
        loader,
        warnings: Vec::new(),
        stack: Vec::new(),
        files: Vec::new(),
    };
    let mut params = Vec::new();
    let mut directives = Vec::new();
    let top = Pos::new(&Arc::new(path.to_path_buf()), 1);
    ctx.parse_included(&top, path, &mut params, &mut directives)?;
    Ok(Parsed {
        document: Document { params, directives },
        warnings: ctx.warnings,
        files: ctx.files,
    })
}

/// Parses a configuration given as text (no file system: any `@include` is an error). For the
/// fuzz target and tests.
pub fn parse_str(text: &str, name: &str) -> Result<Parsed, ParseError> {
    struct NoFiles;
    impl Loader for NoFiles {
        fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn glob(&self, _: &str) -> Result<Vec<PathBuf>, String> {
            Ok(Vec::new())
        }
        fn exists(&self, _: &Path) -> bool {
            false
        }
        fn identity(&self, path: &Path) -> PathBuf {
            path.to_path_buf()
        }
    }
    let mut ctx = Context {
        loader: &NoFiles,
        warnings: Vec::new(),
        stack: vec![PathBuf::from(name)],
        files: vec![PathBuf::from(name)],
    };
    let file = Arc::new(PathBuf::from(name));
    let mut sc = Scanner::new(text, file);
    let (mut params, mut directives) = (Vec::new(), Vec::new());
    ctx.parse_body(&mut sc, None, 0, &mut params, &mut directives)?;
    Ok(Parsed {
        document: Document { params, directives },
        warnings: ctx.warnings,
        files: ctx.files,
    })
}

struct Context<'l> {
    loader: &'l dyn Loader,
    warnings: Vec<Warning>,
    /// Identities of the files being parsed, outermost first (loop detection).
    stack: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

/// The section being parsed: its name and where it opened.
struct Open<'n> {
    name: &'n str,
    line: u32,
}

/// After `</`: the end tag, which must close the section `open` (a file's top level has none).
fn end_tag(sc: &mut Scanner<'_>, open: Option<Open<'_>>) -> Result<(), ParseError> {
    let pos = sc.here();
    let name = sc.scan_name().to_owned();
    sc.skip_spacing();
    if !sc.eat(">") {
        return Err(sc.error(ParseErrorKind::Expected("`>` to end the end tag")));
    }
    if !sc.line_end() {
        return Err(sc.error(ParseErrorKind::Expected(
            "the end of the line after the end tag",
        )));
    }
    match open {
        Some(o) if o.name == name => Ok(()),
        _ => Err(ParseError {
            pos,
            kind: ParseErrorKind::UnmatchedEnd {
                found: name,
                expected: open.map(|o| o.name.to_owned()),
            },
        }),
    }
}

impl Context<'_> {
    /// Reads and parses one file into the given lists (the top file, or an included one).
    fn parse_included(
        &mut self,
        from: &Pos,
        path: &Path,
        params: &mut Vec<Param>,
        directives: &mut Vec<Directive>,
    ) -> Result<(), ParseError> {
        let at = |kind| ParseError {
            pos: from.clone(),
            kind,
        };
        let identity = self.loader.identity(path);
        if let Some(start) = self.stack.iter().position(|p| *p == identity) {
            let mut chain = self.stack[start..].to_vec();
            chain.push(identity);
            return Err(at(ParseErrorKind::IncludeLoop { chain }));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(at(ParseErrorKind::TooDeep(MAX_DEPTH)));
        }
        if self.files.len() >= MAX_FILES {
            return Err(at(ParseErrorKind::TooLarge(format!(
                "more than {MAX_FILES} files included"
            ))));
        }
        let bytes = self.loader.read(path).map_err(|source| {
            at(ParseErrorKind::Read {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let file = Arc::new(path.to_path_buf());
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            ParseError {
                pos: Pos::new(&file, u32::try_from(line).unwrap_or(u32::MAX)),
                kind: ParseErrorKind::NotUtf8,
            }
        })?;
        self.files.push(path.to_path_buf());
        self.stack.push(identity);
        let mut sc = Scanner::new(&text, file);
        let result = self.parse_body(&mut sc, None, 0, params, directives);
        self.stack.pop();
        result
    }

    /// Parses the contents of a section (or of a whole file when `open` is `None`) up to its
    /// end tag (or the end of the file).
    fn parse_body(
        &mut self,
        sc: &mut Scanner<'_>,
        open: Option<Open<'_>>,
        depth: usize,
        params: &mut Vec<Param>,
        directives: &mut Vec<Directive>,
    ) -> Result<(), ParseError> {
        loop {
            sc.skip_spacing();
            if sc.eof() {
                return match open {
                    None => Ok(()),
                    Some(o) => Err(sc.error(ParseErrorKind::Unclosed {
                        name: o.name.to_owned(),
                        opened_line: o.line,
                    })),
                };
            }
            if sc.eat("</") {
                return end_tag(sc, open);
            }
            if sc.eat("<") {
                directives.push(self.parse_section(sc, depth)?);
                continue;
            }
            let pos = sc.here();
            if open.is_none() && (sc.starts_with("include ") || sc.starts_with("include\t")) {
                sc.eat("include");
                if sc.skip_blanks() {
                    return Err(sc.error(ParseErrorKind::Expected("a path after `include`")));
                }
                self.warnings.push(Warning {
                    pos: pos.clone(),
                    message: "`include` is deprecated; write `@include`".into(),
                });
                self.include(sc, &pos, params, directives)?;
                continue;
            }
            let key = sc
                .scan_string(Boundary::Spacing, &mut self.warnings)?
                .and_then(|v| v.literal())
                .unwrap_or_default();
            if sc.skip_blanks() {
                params.push(Param {
                    key,
                    value: super::syntax::Value::text("", super::syntax::Quoting::Bare),
                    pos,
                });
                continue;
            }
            if key == "@include" {
                self.include(sc, &pos, params, directives)?;
                continue;
            }
            if key.starts_with('@') && !RESERVED.contains(&key.as_str()) {
                self.unknown_reserved(&key, &pos, open.as_ref())?;
            }
            let value = sc.scan_value(&mut self.warnings)?;
            if !sc.line_end() {
                return Err(sc.error(ParseErrorKind::Expected(
                    "the end of the line after the value (quote a value that contains quotes)",
                )));
            }
            params.push(Param { key, value, pos });
        }
    }

    /// A parameter `key` with Fluentd's reserved `@` prefix that Fluentd does not know: an
    /// error where Fluentd rejects it (top level, plugin sections), else a warning.
    fn unknown_reserved(
        &mut self,
        key: &str,
        pos: &Pos,
        open: Option<&Open<'_>>,
    ) -> Result<(), ParseError> {
        let strict = open.is_none_or(|o| PLUGIN_SECTIONS.contains(&o.name));
        if strict {
            return Err(ParseError {
                pos: pos.clone(),
                kind: ParseErrorKind::ReservedPrefix(key.to_owned()),
            });
        }
        self.warnings.push(Warning {
            pos: pos.clone(),
            message: format!(
                "`{key}`: `@` is reserved for Fluentd's own parameters; Fluentd warns and will reject it"
            ),
        });
        Ok(())
    }

    /// After `<`: the opening tag, the body and the end tag.
    fn parse_section(
        &mut self,
        sc: &mut Scanner<'_>,
        depth: usize,
    ) -> Result<Directive, ParseError> {
        let pos = sc.here();
        if depth >= MAX_DEPTH {
            return Err(sc.error(ParseErrorKind::TooDeep(MAX_DEPTH)));
        }
        let name = sc.scan_name().to_owned();
        if name.is_empty() {
            return Err(sc.error(ParseErrorKind::Expected("a section name after `<`")));
        }
        sc.skip_spacing();
        let arg = sc
            .scan_string(Boundary::TagEnd, &mut self.warnings)?
            .map(|v| match v.literal() {
                Some(text) => Ok(text),
                None => Err(sc.error(ParseErrorKind::Expected(
                    "a section argument without embedded Ruby",
                ))),
            })
            .transpose()?
            .unwrap_or_default();
        sc.skip_spacing();
        let tag_error = |kind| ParseError {
            pos: pos.clone(),
            kind,
        };
        if !sc.eat(">") {
            return Err(tag_error(ParseErrorKind::Expected(
                "`>` to end the section tag on its line",
            )));
        }
        if !sc.line_end() {
            return Err(tag_error(ParseErrorKind::Expected(
                "the end of the line after the section tag",
            )));
        }
        let mut directive = Directive {
            name,
            arg: arg.trim().to_owned(),
            pos,
            params: Vec::new(),
            children: Vec::new(),
        };
        let open = Open {
            name: &directive.name.clone(),
            line: directive.pos.line,
        };
        self.parse_body(
            sc,
            Some(open),
            depth + 1,
            &mut directive.params,
            &mut directive.children,
        )?;
        Ok(directive)
    }

    /// After `@include`: expands the path and parses every match in place.
    fn include(
        &mut self,
        sc: &mut Scanner<'_>,
        pos: &Pos,
        params: &mut Vec<Param>,
        directives: &mut Vec<Directive>,
    ) -> Result<(), ParseError> {
        let value = sc
            .scan_string(Boundary::LineEnd, &mut self.warnings)?
            .ok_or_else(|| sc.error(ParseErrorKind::Expected("a path after `@include`")))?;
        if !sc.line_end() {
            return Err(sc.error(ParseErrorKind::Expected(
                "the end of the line after the included path",
            )));
        }
        let at = |kind| ParseError {
            pos: pos.clone(),
            kind,
        };
        let written = match value.to_relay_string() {
            Some(text) => crate::primitives::interpolate::expand(&text).map_err(|e| {
                at(ParseErrorKind::IncludePattern {
                    pattern: text.clone(),
                    reason: e.to_string(),
                })
            })?,
            None => {
                return Err(at(ParseErrorKind::Expected(
                    "an included path without embedded Ruby other than ENV",
                )))
            }
        };
        let local = written.strip_prefix("file://").unwrap_or(&written);
        if local.contains("://") {
            return Err(at(ParseErrorKind::IncludeRemote(written.clone())));
        }
        let resolved = include::resolve(sc.file(), local);
        let resolved_text = resolved.to_string_lossy().into_owned();
        let mut matches = Vec::new();
        if include::is_pattern(local) {
            for pattern in include::expand_braces(&resolved_text) {
                let found = self.loader.glob(&pattern).map_err(|reason| {
                    at(ParseErrorKind::IncludePattern {
                        pattern: written.clone(),
                        reason,
                    })
                })?;
                matches.extend(found);
            }
            include::sort_like_ruby(&mut matches);
            matches.dedup();
            if matches.is_empty() {
                self.warnings.push(Warning {
                    pos: pos.clone(),
                    message: format!("`@include {written}` matches no file ({resolved_text})"),
                });
            }
        } else if self.loader.exists(&resolved) {
            matches.push(resolved);
        } else {
            return Err(at(ParseErrorKind::IncludeNotFound {
                pattern: written,
                resolved: resolved_text,
            }));
        }
        for path in matches {
            self.parse_included(pos, &path, params, directives)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
