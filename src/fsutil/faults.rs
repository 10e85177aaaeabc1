//! [`FaultFs`]: the real file system plus faults a test arms, and a simulated power loss. The
//! file buffer's unit tests open their store with one ([`crate::buffer::file::Store::open_with`])
//! and make chosen operations fail: with an errno (`EIO`, `ENOSPC`, `EMFILE`, ...), as a short
//! write (part of the bytes written, then an error), at the n-th matching call, once or for
//! good.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Filesystem, OpenMode, RealFs};

/// An operation of [`Filesystem`], to aim a fault at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsOp {
    /// [`Filesystem::open`].
    Open,
    /// [`Filesystem::write_all`].
    Write,
    /// [`Filesystem::sync_data`].
    SyncData,
    /// [`Filesystem::sync_all`].
    SyncAll,
    /// [`Filesystem::set_len`].
    SetLen,
    /// [`Filesystem::read`].
    Read,
    /// [`Filesystem::copy`].
    Copy,
    /// [`Filesystem::rename`].
    Rename,
    /// [`Filesystem::remove_file`].
    Remove,
    /// [`Filesystem::create_dir`].
    CreateDir,
    /// [`Filesystem::sync_dir`].
    SyncDir,
}

/// What an armed fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this errno and does nothing.
    Errno(i32),
    /// A write stores the first half of its bytes, then fails with this errno (what a write
    /// that runs out of space does). On other operations: the same as [`Fault::Errno`].
    ShortWrite(i32),
}

