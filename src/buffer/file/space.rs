//! Room on the buffer's volume: the **reserve** that appends never take, the **ballast file**
//! that holds a second reserve for when something else fills the volume, and the store's
//! health (ok / full / failed) that `/readyz`, `/healthz`, `/status`, the metrics and
//! `buffer stats` report.
//!
//! Why: purges, metadata updates (sled) and quarantine copies need a little space to make
//! space. sled in particular turns any write error into a permanent error of the database
//! (its `set_global_error`): once sled has met `ENOSPC` nothing can be purged until the process
//! restarts. So appends stop *before* the volume is full:
//!
//! * **reserve** = 1 % of the volume, at least [`MIN_RESERVE`] and at most [`MAX_RESERVE`].
//!   The writer refuses a group's appends (without writing anything) when the volume's
//!   available space minus the group's bytes would fall under the reserve. The store is then
//!   **full**: appends are refused up front (the client is not acknowledged and resends), while
//!   delivery, purges, releases and quarantine go on in the reserve. It is ok again once twice
//!   the reserve is available (checked at most every [`CHECK_EVERY`] while full, and after each
//!   purge).
//! * **ballast** = `data_dir/buffer/ballast`, a file of [`ballast_size`] bytes (the reserve
//!   plus sled's `segment_size`), allocated with `fallocate` when the store opens and there is
//!   room. sled needs that much to open: its recovery overwrites the rest of its last segment
//!   (`strace` of a start on a volume with 1.1 MiB free: `pwrite64(db, zeros, 8388440, 167) =
//!   1126233`, then `ENOSPC`, and the start failed). The ballast is deleted at startup when
//!   less than its size is available (a volume filled by the previous run, by something else,
//!   or by a release without the reserve), so that sled can open and recover and purges can
//!   run; and when an append meets a real `ENOSPC`/`EDQUOT` (the volume filled faster than the
//!   check, or another writer filled it). It is made again once there is room for it and
//!   twice the reserve besides.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Smallest reserve (and ballast), whatever the volume's size.
pub const MIN_RESERVE: u64 = 1 << 20;
/// Largest reserve (and ballast): 1 % of a large volume is more than purges ever need.
pub const MAX_RESERVE: u64 = 64 << 20;
/// Name of the ballast file, in the database directory (`data_dir/buffer/`).
pub const BALLAST_FILE: &str = "ballast";
/// While full, the available space is checked at most this often.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The reserve for a volume of `total` bytes: 1 %, within [`MIN_RESERVE`]..=[`MAX_RESERVE`].
pub fn reserve_for(total: u64) -> u64 {
    (total / 100).clamp(MIN_RESERVE, MAX_RESERVE)
}

/// The ballast for a reserve of `reserve` bytes: the reserve plus what sled may write when it
/// opens (the rest of its last segment, up to [`super::store::MAX_SEGMENT_SIZE`]).
pub fn ballast_size(reserve: u64) -> u64 {
    reserve + super::store::MAX_SEGMENT_SIZE as u64
}

/// Whether the buffer's storage takes appends, as `/status` and `buffer stats` show it
/// (`{"state": "ok"}`, `{"state": "full", "reason": "..."}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StorageHealth {
    /// Appends are stored.
    #[default]
    Ok,
    /// Appends are refused for lack of room (space, quota or file descriptors); delivery and
    /// purges go on, and appends resume by themselves once there is room again.
    Full {
        /// What ran out, and where.
        reason: String,
    },
    /// A write failed in a way that leaves the files' state unknown (`EIO`, a failed
    /// `fdatasync`): nothing is written until the relay restarts and recovers from disk.
    Failed {
        /// The first error.
        reason: String,
    },
}

impl StorageHealth {
    /// `ok`, `full` or `failed`.
    pub fn state(&self) -> &'static str {
        match self {
            StorageHealth::Ok => "ok",
            StorageHealth::Full { .. } => "full",
            StorageHealth::Failed { .. } => "failed",
        }
    }

    /// The reason, if not ok.
    pub fn reason(&self) -> Option<&str> {
        match self {
            StorageHealth::Ok => None,
            StorageHealth::Full { reason } | StorageHealth::Failed { reason } => Some(reason),
        }
    }
}

