//! A full file system: the buffer refuses the append (nothing acknowledged is lost) without
//! poisoning the store, its error says "disk full" by its code, so callers can tell it from
//! other I/O errors without reading message text, delivery and purges go on, and appends
//! resume once there is room. A real tmpfs is filled; the test is skipped, saying so, where tmpfs
//! cannot be mounted (it needs root or CAP_SYS_ADMIN).

use std::process::Command;

use super::*;
use crate::buffer::file::StoreError;
use crate::buffer::BufferError;

/// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// The store error behind an append error, if storage is what failed.
fn store_error(e: &AppendError) -> &StoreError {
    match e {
        AppendError::Storage(BufferError::Storage(s)) => s,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_disk_refuses_appends_without_poisoning_and_they_resume_once_purged() {
    let Some(fs) = Tmpfs::mount("32m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    {
        let p = policy(1 << 20, 1 << 30, OverflowAction::ThrowException);
        let (store, b) = open(fs.path(), &p);
        let mut big = Records::new();
        big.push(&vec![b'x'; 256 << 10]).unwrap();
        // 32 MiB of tmpfs hold fewer than 128 appends of 256 KiB.
        let mut full = None;
        let mut stored = 0;
        for _ in 0..128 {
            match b.append(big.clone()).await {
                Ok(()) => stored += 1,
                Err(e) => {
                    full = Some(e);
                    break;
                }
            }
        }
        let full = full.expect("a 32 MiB tmpfs never filled up");
        assert!(stored > 8, "refused after {stored} appends");
        let first = store_error(&full);
        assert!(first.is_no_room(), "{first:?}");
        assert!(first.is_storage_full(), "{first:?}");
        assert_eq!(
            first.io_error().and_then(std::io::Error::raw_os_error),
            Some(libc::ENOSPC)
        );
        // The cause is reachable the standard way too (`Error::source`, what anyhow walks):
        // the chain ends at the shared `io::Error`.
        let mut cause: &dyn std::error::Error = first;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let io = cause
            .downcast_ref::<Arc<std::io::Error>>()
            .expect("an io::Error at the root");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(b.stats().storage.state(), "full");
        // Refused, not poisoned: later appends are refused for the same reason...
        let later = b.append(recs(0..1)).await.unwrap_err();
        assert!(store_error(&later).is_no_room(), "{later:?}");
        // ...while delivery goes on: every stored record comes out, purges work at full.
        b.enqueue_staged(Enqueue::All).await.unwrap();
        let mut records = 0;
        while let Some(c) = b.take(u64::MAX).await.unwrap() {
            records += c.records.len();
            b.commit(c.id).await.expect("a purge at full");
        }
        assert_eq!(records, stored);
        // Once purged, there is room again and appends resume by themselves.
        tokio::time::sleep(crate::buffer::file::space::CHECK_EVERY).await;
        b.append(recs(0..3)).await.expect("appends resume");
        assert_eq!(b.stats().storage.state(), "ok");
        assert!(store.group_commits() > 0);
    }
    // And what was acknowledged after the refusal survives a restart.
    let p = policy(1 << 20, 1 << 30, OverflowAction::ThrowException);
    let (_s, b) = open(fs.path(), &p);
    assert_eq!(drain(&b).await, (0..3).collect::<Vec<u64>>());
}

#[test]
fn other_io_errors_are_not_reported_as_a_full_disk() {
    let eio = StoreError::io("write x", std::io::Error::from_raw_os_error(libc::EIO));
    assert!(!eio.is_storage_full());
    assert_eq!(
        eio.io_error().and_then(std::io::Error::raw_os_error),
        Some(libc::EIO)
    );
    let quota = StoreError::io("write x", std::io::Error::from_raw_os_error(libc::EDQUOT));
    assert!(StoreError::Failed(Arc::new(quota)).is_storage_full());
}
