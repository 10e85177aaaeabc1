//! The layout rules, kept by tests because new code breaks them easily: the top level holds only
//! what the README names, and no source file under `src/` is over 600 lines, test modules
//! (`tests.rs`, `prop_tests.rs`, files under a `tests/` directory) excepted. A file that grows past it is split into modules with
//! one job each (see how `buffer/file/queue/append.rs` or `sink/aws_batch/pacing/` did it).

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_module(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut too_long: Vec<String> = files
        .iter()
        .filter(|p| !is_test_module(p))
        .filter_map(|p| {
            let lines = std::fs::read_to_string(p)
                .expect("read source")
                .lines()
                .count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", p.display()))
        })
        .collect();
    too_long.sort();
    assert!(
        too_long.is_empty(),
        "split these into modules with one job each (limit {MAX_LINES} lines):\n  {}",
        too_long.join("\n  ")
    );
}

/// The top level of the repository holds what the README names (`Cargo.toml`, `src/`, `conf/`,
/// `tests/`, `fuzz/`, `benches/`, `Dockerfile`, `README.md`, `.ci/`) and what tools need there
/// (`Cargo.lock`, git's files, a default `target/`); anything else (a proptest regression
/// directory written by a test, a scratch file) belongs inside one of them.
#[test]
fn the_top_level_holds_only_what_the_readme_names() {
    const ALLOWED: &[&str] = &[
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "conf",
        "tests",
        "fuzz",
        "benches",
        "Dockerfile",
        "README.md",
        ".ci",
        ".git",
        ".gitignore",
        ".dockerignore",
        "target",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut extra: Vec<String> = std::fs::read_dir(root)
        .expect("read the repository's top level")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !ALLOWED.contains(&name.as_str()))
        .collect();
    extra.sort();
    assert!(
        extra.is_empty(),
        "move these into src/, tests/, benches/ or conf/ (or give them a place in the README): {extra:?}"
    );
}
