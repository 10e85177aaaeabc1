//! A full file system: the buffer refuses the append (nothing acknowledged is lost) and its
//! error says "disk full" by its code, so callers can tell it from other I/O errors without
//! reading message text. A real tmpfs is filled; the test is skipped, saying so, where tmpfs
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
async fn a_full_disk_is_told_apart_by_its_error_code() {
    let Some(fs) = Tmpfs::mount("16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    {
        let p = policy(4 << 20, 1 << 30, OverflowAction::ThrowException);
        let (_s, b) = open(fs.path(), &p);
        let mut big = Records::new();
        big.push(&vec![b'x'; 256 << 10]).unwrap();
        // 16 MiB of tmpfs hold fewer than 64 appends of 256 KiB.
        let mut full = None;
        for _ in 0..64 {
            if let Err(e) = b.append(big.clone()).await {
                full = Some(e);
                break;
            }
        }
        let full = full.expect("a 16 MiB tmpfs never filled up");
        let first = store_error(&full);
        assert!(first.is_storage_full(), "{first:?}");
        assert_eq!(
            first.io_error().and_then(std::io::Error::raw_os_error),
            Some(libc::ENOSPC)
        );
        // Every later write is refused at once, and still says why the store stopped.
        let later = b.append(recs(0..1)).await.unwrap_err();
        let later = store_error(&later);
        assert!(matches!(later, StoreError::Failed(_)), "{later:?}");
        assert!(later.is_storage_full(), "{later:?}");
        // The cause is reachable the standard way too (`Error::source`, what anyhow walks):
        // the chain ends at the shared `io::Error`.
        let mut cause: &dyn std::error::Error = later;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let io = cause
            .downcast_ref::<Arc<std::io::Error>>()
            .expect("an io::Error at the root");
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
    }
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
