//! Small file-system helpers: crash-safe writes, and names as path components.

use std::path::Path;

/// Fsyncs a directory so that a rename or create inside it survives a power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `data` to `dest` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = dest.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dest)?;
    sync_dir(dir)
}

/// A name (an output's) as one path component: ASCII letters, digits, `-` and `_` stay, every
/// other byte becomes `%XX`, so different names never share a directory or file name, and no
/// name can climb out of its parent (`.`, `/`). The buffer's chunk directories, the dead-letter
/// directories and quarantine file names all use it.
pub fn path_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_already_safe_are_kept() {
        assert_eq!(path_component("firehose-logs_2"), "firehose-logs_2");
        assert_eq!(path_component("a.b"), "a%2Eb");
        assert_eq!(path_component(".."), "%2E%2E");
        assert_eq!(path_component("é/x"), "%C3%A9%2Fx");
    }

    proptest::proptest! {
        /// Different names, different components; every component is one safe file name.
        #[test]
        fn the_encoding_is_collision_free_and_safe(a in ".{0,12}", b in ".{0,12}") {
            let (ea, eb) = (path_component(&a), path_component(&b));
            proptest::prop_assert_eq!(a == b, ea == eb);
            proptest::prop_assert!(ea
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_%".contains(&c)));
        }
    }
}