impl Fault {
    fn errno(self) -> i32 {
        match self {
            Fault::Errno(e) | Fault::ShortWrite(e) => e,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    op: FsOp,
    path_contains: String,
    skip: u32,
    times: Option<u32>,
    fault: Fault,
}

#[derive(Debug, Default)]
struct Plan {
    rules: Vec<Rule>,
    calls: Vec<(FsOp, PathBuf)>,
    injected: Vec<(FsOp, PathBuf, Fault)>,
    /// Length of each file written through this file system as of its last successful sync.
    synced: BTreeMap<PathBuf, u64>,
    /// Files written (or cut) since their last successful sync.
    dirty: BTreeSet<PathBuf>,
    /// Bytes overwritten in place since the file's last successful sync, as they were (offset,
    /// old bytes), oldest first: a power loss puts them back.
    overwritten: BTreeMap<PathBuf, Vec<(u64, Vec<u8>)>>,
}

/// The real file system, plus faults and a power-loss simulation. `Default` is a plain
/// pass-through that records nothing; [`FaultFs::new`] makes one tests can arm. Clones share
/// their faults and records, so a test keeps a clone of the one it gave the store.
#[derive(Debug, Clone, Default)]
pub struct FaultFs {
    plan: Option<Arc<Mutex<Plan>>>,
}

impl FaultFs {
    /// A fault-injecting file system with nothing armed yet.
    pub fn new() -> FaultFs {
        FaultFs {
            plan: Some(Arc::default()),
        }
    }

    fn plan(&self) -> Option<MutexGuard<'_, Plan>> {
        self.plan
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes the next call of `op` on a path containing `path_contains` fail (once).
    pub fn fail_once(&self, op: FsOp, path_contains: &str, fault: Fault) {
        self.fail(op, path_contains, 0, Some(1), fault);
    }

    /// Arms a fault: of the calls of `op` on a path containing `path_contains`, the first
    /// `skip` pass, then `times` of them fail (`None`: every one until [`FaultFs::clear`]).
    pub fn fail(&self, op: FsOp, path_contains: &str, skip: u32, times: Option<u32>, fault: Fault) {
        if let Some(mut p) = self.plan() {
            p.rules.push(Rule {
                op,
                path_contains: path_contains.to_owned(),
                skip,
                times,
                fault,
            });
        }
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        if let Some(mut p) = self.plan() {
            p.rules.clear();
        }
    }

    /// Every call so far, in order, with the path it acted on.
    pub fn calls(&self) -> Vec<(FsOp, PathBuf)> {
        self.plan().map(|p| p.calls.clone()).unwrap_or_default()
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<(FsOp, PathBuf, Fault)> {
        self.plan().map(|p| p.injected.clone()).unwrap_or_default()
    }

    /// Simulates a power loss (call it with the store closed): every file written through this
    /// file system since its last successful `fdatasync`/`fsync` gets back the bytes it
    /// overwrote in place since then and is cut back to the length it had then (to nothing if
    /// it was never synced). Returns the files changed.
    pub fn power_loss(&self) -> Vec<PathBuf> {
        let Some(mut p) = self.plan() else {
            return Vec::new();
        };
        let mut cut = Vec::new();
        let mut overwritten = std::mem::take(&mut p.overwritten);
        for path in std::mem::take(&mut p.dirty) {
            let len = p.synced.get(&path).copied().unwrap_or(0);
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let mut changed = false;
                for (at, old) in overwritten.remove(&path).unwrap_or_default().iter().rev() {
                    changed |= std::os::unix::fs::FileExt::write_all_at(&f, old, *at).is_ok();
                }
                if f.metadata().is_ok_and(|m| m.len() > len) && f.set_len(len).is_ok() {
                    changed = true;
                }
                if changed {
                    cut.push(path);
                }
            }
        }
        cut
    }

    /// Records the call and returns the fault to inject, if one is armed for it.
    fn check(&self, op: FsOp, path: &Path) -> Option<Fault> {
        let mut p = self.plan()?;
        p.calls.push((op, path.to_owned()));
        let text = path.to_string_lossy();
        let mut hit = None;
        for r in p.rules.iter_mut() {
            if r.op != op || !text.contains(r.path_contains.as_str()) || r.times == Some(0) {
                continue;
            }
            if r.skip > 0 {
                r.skip -= 1;
                continue;
            }
            if let Some(t) = r.times.as_mut() {
                *t -= 1;
            }
            hit = Some(r.fault);
            break;
        }
        p.rules.retain(|r| r.times != Some(0));
        if let Some(f) = hit {
            p.injected.push((op, path.to_owned(), f));
        }
        hit
    }

    fn dirty(&self, path: &Path, len_before: impl FnOnce() -> u64) {
        if let Some(mut p) = self.plan() {
            if !p.synced.contains_key(path) {
                let len = len_before();
                p.synced.insert(path.to_owned(), len);
            }
            p.dirty.insert(path.to_owned());
        }
    }

    fn synced(&self, file: &File, path: &Path) {
        if let Some(mut p) = self.plan() {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            p.synced.insert(path.to_owned(), len);
            p.dirty.remove(path);
            p.overwritten.remove(path);
        }
    }

    /// Keeps the bytes a write of `len` bytes at `offset` is about to overwrite, for
    /// [`FaultFs::power_loss`].
    fn keep_overwritten(&self, file: &File, path: &Path, offset: u64, len: usize) {
        let Some(mut p) = self.plan() else { return };
        let end = len_of(file).min(offset + len as u64);
        if end <= offset {
            return;
        }
        let mut old = vec![0; (end - offset) as usize];
        // `file` may be open for writing only.
        let read = File::open(path)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut old, offset));
        if read.is_ok() {
            p.overwritten
                .entry(path.to_owned())
                .or_default()
                .push((offset, old));
        }
    }
}

fn err(f: Fault) -> io::Error {
    io::Error::from_raw_os_error(f.errno())
}

fn len_of(file: &File) -> u64 {
    file.metadata().map(|m| m.len()).unwrap_or(0)
}

