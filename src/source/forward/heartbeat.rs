//! UDP heartbeat responder (Fluentd's `heartbeat_type udp`): out_forward sends a datagram to
//! the forward port and takes any answer as "the server is alive". Like Fluentd, datagrams are
//! read up to 128 bytes and answered with one `0x00` byte — only when the sender is in the
//! source's `allow` list, like a TCP client: anyone else gets no answer (counted, and logged at
//! most every 10 s), so the port cannot be used to probe the relay or to reflect traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::UdpSocket;

use crate::ops::logging::Throttle;
use crate::shutdown::Shutdown;

/// Which senders get an answer.
pub struct Allowed {
    networks: Arc<[ipnet::IpNet]>,
    refused: Counter,
    log: Throttle,
}

impl Allowed {
    /// Senders in `networks` (everyone when empty); others are counted in `refused`.
    pub fn new(networks: Arc<[ipnet::IpNet]>, refused: Counter) -> Self {
        Allowed {
            networks,
            refused,
            log: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// True when `peer` is answered; counts and logs it otherwise.
    fn check(&self, peer: SocketAddr) -> bool {
        if self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&peer.ip())) {
            return true;
        }
        self.refused.inc();
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(%peer, suppressed, "UDP heartbeat not answered: sender is not in `allow`");
        }
        false
    }
}

/// Answers heartbeats until shutdown.
pub async fn run(socket: UdpSocket, allowed: Allowed, mut shutdown: Shutdown) {
    let mut buf = [0u8; 128];
    loop {
        let received = tokio::select! {
            _ = shutdown.recv() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((_, peer)) if allowed.check(peer) => {
                // Best effort: a lost answer is a missed heartbeat, which the client tolerates.
                let _ = socket.send_to(&[0u8], peer).await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "heartbeat receive failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_senders_are_answered() {
        let nets: Arc<[ipnet::IpNet]> = vec!["10.0.0.0/8".parse().unwrap()].into();
        let refused = Counter::default();
        let a = Allowed::new(nets, refused.clone());
        assert!(a.check("10.1.2.3:5".parse().unwrap()));
        assert!(!a.check("127.0.0.1:5".parse().unwrap()));
        assert_eq!(refused.get(), 1);
        let everyone = Allowed::new(Vec::new().into(), Counter::default());
        assert!(everyone.check("127.0.0.1:5".parse().unwrap()));
    }
}
