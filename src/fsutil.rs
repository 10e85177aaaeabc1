//! Small file-system helpers: the [`Filesystem`] seam of the file buffer (where tests inject
//! faults), crash-safe writes, and names as path components.
//!
//! # The seam
//!
//! Every file operation of the file buffer (its writer, store, recovery, reads and quarantine:
//! `src/buffer/file/`) goes through [`Filesystem`], on the type [`Fs`]. In every build but the
//! crate's own unit tests `Fs` is [`RealFs`], a zero-sized type whose `#[inline]` methods are
//! the `std::fs` calls themselves, called by static dispatch (no trait object, no vtable): the
//! seam adds no field, branch or call to the binary. Under `cfg(test)` `Fs` is `faults::FaultFs`, which
//! passes every call through to [`RealFs`] unless a test armed a fault for it (`EIO`,
//! `ENOSPC`, `EMFILE`, a short write, a failed `fdatasync`), and which can simulate a power
//! loss (every file cut back to what was last synced).
//!
//! Checked on the release binary (`cargo build --release` of a829508, the seam as it is here;
//! the machine shared by about seven builds, load average 18):
//!
//! * `nm -C target/release/firehose-relay | grep -ci faultfs` prints 0: the fault layer is not
//!   in the binary.
//! * `nm -C target/release/firehose-relay | grep RealFs` prints one symbol of 52,416,
//!   `<RealFs as Filesystem>::sync_dir` (a plain function: it opens the directory and fsyncs
//!   it, called directly); every other `RealFs` method is inlined into its callers. The only
//!   other `Filesystem` symbols are the default methods `write_atomic` and `create_dir_all`,
//!   monomorphised for `RealFs` (direct calls as well).
//! * In `objdump -d -C` of `buffer::file::writer::Writer::apply`, the group commit, the libc
//!   calls are made from the function itself: `write`, `fdatasync`, `fsync`, `ftruncate64`,
//!   `unlink`, `fstat64`, `close` through the PLT/GOT, and `open` through std's
//!   `File::open_c`; the function's indirect calls are `free` through the GOT, two direct
//!   calls to our own functions through position-independent GOT entries (`encode_frames`,
//!   `Space::refuse`, per `readelf -r`) and drops of boxed errors. No call goes through a
//!   `Filesystem` vtable, and `fdatasync` is likewise called straight from
//!   `recovery::recover` (the adopted-file sync, inlined).
//!
//! So the seam costs nothing at run time: the binary calls what it would call without it. No
//! benchmark of a build without the seam was run (a second release build takes ~40 minutes
//! here); the generated code is the evidence.

use std::fs::File;
use std::io;
use std::path::Path;

#[cfg(test)]
pub mod faults;

/// How [`Filesystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only.
    Read,
    /// Write, creating it; fails if it exists (`O_CREAT | O_EXCL`).
    CreateNew,
    /// Write, creating or truncating it.
    CreateTruncate,
    /// Append to an existing file.
    Append,
    /// Write an existing file in place (to truncate it).
    Write,
}

/// The file operations the file buffer uses, so that tests can make any of them fail.
/// Methods take the path of the file they act on so that a fault can be aimed at it.
pub trait Filesystem: Send + Sync + 'static {
    /// Opens `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<File>;
    /// Writes all of `data` to `file` (which is `path`), at its position.
    fn write_all(&self, file: &mut File, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Writes all of `data` to `file` (which is `path`) at `offset` (`pwrite(2)`): how a
    /// reused chunk file is overwritten in place.
    fn write_all_at(&self, file: &File, path: &Path, data: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync(2)` of `file`.
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// `fsync(2)` of `file`.
    fn sync_all(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Truncates (or extends) `file` to `len` bytes.
    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// Reads the whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Copies `from` to `to` (created or truncated), without reading it into memory.
    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64>;
    /// `rename(2)`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `unlink(2)`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `mkdir(2)` of one directory (its parent must exist).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// `fsync(2)` of a directory, so that entries created, renamed or removed in it survive a
    /// power loss.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Creates `dir` and any missing parents, **durably**: every directory created is fsynced
    /// and so is its parent (a new directory's entry lives in its parent). `dir` and its
    /// parent are fsynced even if they existed: they may have been created by a run that was
    /// killed before it synced them, and whatever is put in `dir` next relies on them.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut cur = dir;
        while !cur.is_dir() {
            missing.push(cur);
            match cur.parent() {
                Some(p) if !p.as_os_str().is_empty() => cur = p,
                _ => break,
            }
        }
        for d in missing.into_iter().rev() {
            match self.create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(e),
            }
            if let Some(p) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.sync_dir(p)?;
            }
        }
        self.sync_dir(dir)?;
        match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => self.sync_dir(p),
            None => Ok(()),
        }
    }

    /// Writes `data` to `dest` atomically and durably: temporary file, fsync, rename, fsync
    /// of the directory; the directory is created durably first ([`Filesystem::create_dir_all`]).
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> io::Result<()> {
        let dir = dest.parent().unwrap_or_else(|| Path::new("."));
        self.create_dir_all(dir)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        let tmp = dir.join(format!(".{name}.tmp"));
        {
            let mut f = self.open(&tmp, OpenMode::CreateTruncate)?;
            self.write_all(&mut f, &tmp, data)?;
            self.sync_all(&f, &tmp)?;
        }
        self.rename(&tmp, dest)?;
        self.sync_dir(dir)
    }
}

/// The real file system: each method is the `std::fs` call it names.
#[derive(Debug, Clone, Default)]
pub struct RealFs;

impl Filesystem for RealFs {
    #[inline]
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<File> {
        let mut o = std::fs::OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::CreateNew => o.write(true).create_new(true),
            OpenMode::CreateTruncate => o.write(true).create(true).truncate(true),
            OpenMode::Append => o.append(true),
            OpenMode::Write => o.write(true),
        };
        o.open(path)
    }
    #[inline]
    fn write_all(&self, file: &mut File, _path: &Path, data: &[u8]) -> io::Result<()> {
        io::Write::write_all(file, data)
    }
    #[inline]
    fn write_all_at(&self, file: &File, _path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(file, data, offset)
    }
    #[inline]
    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }
    #[inline]
    fn sync_all(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }
    #[inline]
    fn set_len(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    #[inline]
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    #[inline]
    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        std::fs::copy(from, to)
    }
    #[inline]
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    #[inline]
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    #[inline]
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    #[inline]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The file system the file buffer uses: [`RealFs`], except in the crate's unit tests, where
/// it is `faults::FaultFs` (the real one plus faults a test arms).
#[cfg(not(test))]
pub type Fs = RealFs;
/// The file system the file buffer uses: [`RealFs`], except in the crate's unit tests, where
/// it is `faults::FaultFs` (the real one plus faults a test arms).
#[cfg(test)]
pub type Fs = faults::FaultFs;

/// Fsyncs a directory so that a rename or create inside it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    RealFs.sync_dir(dir)
}

/// Writes `data` to `dest` atomically: temporary file, fsync, rename, fsync of the directory
/// (created durably if missing: [`Filesystem::write_atomic`]).
pub fn write_atomic(dest: &Path, data: &[u8]) -> io::Result<()> {
    RealFs.write_atomic(dest, data)
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