impl Filesystem for FaultFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<File> {
        if let Some(f) = self.check(FsOp::Open, path) {
            return Err(err(f));
        }
        let file = RealFs.open(path, mode)?;
        match mode {
            OpenMode::CreateNew | OpenMode::CreateTruncate => self.dirty(path, || 0),
            OpenMode::Read | OpenMode::Append | OpenMode::Write => {}
        }
        Ok(file)
    }

    fn write_all(&self, file: &mut File, path: &Path, data: &[u8]) -> io::Result<()> {
        let fault = self.check(FsOp::Write, path);
        self.dirty(path, || len_of(file));
        match fault {
            None => RealFs.write_all(file, path, data),
            Some(Fault::ShortWrite(e)) => {
                RealFs.write_all(file, path, &data[..data.len() / 2])?;
                Err(io::Error::from_raw_os_error(e))
            }
            Some(f) => Err(err(f)),
        }
    }

    fn write_all_at(&self, file: &File, path: &Path, data: &[u8], offset: u64) -> io::Result<()> {
        let fault = self.check(FsOp::Write, path);
        self.dirty(path, || len_of(file));
        let n = match fault {
            None => data.len(),
            Some(Fault::ShortWrite(_)) => data.len() / 2,
            Some(_) => 0,
        };
        self.keep_overwritten(file, path, offset, n);
        RealFs.write_all_at(file, path, &data[..n], offset)?;
        match fault {
            None => Ok(()),
            Some(f) => Err(err(f)),
        }
    }

    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        if let Some(f) = self.check(FsOp::SyncData, path) {
            return Err(err(f));
        }
        RealFs.sync_data(file, path)?;
        self.synced(file, path);
        Ok(())
    }

    fn sync_all(&self, file: &File, path: &Path) -> io::Result<()> {
        if let Some(f) = self.check(FsOp::SyncAll, path) {
            return Err(err(f));
        }
        RealFs.sync_all(file, path)?;
        self.synced(file, path);
        Ok(())
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        if let Some(f) = self.check(FsOp::SetLen, path) {
            return Err(err(f));
        }
        self.dirty(path, || len_of(file));
        RealFs.set_len(file, path, len)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self.check(FsOp::Read, path) {
            Some(f) => Err(err(f)),
            None => RealFs.read(path),
        }
    }

    fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        if let Some(f) = self.check(FsOp::Copy, to) {
            return Err(err(f));
        }
        let n = RealFs.copy(from, to)?;
        self.dirty(to, || 0);
        Ok(n)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(f) = self.check(FsOp::Rename, to) {
            return Err(err(f));
        }
        RealFs.rename(from, to)?;
        if let Some(mut p) = self.plan() {
            if let Some(len) = p.synced.remove(from) {
                p.synced.insert(to.to_owned(), len);
            }
            if p.dirty.remove(from) {
                p.dirty.insert(to.to_owned());
            }
            if let Some(old) = p.overwritten.remove(from) {
                p.overwritten.insert(to.to_owned(), old);
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if let Some(f) = self.check(FsOp::Remove, path) {
            return Err(err(f));
        }
        RealFs.remove_file(path)?;
        if let Some(mut p) = self.plan() {
            p.synced.remove(path);
            p.dirty.remove(path);
        }
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        match self.check(FsOp::CreateDir, path) {
            Some(f) => Err(err(f)),
            None => RealFs.create_dir(path),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.check(FsOp::SyncDir, dir) {
            Some(f) => Err(err(f)),
            None => RealFs.sync_dir(dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_faults_fire_on_the_chosen_call_and_a_power_loss_drops_unsynced_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        let path = dir.path().join("f");
        let mut f = fs.open(&path, OpenMode::CreateNew).unwrap();
        fs.write_all(&mut f, &path, b"synced").unwrap();
        fs.sync_data(&f, &path).unwrap();
        fs.fail(FsOp::SyncData, "f", 1, Some(1), Fault::Errno(libc::EIO));
        fs.write_all(&mut f, &path, b"+one").unwrap();
        fs.sync_data(&f, &path).unwrap(); // skipped by the rule
        fs.write_all(&mut f, &path, b"+two").unwrap();
        let e = fs.sync_data(&f, &path).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        drop(f);
        // The failed sync did not make "+two" durable: a power loss drops it.
        assert_eq!(fs.power_loss(), vec![path.clone()]);
        assert_eq!(std::fs::read(&path).unwrap(), b"synced+one");
        // The rule fired once and is gone.
        let f = fs.open(&path, OpenMode::Append).unwrap();
        fs.sync_data(&f, &path).unwrap();
        fs.fail_once(FsOp::Write, "f", Fault::ShortWrite(libc::ENOSPC));
        let mut f = f;
        let e = fs.write_all(&mut f, &path, b"abcd").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(std::fs::read(&path).unwrap(), b"synced+oneab");
        assert_eq!(fs.injected().len(), 2);
        // A pass-through one records nothing and injects nothing.
        let plain = FaultFs::default();
        plain.fail_once(FsOp::Read, "", Fault::Errno(libc::EIO));
        assert_eq!(plain.read(&path).unwrap(), b"synced+oneab");
    }
}
