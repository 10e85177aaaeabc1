//! The README against the code, so that the documentation cannot drift: every key `check`
//! prints for the shipped configs is in the README's tables, the command-line summary matches
//! the binary's flags, the prerequisites state the crate's `rust-version`, and the quick start
//! stays two commands.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn relay_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firehose-relay"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("read README.md")
}

/// The text under the heading that starts with `heading` (e.g. `### Buffer`), up to the next
/// heading of any level.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no heading `{heading}`"));
    let mut offset = 0;
    let mut end = readme.len();
    for (i, line) in readme.lines().enumerate() {
        if i > start && line.starts_with('#') {
            end = offset;
            break;
        }
        offset += line.len() + 1;
    }
    let begin: usize = readme.lines().take(start).map(|l| l.len() + 1).sum();
    &readme[begin..end]
}

/// The names in backquotes in the first cell of every table row of `text`.
fn table_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let first = line.split('|').nth(1).unwrap_or_default();
        keys.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    keys
}

/// Where a key is documented: the README sections that may hold it, and the prefix its table
/// rows write before it (`http.`, `security.`).
struct Place {
    sections: Vec<&'static str>,
    prefix: String,
}

impl Place {
    fn new(sections: &[&'static str]) -> Place {
        Place {
            sections: sections.to_vec(),
            prefix: String::new(),
        }
    }

    fn below(&self, table: &str) -> Place {
        Place {
            sections: self.sections.clone(),
            prefix: format!("{}{table}.", self.prefix),
        }
    }

    /// Whether `key` (with `value`) is in a table of these sections. `type` may also be
    /// documented in the text, as ``type = "sample"``.
    fn documents(&self, readme: &str, key: &str, value: &toml::Value) -> bool {
        self.sections.iter().any(|h| {
            let text = section(readme, h);
            let full = format!("{}{key}", self.prefix);
            table_keys(text).contains(&full)
                || (key == "type"
                    && value
                        .as_str()
                        .is_some_and(|v| text.contains(&format!("`type = \"{v}\"`"))))
        })
    }
}

/// Every key of `table` (descending into sub-tables that are not themselves documented keys,
/// like `security`) not documented at `place`, as dotted paths under `path`.
fn undocumented(
    readme: &str,
    table: &toml::Table,
    place: &Place,
    path: &str,
    missing: &mut Vec<String>,
) {
    for (key, value) in table {
        if place.documents(readme, key, value) {
            continue;
        }
        match value {
            toml::Value::Table(t) => undocumented(
                readme,
                t,
                &place.below(key),
                &format!("{path}{key}."),
                missing,
            ),
            _ => missing.push(format!("{path}{key}")),
        }
    }
}

/// Keys of a whole effective config missing from the README.
fn undocumented_keys(readme: &str, config: &toml::Table) -> Vec<String> {
    let mut missing = Vec::new();
    let top = Place::new(&["### Top level"]);
    for (key, value) in config {
        match (key.as_str(), value) {
            ("sources" | "filters" | "outputs", toml::Value::Table(components)) => {
                for (name, component) in components {
                    let component = component.as_table().expect("a component is a table");
                    let kind = component.get("type").and_then(|t| t.as_str());
                    let sections: &[&'static str] = match (key.as_str(), kind) {
                        ("sources", Some("forward")) => &["### Forward source"],
                        ("sources", _) => &["### Sources"],
                        ("filters", _) => &["### Filters"],
                        ("outputs", Some("firehose")) => &["### Outputs", "### Firehose output"],
                        _ => &["### Outputs"],
                    };
                    let place = Place::new(sections);
                    let path = format!("{key}.{name}.");
                    for (k, v) in component {
                        let sub = match k.as_str() {
                            "buffer" if key == "outputs" => Some("### Buffer"),
                            "credentials" if key == "outputs" => Some("#### Credentials"),
                            _ => None,
                        };
                        match (sub, v) {
                            (Some(h), toml::Value::Table(t)) => undocumented(
                                readme,
                                t,
                                &Place::new(&[h]),
                                &format!("{path}{k}."),
                                &mut missing,
                            ),
                            _ => {
                                let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                                undocumented(readme, &one, &place, &path, &mut missing);
                            }
                        }
                    }
                }
            }
            _ => {
                let one = toml::Table::from_iter([(key.clone(), value.clone())]);
                undocumented(readme, &one, &top, "", &mut missing);
            }
        }
    }
    missing
}

/// What `check` prints for a shipped config, parsed. `conf/relay.toml` is checked with
/// `--no-credentials`, as the README tells users to outside the pod.
fn effective_config(name: &str) -> toml::Table {
    let out = Command::new(relay_bin())
        .args(["check", "--no-credentials", "--config"])
        .arg(root().join("conf").join(name))
        .env_remove("RELAY_CONFIG")
        .env_remove("AWS_ROLE_ARN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .output()
        .expect("run firehose-relay check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check {name}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.parse()
        .unwrap_or_else(|e| panic!("check {name} printed no TOML ({e}):\n{text}"))
}

#[test]
fn every_key_check_prints_for_the_shipped_configs_is_in_the_readme_tables() {
    let readme = readme();
    let mut configs: Vec<String> = std::fs::read_dir(root().join("conf"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    configs.sort();
    assert!(
        configs.len() >= 2,
        "the shipped configs: {configs:?} (quickstart.toml, relay.toml)"
    );
    for name in configs {
        let config = effective_config(&name);
        assert!(config.contains_key("outputs"), "{name}: {config:?}");
        let missing = undocumented_keys(&readme, &config);
        assert!(
            missing.is_empty(),
            "`check --config conf/{name}` prints keys the README's tables do not document: \
             {missing:?}"
        );
    }
}

#[test]
fn the_docs_check_finds_a_key_missing_from_the_tables() {
    // The checker itself can fail: keys no table has, at every level it looks at.
    let readme = readme();
    let config: toml::Table = r#"
data_dir = "/x"
no_such_top_level_key = 1
[http]
no_such_http_key = 1
[sources.s]
type = "forward"
no_such_forward_key = 1
[sources.s.security]
no_such_security_key = 1
[outputs.o]
type = "firehose"
no_such_firehose_key = 1
[outputs.o.buffer]
flush_intervall = "5s"
[outputs.o.credentials]
type = "web_identity"
no_such_credentials_key = 1
"#
    .parse()
    .unwrap();
    let mut missing = undocumented_keys(&readme, &config);
    missing.sort();
    assert_eq!(
        missing,
        [
            "http.no_such_http_key",
            "no_such_top_level_key",
            "outputs.o.buffer.flush_intervall",
            "outputs.o.credentials.no_such_credentials_key",
            "outputs.o.no_such_firehose_key",
            "sources.s.no_such_forward_key",
            "sources.s.security.no_such_security_key",
        ]
    );
}

#[test]
fn the_prerequisites_state_the_crates_rust_version() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let version = manifest["package"]["rust-version"].as_str().unwrap();
    let readme = readme();
    let text = section(&readme, "## Prerequisites");
    assert!(
        text.contains(&format!("**Rust {version} or newer**")),
        "README's prerequisites must name rust-version {version}:\n{text}"
    );
}

#[test]
fn the_quick_start_is_two_commands_on_the_shipped_quickstart_config() {
    let readme = readme();
    let text = section(&readme, "## Quick start");
    let block = text
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in the quick start");
    let commands: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(commands.len() <= 2, "{commands:?}");
    assert!(
        commands[0].starts_with("cargo run --release -- --config conf/quickstart.toml"),
        "{commands:?}"
    );
    assert!(root().join("conf/quickstart.toml").is_file());
}

#[test]
fn the_command_line_summary_matches_the_binarys_flags() {
    let readme = readme();
    let text = section(&readme, "## Command line");
    // How to get the binary is said before it is used.
    for how in [
        "cargo install --locked --path .",
        "./target/release/firehose-relay",
    ] {
        assert!(text.contains(how), "{how}");
    }
    let block = text
        .split("```\n")
        .nth(1)
        .expect("the command summary block");
    let mut checked = 0;
    for line in block.lines().filter(|l| l.starts_with("firehose-relay ")) {
        // `firehose-relay buffer stats|dump [--data-dir DIR]   comment`: the words up to
        // the comment, optional `[run]` dropped, alternatives each checked.
        let words: Vec<&str> = line
            .split("   ")
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect();
        let flags: Vec<&str> = words
            .iter()
            .filter_map(|w| w.trim_start_matches('[').strip_prefix("--"))
            .map(|f| f.trim_end_matches(']'))
            .collect();
        let commands: Vec<&str> = words
            .iter()
            .take_while(|w| !w.starts_with("[--"))
            .map(|w| w.trim_matches(|c| c == '[' || c == ']'))
            .collect();
        let (first, rest) = commands.split_first().expect("a subcommand");
        let actions: Vec<&str> = rest
            .first()
            .map(|r| r.split('|').collect())
            .unwrap_or_default();
        let variants: Vec<Vec<&str>> = if actions.is_empty() {
            vec![vec![*first]]
        } else {
            actions.iter().map(|a| vec![*first, a]).collect()
        };
        for args in variants {
            let out = Command::new(relay_bin())
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{args:?} --help: {help}");
            for flag in &flags {
                assert!(
                    help.contains(&format!("--{flag}")),
                    "README line `{line}`: `{args:?}` has no --{flag}:\n{help}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} commands found in:\n{block}");
}
