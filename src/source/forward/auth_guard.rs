//! Failed `shared_key` handshakes, per client address: the brake on guessing keys and user
//! names.
//!
//! * Every refusal is sent after [`FAILURE_DELAY`], so one connection guesses at most once a
//!   second.
//! * An address with [`MAX_FAILURES`] failures within [`WINDOW`] is refused at accept (before
//!   the HELO) until that window has passed, whatever it sends: parallel connections do not
//!   multiply the guesses. IPv6 addresses count per /64, the block one host usually holds.
//!   Clients behind one NAT address share the count: a misconfigured one can lock the others
//!   out for up to a minute, which the refusal metric and log make visible.
//! * The table holds at most [`MAX_PEERS`] addresses; when it is full the entries whose window
//!   ended go first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wait before refusing a handshake.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failures of one address within [`WINDOW`] that lock it out.
pub const MAX_FAILURES: u32 = 5;
/// How long failures are remembered, counted from an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses remembered.
pub const MAX_PEERS: usize = 4096;

/// Failures of one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// The failure table of one forward source.
#[derive(Debug, Default)]
pub struct AuthGuard {
    peers: Mutex<HashMap<IpAddr, Failures>>,
}

/// The address failures are counted for: IPv4 as it is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthGuard {
    /// True when `ip` failed too often recently and must be refused.
    pub fn is_locked_out(&self, ip: IpAddr, now: Instant) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .get(&key(ip))
            .is_some_and(|f| f.count >= MAX_FAILURES && now.duration_since(f.since) < WINDOW)
    }

    /// Counts a failed handshake of `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(ip);
        if !peers.contains_key(&k) && peers.len() >= MAX_PEERS {
            peers.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if peers.len() >= MAX_PEERS {
                if let Some(oldest) = peers.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| *k) {
                    peers.remove(&oldest);
                }
            }
        }
        let f = peers.entry(k).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(f.since) >= WINDOW {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count += 1;
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no failure is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_locked_out_after_max_failures_until_its_window_ends() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(!g.is_locked_out(ip("10.0.0.1"), t0), "after {i} failures");
            g.record_failure(ip("10.0.0.1"), t0);
        }
        assert!(g.is_locked_out(ip("10.0.0.1"), t0 + WINDOW / 2));
        assert!(
            !g.is_locked_out(ip("10.0.0.2"), t0),
            "others are not affected"
        );
        assert!(!g.is_locked_out(ip("10.0.0.1"), t0 + WINDOW));
        g.record_failure(ip("10.0.0.1"), t0 + WINDOW);
        assert!(
            !g.is_locked_out(ip("10.0.0.1"), t0 + WINDOW),
            "a new window"
        );
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            g.record_failure(ip(&format!("2001:db8:0:1::{i}")), t0);
        }
        assert!(g.is_locked_out(ip("2001:db8:0:1::ffff"), t0));
        assert!(!g.is_locked_out(ip("2001:db8:0:2::1"), t0));
        g.record_failure(ip("::ffff:10.0.0.9"), t0);
        assert_eq!(g.len(), 2, "a mapped IPv4 address counts as itself");
    }

    #[test]
    fn the_table_is_bounded() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 1000) {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            g.record_failure(IpAddr::V4(a), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(g.len(), MAX_PEERS);
    }
}