/// Error codes that mean "no room right now": not the files' fault, and gone once space or
/// descriptors are back. Any other error of a write, and any error of a sync, poisons the
/// store.
pub fn is_no_room(e: &std::io::Error) -> bool {
    is_full(e) || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The file system (or the user's quota) is full: `ENOSPC` / `EDQUOT`, which std reads as
/// these two kinds.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[derive(Debug, Default)]
struct SpaceState {
    /// Why the store is full, if it is.
    full: Option<String>,
    /// Last time the available space was checked while full.
    last_check: Option<Instant>,
    /// Last time making the ballast again was tried.
    last_ballast_try: Option<Instant>,
}

/// The reserve and the ballast of one `data_dir`, and whether appends are refused for lack of
/// room. Shared by the store (appends check [`Space::is_full`]) and its writer.
#[derive(Debug)]
pub struct Space {
    dir: PathBuf,
    ballast: PathBuf,
    reserve: u64,
    ballast_size: u64,
    full: AtomicBool,
    state: Mutex<SpaceState>,
}

impl Space {
    /// The reserve of the volume holding `db_dir` (the database directory, which exists);
    /// releases the ballast if less than its size is available, so that the database can open
    /// on a full volume. Call [`Space::opened`] once the database is open.
    pub fn open(db_dir: &Path) -> Space {
        let total = fs2::total_space(db_dir).unwrap_or(0);
        let reserve = reserve_for(total);
        let space = Space {
            dir: db_dir.to_owned(),
            ballast: db_dir.join(BALLAST_FILE),
            reserve,
            ballast_size: ballast_size(reserve),
            full: AtomicBool::new(false),
            state: Mutex::new(SpaceState::default()),
        };
        let available = space.available();
        if available < space.ballast_size && space.release_ballast() {
            tracing::warn!(available, reserve = space.reserve, ballast = %space.ballast.display(),
                "buffer volume full at startup: released the ballast file so that the buffer can open and purge");
        }
        space
    }

    /// The database is open (it took what it needs): makes the ballast if missing and there is
    /// room, and marks the store full if less than twice the reserve is available.
    pub fn opened(&self) {
        let space = self;
        space.make_ballast(space.available());
        let available = space.available();
        if available < 2 * space.reserve {
            // Same threshold as a running store resumes at: a restart on a full volume does not
            // take appends before something was delivered.
            space.set_full(format!(
                "{available} bytes available on the buffer's volume ({}) at startup, under twice the {} bytes reserved for purges and metadata",
                space.dir.display(),
                space.reserve
            ));
        }
    }

    /// The reserve in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The ballast file's size in bytes.
    pub fn ballast_size(&self) -> u64 {
        self.ballast_size
    }

    /// Bytes available to the relay on the volume (`u64::MAX` if it cannot be told).
    pub fn available(&self) -> u64 {
        fs2::available_space(&self.dir).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpaceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends are refused for lack of room. While full, re-checks the available space at most
    /// every [`CHECK_EVERY`] and clears the state once twice the reserve is available.
    pub fn is_full(&self) -> bool {
        if !self.full.load(Ordering::Acquire) {
            return false;
        }
        self.recheck(false);
        self.full.load(Ordering::Acquire)
    }

    /// Why appends are refused, if they are.
    pub fn full_reason(&self) -> Option<String> {
        if !self.full.load(Ordering::Acquire) {
            return None;
        }
        self.lock().full.clone()
    }

    /// Marks the store full (appends refused) for `reason`.
    pub fn set_full(&self, reason: String) {
        let mut st = self.lock();
        if st.full.is_none() {
            tracing::warn!(reason = %reason, reserve = self.reserve,
                "buffer storage full: appends are refused (not acknowledged) until there is room again; delivery and purges go on");
        }
        st.full = Some(reason);
        st.last_check = Some(Instant::now());
        self.full.store(true, Ordering::Release);
    }

    /// A group's appends of about `bytes` bytes would leave less than the reserve: the reason
    /// to refuse them, if so.
    pub fn refuse(&self, bytes: u64) -> Option<String> {
        let available = self.available();
        if available >= bytes.saturating_add(self.reserve) {
            return None;
        }
        let reason = format!(
            "{} bytes available on the buffer's volume ({}), under the {} bytes reserved for purges and metadata",
            available.saturating_sub(bytes),
            self.dir.display(),
            self.reserve
        );
        self.set_full(reason.clone());
        Some(reason)
    }

    /// An append met a real `ENOSPC`/`EDQUOT`: something filled the volume past the reserve.
    /// Releases the ballast so that purges and metadata updates have room.
    pub fn out_of_space(&self, reason: String) {
        if self.release_ballast() {
            tracing::warn!(ballast = %self.ballast.display(), bytes = self.ballast_size,
                "buffer volume full: released the ballast file so that purges and metadata updates have room");
        }
        self.set_full(reason);
    }

    /// Checks the available space now if full (or `force`), clears the full state once twice
    /// the reserve is available, and makes the ballast again when three times is.
    pub fn recheck(&self, force: bool) {
        let mut st = self.lock();
        if st.full.is_none() && !force {
            return;
        }
        if !force && st.last_check.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return;
        }
        st.last_check = Some(Instant::now());
        let available = self.available();
        let retry_ballast = st
            .last_ballast_try
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if retry_ballast
            && !self.ballast.exists()
            && available >= self.ballast_size + 2 * self.reserve
        {
            st.last_ballast_try = Some(Instant::now());
            self.make_ballast(available);
        }
        let available = self.available();
        if st.full.is_some() && available >= 2 * self.reserve {
            tracing::info!(
                available,
                reserve = self.reserve,
                "buffer storage has room again: appends resume"
            );
            st.full = None;
            self.full.store(false, Ordering::Release);
        }
    }

    /// Whether the ballast file is in place.
    pub fn has_ballast(&self) -> bool {
        self.ballast.is_file()
    }

    /// The health a relay starting now would see (for `buffer stats` on a stopped relay):
    /// full when less than the reserve is available.
    pub fn health_now(&self) -> StorageHealth {
        let available = self.available();
        if available < self.reserve {
            StorageHealth::Full {
                reason: format!(
                    "{available} bytes available on the buffer's volume ({}), under the {} bytes reserved for purges and metadata",
                    self.dir.display(),
                    self.reserve
                ),
            }
        } else {
            StorageHealth::Ok
        }
    }

    /// Deletes the ballast file; true if there was one.
    fn release_ballast(&self) -> bool {
        match std::fs::remove_file(&self.ballast) {
            Ok(()) => {
                let _ = crate::fsutil::sync_dir(&self.dir);
                true
            }
            Err(_) => false,
        }
    }

    /// Makes the ballast file if it is missing and `available` leaves room for it and the
    /// reserve. Failures are logged, never fatal: the ballast is a second line of defence.
    fn make_ballast(&self, available: u64) {
        if self.ballast.exists() || available < self.ballast_size + 2 * self.reserve {
            return;
        }
        let made = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.ballast)
            .and_then(|f| {
                fs2::FileExt::allocate(&f, self.ballast_size)?;
                f.sync_all()
            })
            .and_then(|()| crate::fsutil::sync_dir(&self.dir));
        match made {
            Ok(()) => tracing::debug!(ballast = %self.ballast.display(), bytes = self.ballast_size,
                "buffer ballast file in place"),
            Err(e) => {
                let _ = std::fs::remove_file(&self.ballast);
                tracing::warn!(ballast = %self.ballast.display(), error = %e,
                    "cannot make the buffer's ballast file; the reserve alone protects purges");
            }
        }
    }
}

/// Default limit of the dead-letter and of the quarantine directory (each).
pub const DEFAULT_DIR_LIMIT: u64 = 1 << 30;
/// How long a measured directory size is used before the directory is walked again (files
/// removed by an operator show up within this time).
const DIR_RESCAN: Duration = Duration::from_secs(5);

/// How much a directory the relay writes to on the buffer's volume holds, against its limit
/// (`/status`, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirUsage {
    /// Bytes of the files in it.
    pub bytes: u64,
    /// Its limit.
    pub limit_bytes: u64,
    /// Writes refused since start because they would have passed the limit.
    pub refused_writes: u64,
}

