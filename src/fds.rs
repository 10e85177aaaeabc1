//! File descriptors: clients must not be able to take the ones the buffer needs.
//!
//! Running out of descriptors breaks more than new connections: the file buffer cannot open a
//! chunk file, so nothing more can be stored. Three measures:
//!
//! 1. At startup the soft `RLIMIT_NOFILE` is raised to the hard limit (both are logged). A
//!    common soft limit is 1,024, exactly the default `max_connections` of one forward source.
//! 2. Client connections of all forward sources share a [`FdBudget`]: the soft limit, minus the
//!    descriptors open once the relay is set up, minus [`FD_RESERVE`] for the buffer (chunk
//!    files, its database, dead-letter files, directory syncs), outbound HTTPS connections and
//!    the operations endpoint (whose own connections are capped below the reserve). A
//!    connection beyond the budget is accepted and closed at once, counted under
//!    `firehose_relay_forward_connections_rejected_total{reason="fd_limit"}`: accepting keeps
//!    the listen queue from filling with clients that wait for nothing.
//! 3. When `accept` itself fails (`EMFILE`, `ENFILE`), the loop backs off ([`AcceptBackoff`])
//!    instead of spinning on the error.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept out of the client budget: the operations endpoint's connections
/// ([`crate::ops::http::HTTP_MAX_CONNECTIONS`]) plus 64 for the buffer, its database, outputs'
/// HTTPS connections and the runtime.
pub const FD_RESERVE: usize = crate::ops::http::HTTP_MAX_CONNECTIONS + 64;

/// The `RLIMIT_NOFILE` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit in force.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
    /// The soft limit the process started with.
    pub initial_soft: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limits (the current ones when
/// they cannot be read or raised, with the error).
pub fn raise_nofile_limit() -> Result<NofileLimit, (NofileLimit, std::io::Error)> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().map_err(|e| {
        let unknown = NofileLimit {
            soft: 1024,
            hard: 1024,
            initial_soft: 1024,
        };
        (unknown, e)
    })?;
    let initial = NofileLimit {
        soft,
        hard,
        initial_soft: soft,
    };
    if soft >= hard {
        return Ok(initial);
    }
    // Raising the soft limit up to the hard one is always permitted.
    Resource::NOFILE.set(hard, hard).map_err(|e| (initial, e))?;
    Ok(NofileLimit {
        soft: hard,
        ..initial
    })
}

/// Descriptors the process has open now (entries of `/proc/self/fd`), if that can be read.
pub fn open_descriptors() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1))
}

/// Descriptors client connections may hold at once, shared by every forward source.
#[derive(Debug, Clone)]
pub struct FdBudget {
    slots: Arc<Semaphore>,
    total: usize,
}

impl FdBudget {
    /// What is left of `soft` once `open` are in use and [`FD_RESERVE`] is kept back.
    pub fn new(soft: u64, open: usize) -> Self {
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        let total = soft
            .saturating_sub(open)
            .saturating_sub(FD_RESERVE)
            .min(Semaphore::MAX_PERMITS);
        FdBudget {
            slots: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// A budget that never refuses (tests, and when the limit cannot be read).
    pub fn unlimited() -> Self {
        FdBudget {
            slots: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            total: Semaphore::MAX_PERMITS,
        }
    }

    /// Connections the budget allows in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// A slot for one connection, held until the permit is dropped; `None` when all are taken.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }
}

/// Raises the limit, logs it, and sizes the client budget from what is open now: call once the
/// buffers, outputs and the operations endpoint are set up, before sources start.
pub fn client_budget() -> FdBudget {
    let limit = match raise_nofile_limit() {
        Ok(l) => l,
        Err((l, e)) => {
            tracing::warn!(soft = l.soft, hard = l.hard, error = %e,
                "cannot raise the file descriptor limit (RLIMIT_NOFILE)");
            l
        }
    };
    let Some(open) = open_descriptors() else {
        tracing::warn!(soft = limit.soft, hard = limit.hard,
            "cannot count open file descriptors (/proc/self/fd); client connections are not limited by them");
        return FdBudget::unlimited();
    };
    let budget = FdBudget::new(limit.soft, open);
    tracing::info!(
        soft = limit.soft,
        hard = limit.hard,
        initial_soft = limit.initial_soft,
        open,
        reserve = FD_RESERVE,
        client_connections = budget.total(),
        "file descriptor limit (RLIMIT_NOFILE)"
    );
    if budget.total() < 64 {
        tracing::error!(soft = limit.soft, hard = limit.hard, client_connections = budget.total(),
            "the file descriptor limit leaves almost nothing for client connections; raise the hard \
             limit (ulimit -Hn, or the container runtime's nofile setting)");
    }
    budget
}

/// Waits between failed `accept` calls: 10 ms after the first failure, doubling up to 1 s,
/// back to nothing after a success. Descriptors come back when connections close, so retrying
/// is right, but at a pace that leaves the CPU to the connections that are closing.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    next: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next.unwrap_or(Self::FIRST);
        self.next = Some((wait * 2).min(Self::MAX));
        wait
    }

    /// A label for an accept error: `emfile`, `enfile` or `other`.
    pub fn reason(e: &std::io::Error) -> &'static str {
        match e.raw_os_error() {
            Some(libc::EMFILE) => "emfile",
            Some(libc::ENFILE) => "enfile",
            _ => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_the_reserve_and_what_is_open() {
        let b = FdBudget::new(1024, 40);
        assert_eq!(b.total(), 1024 - 40 - FD_RESERVE);
        let held: Vec<_> = (0..b.total()).map(|_| b.try_take().unwrap()).collect();
        assert!(b.try_take().is_none());
        drop(held);
        assert!(b.try_take().is_some());
        assert_eq!(FdBudget::new(100, 40).total(), 0);
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<_> = (0..9).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(10));
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let l = raise_nofile_limit().unwrap();
        assert_eq!(l.soft, l.hard);
        assert!(open_descriptors().is_some_and(|n| n > 2));
    }
}
