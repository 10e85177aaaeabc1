//! Where `@include` finds files. Fluentd resolves a relative path against the directory of the
//! file that includes it, expands it with Ruby's `Dir.glob` (`*`, `?`, `[…]`, `{a,b}`, `**/`;
//! `*` does not match a leading dot) and includes the matches sorted by their path's bytes.
//!
//! Two deliberate differences, both towards clearer errors: an `@include` of a plain path that
//! does not exist is an error (Fluentd includes nothing), and a pattern that matches nothing is
//! a warning.

use std::io;
use std::path::{Path, PathBuf};

/// The file system as the parser sees it; tests and the fuzz target use their own.
pub trait Loader {
    /// The bytes of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Existing paths matching a glob pattern (braces already expanded), in any order.
    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String>;
    /// True when `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// A stable identity of `path` for include-loop detection (symlinks resolved).
    fn identity(&self, path: &Path) -> PathBuf;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsLoader;

/// Largest config file read (Fluentd configs are kilobytes; this bounds memory).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(io::Error::other(format!(
                "larger than {} MiB",
                MAX_FILE_BYTES >> 20
            )));
        }
        Ok(bytes)
    }

    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let paths = glob::glob_with(pattern, options).map_err(|e| e.to_string())?;
        Ok(paths.filter_map(Result::ok).collect())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn identity(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// True when `path` holds glob syntax.
pub fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// Expands `{a,b}` alternatives (nested too) as Ruby's `Dir.glob` does before matching.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let bytes = pattern.as_bytes();
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_owned()];
    };
    let mut depth = 0usize;
    let mut commas = Vec::new();
    let mut close = None;
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
    // An unbalanced brace is literal text, as in Ruby.
    let Some(close) = close else {
        return vec![pattern.to_owned()];
    };
    let (prefix, suffix) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    bounds
        .windows(2)
        .flat_map(|w| expand_braces(&format!("{prefix}{}{suffix}", &pattern[w[0] + 1..w[1]])))
        .collect()
}

/// Sorts paths the way Ruby sorts strings: by bytes.
pub fn sort_like_ruby(paths: &mut [PathBuf]) {
    paths.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
}

/// A path written in `@include`, resolved against the including file's directory.
pub fn resolve(including_file: &Path, written: &str) -> PathBuf {
    let path = Path::new(written);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        including_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_like_ruby() {
        assert_eq!(expand_braces("a/{x,y}.conf"), vec!["a/x.conf", "a/y.conf"]);
        assert_eq!(expand_braces("{a,b{c,d}}/*"), vec!["a/*", "bc/*", "bd/*"]);
        assert_eq!(expand_braces("a{b"), vec!["a{b"]);
    }

    #[test]
    fn paths_sort_by_bytes() {
        let mut p: Vec<PathBuf> = [
            "conf.d/b.conf",
            "conf.d/B.conf",
            "conf.d/a-x.conf",
            "conf.d/a.conf",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        sort_like_ruby(&mut p);
        assert_eq!(
            p,
            [
                "conf.d/B.conf",
                "conf.d/a-x.conf",
                "conf.d/a.conf",
                "conf.d/b.conf"
            ]
            .iter()
            .map(PathBuf::from)
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn relative_includes_resolve_against_the_including_file() {
        assert_eq!(
            resolve(Path::new("/etc/fluent/fluent.conf"), "conf.d/*.conf"),
            PathBuf::from("/etc/fluent/conf.d/*.conf")
        );
        assert_eq!(
            resolve(Path::new("fluent.conf"), "x.conf"),
            PathBuf::from("x.conf")
        );
        assert_eq!(
            resolve(Path::new("/a/b.conf"), "/c.conf"),
            PathBuf::from("/c.conf")
        );
    }
}