/// A directory with a size limit: the dead-letter directory (`storage.dead_letter_limit_size`)
/// and the quarantine (`storage.quarantine_limit_size`), which share the buffer's volume. A
/// write that would pass the limit is refused with `EDQUOT` (a lack of room, so callers keep
/// what they wanted to write where it is), counted in [`DirUsage::refused_writes`].
#[derive(Debug)]
pub struct DirBudget {
    dir: PathBuf,
    limit: AtomicU64,
    refused: AtomicU64,
    /// Size measured (plus what was written since) and when it was measured.
    size: Mutex<Option<(u64, Instant)>>,
}

impl DirBudget {
    /// The budget of `dir` (which need not exist yet).
    pub fn new(dir: PathBuf, limit: u64) -> DirBudget {
        DirBudget {
            dir,
            limit: AtomicU64::new(limit),
            refused: AtomicU64::new(0),
            size: Mutex::new(None),
        }
    }

    /// Changes the limit.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    fn bytes(&self, size: &mut Option<(u64, Instant)>) -> u64 {
        match *size {
            Some((n, at)) if at.elapsed() < DIR_RESCAN => n,
            _ => {
                let n = dir_size(&self.dir);
                *size = Some((n, Instant::now()));
                n
            }
        }
    }

    /// Size, limit and refusals now.
    pub fn usage(&self) -> DirUsage {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        DirUsage {
            bytes: self.bytes(&mut size),
            limit_bytes: self.limit.load(Ordering::Relaxed),
            refused_writes: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Takes `bytes` of the budget for a write, or refuses it (`EDQUOT`, saying which limit)
    /// if the directory would pass its limit.
    pub fn take(&self, bytes: u64, setting: &str) -> std::io::Result<()> {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.bytes(&mut size);
        let limit = self.limit.load(Ordering::Relaxed);
        if now.saturating_add(bytes) > limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(std::io::Error::new(
                std::io::ErrorKind::QuotaExceeded,
                format!(
                    "{} holds {now} bytes; {bytes} more would pass {setting} ({limit} bytes)",
                    self.dir.display()
                ),
            ));
        }
        if let Some((n, _)) = size.as_mut() {
            *n += bytes;
        }
        Ok(())
    }
}

