//! The parser against Fluentd's syntax, including files from an in-memory file system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::fluentd::include::Loader;
use crate::fluentd::syntax::Segment;

/// Files by absolute path; globs match `*` within one path component.
struct MemFs(BTreeMap<PathBuf, String>);

impl MemFs {
    fn new(files: &[(&str, &str)]) -> Self {
        MemFs(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
                .collect(),
        )
    }
}

impl Loader for MemFs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.0
            .get(path)
            .map(|t| t.clone().into_bytes())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let pattern = glob::Pattern::new(pattern).map_err(|e| e.to_string())?;
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        // Reverse order on purpose: the parser must sort.
        Ok(self
            .0
            .keys()
            .rev()
            .filter(|p| pattern.matches_path_with(p, options))
            .cloned()
            .collect())
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }
    fn identity(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

fn parse(files: &[(&str, &str)]) -> Result<Parsed, ParseError> {
    parse_file(&MemFs::new(files), Path::new(files[0].0))
}

fn ok(text: &str) -> Parsed {
    parse(&[("/etc/fluent/fluent.conf", text)]).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> ParseError {
    parse(&[("/etc/fluent/fluent.conf", text)]).unwrap_err()
}

fn lit(d: &Directive, key: &str) -> String {
    d.param(key).unwrap().value.literal().unwrap()
}

#[test]
fn sections_parameters_and_positions() {
    let p = ok(r#"
# a comment
<source>
  @type forward
  port 24224   # trailing comment
</source>

<match app.** system.*>
  @type kinesis_firehose
  delivery_stream_name "logs"
  <buffer tag, time>
    timekey 1h
  </buffer>
</match>
"#);
    let d = &p.document.directives;
    assert_eq!(d.len(), 2);
    assert_eq!((d[0].name.as_str(), d[0].pos.line), ("source", 3));
    assert_eq!(lit(&d[0], "port"), "24224");
    assert_eq!(d[0].param("port").unwrap().pos.line, 5);
    assert_eq!(d[1].arg, "app.** system.*");
    assert_eq!(d[1].children[0].arg, "tag, time");
    assert_eq!(d[1].children[0].pos.line, 11);
    assert_eq!(lit(&d[1].children[0], "timekey"), "1h");
    assert_eq!(d[1].pos.to_string(), "/etc/fluent/fluent.conf:8");
}

#[test]
fn a_key_alone_has_the_empty_value_and_later_keys_win() {
    let p = ok("<source>\n  @type sample\n  flag\n  rate 1\n  rate 2\n</source>\n");
    let s = &p.document.directives[0];
    assert_eq!(lit(s, "flag"), "");
    assert_eq!(lit(s, "rate"), "2");
}

#[test]
fn multi_line_json_values() {
    let p = ok("<source>\n  @type sample\n  sample [\n    {\"message\": \"one\"},\n    {\"message\": \"two\"}\n  ]\n  tag x\n</source>\n");
    let s = &p.document.directives[0];
    assert_eq!(lit(s, "sample"), r#"[{"message":"one"},{"message":"two"}]"#);
    assert_eq!(lit(s, "tag"), "x");
}

#[test]
fn includes_are_relative_sorted_and_expanded_in_place() {
    let p = parse(&[
        (
            "/etc/fluent/fluent.conf",
            "<system>\n</system>\n@include conf.d/*.conf\n<label @X>\n  @include label.conf\n</label>\n",
        ),
        ("/etc/fluent/conf.d/20-out.conf", "<match **>\n  @type stdout\n</match>\n"),
        (
            "/etc/fluent/conf.d/10-in.conf",
            "<source>\n  @type forward\n</source>\n",
        ),
        ("/etc/fluent/conf.d/.hidden.conf", "<broken"),
        ("/etc/fluent/label.conf", "<filter **>\n  @type stdout\n</filter>\n"),
    ])
    .unwrap();
    let names: Vec<(&str, String)> = p
        .document
        .directives
        .iter()
        .map(|d| (d.name.as_str(), d.pos.to_string()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("system", "/etc/fluent/fluent.conf:1".into()),
            ("source", "/etc/fluent/conf.d/10-in.conf:1".into()),
            ("match", "/etc/fluent/conf.d/20-out.conf:1".into()),
            ("label", "/etc/fluent/fluent.conf:4".into()),
        ]
    );
    assert_eq!(p.document.directives[3].children[0].name, "filter");
    assert_eq!(p.files.len(), 4);
}

#[test]
fn include_errors_name_the_including_line() {
    let e = parse(&[("/a/fluent.conf", "\n@include missing.conf\n")]).unwrap_err();
    assert_eq!(e.pos.to_string(), "/a/fluent.conf:2");
    assert!(
        matches!(e.kind, ParseErrorKind::IncludeNotFound { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("/a/missing.conf"), "{e}");

    let e = parse(&[
        ("/a/fluent.conf", "@include b.conf\n"),
        ("/a/b.conf", "<source>\n</source>\n@include fluent.conf\n"),
    ])
    .unwrap_err();
    assert_eq!(e.pos.to_string(), "/a/b.conf:3");
    assert_eq!(
        e.to_string(),
        "/a/b.conf:3: `@include` loop: /a/fluent.conf includes /a/b.conf includes /a/fluent.conf"
    );

    let e = parse(&[("/a/fluent.conf", "@include http://example.com/x.conf\n")]).unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::IncludeRemote(_)));

    let p = parse(&[("/a/fluent.conf", "@include conf.d/*.conf\n")]).unwrap();
    assert!(p.warnings[0].message.contains("matches no file"));
}

#[test]
fn malformed_configs_are_errors_with_lines() {
    let cases: &[(&str, u32, &str)] = &[
        (
            "<source>\n  @type forward\n",
            3,
            "`<source>` opened at line 1 is never closed",
        ),
        (
            "<source>\n</match>\n",
            2,
            "`</match>` does not match the open `<source>`",
        ),
        ("</match>\n", 1, "closes no open section"),
        ("<match **\n</match>\n", 1, "expected `>`"),
        (
            "<match **>\n  key \"abc\n</match>\n",
            2,
            "unterminated double-quoted",
        ),
        (
            "<match **>\n  key 'abc\n</match>\n",
            2,
            "unterminated single-quoted",
        ),
        (
            "<match **>\n  key \"a\" b\n</match>\n",
            2,
            "expected the end of the line",
        ),
        ("<source>\n  @bogus 1\n</source>\n", 2, "`@bogus`"),
        ("<source>\n  sample [1,\n", 2, "invalid JSON array"),
        ("<match>\n  k \"#{ENV['X']\"\n", 2, "never closed"),
        ("<>\n", 1, "expected a section name"),
        (
            "<a> x\n</a>\n",
            1,
            "expected the end of the line after the section tag",
        ),
    ];
    for (text, line, message) in cases {
        let e = err(text);
        assert_eq!(e.pos.line, *line, "{text:?}: {e}");
        assert!(e.to_string().contains(message), "{text:?}: {e}");
    }
}

#[test]
fn not_utf8_is_an_error_with_its_line() {
    struct Bytes;
    impl Loader for Bytes {
        fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> {
            Ok(b"<source>\n  tag \xff\n</source>\n".to_vec())
        }
        fn glob(&self, _: &str) -> Result<Vec<PathBuf>, String> {
            Ok(vec![])
        }
        fn exists(&self, _: &Path) -> bool {
            true
        }
        fn identity(&self, p: &Path) -> PathBuf {
            p.to_path_buf()
        }
    }
    let e = parse_file(&Bytes, Path::new("x.conf")).unwrap_err();
    assert_eq!(e.to_string(), "x.conf:2: the file is not valid UTF-8");
}

#[test]
fn nesting_is_bounded() {
    let deep = "<a>\n".repeat(MAX_DEPTH + 1);
    assert!(matches!(err(&deep).kind, ParseErrorKind::TooDeep(_)));
}

#[test]
fn nested_unknown_at_keys_warn_and_env_ruby_is_mapped() {
    let p = ok("<match **>\n  <buffer>\n    @odd 1\n  </buffer>\n  role \"#{ENV['R'] || fallback}\"\n</match>\n");
    assert!(p.warnings.iter().any(|w| w.message.contains("`@odd`")));
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("not quoted") && w.pos.line == 5));
    let role = &p.document.directives[0].param("role").unwrap().value;
    assert_eq!(
        role.segments,
        vec![Segment::Env {
            name: "R".into(),
            default: Some("fallback".into())
        }]
    );
}

#[test]
fn parse_str_refuses_includes() {
    let e = parse_str("@include x.conf\n", "fuzz").unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::IncludeNotFound { .. }));
    assert!(parse_str("<source>\n</source>", "fuzz").is_ok());
}