/// Bytes of the files under `dir` (0 if it does not exist).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_one_percent_within_bounds() {
        assert_eq!(reserve_for(0), MIN_RESERVE);
        assert_eq!(reserve_for(48 << 20), MIN_RESERVE);
        assert_eq!(reserve_for(1 << 30), (1 << 30) / 100);
        assert_eq!(reserve_for(1 << 40), MAX_RESERVE);
    }

    #[test]
    fn a_directory_budget_refuses_writes_past_its_limit_as_a_lack_of_room() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), [0u8; 600]).unwrap();
        let budget = DirBudget::new(dir.path().to_owned(), 1000);
        assert_eq!(budget.usage().bytes, 600);
        budget.take(300, "limit").unwrap();
        let e = budget.take(300, "storage.x").unwrap_err();
        assert!(is_no_room(&e), "{e}");
        assert!(e.to_string().contains("storage.x"), "{e}");
        let u = budget.usage();
        assert_eq!((u.bytes, u.limit_bytes, u.refused_writes), (900, 1000, 1));
        budget.set_limit(2000);
        budget.take(300, "limit").unwrap();
    }

    #[test]
    fn no_room_is_told_by_code() {
        for code in [libc::ENOSPC, libc::EDQUOT, libc::EMFILE, libc::ENFILE] {
            assert!(
                is_no_room(&std::io::Error::from_raw_os_error(code)),
                "{code}"
            );
        }
        for code in [libc::EIO, libc::EROFS, libc::ENOENT, libc::EBADF] {
            assert!(
                !is_no_room(&std::io::Error::from_raw_os_error(code)),
                "{code}"
            );
        }
    }
}
