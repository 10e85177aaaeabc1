//! UDP heartbeat responder (Fluentd's `heartbeat_type udp`): out_forward sends a datagram to
//! the forward port and takes any answer as "the server is alive". Like Fluentd, datagrams are
//! read up to 128 bytes and answered with one `0x00` byte.

use crate::shutdown::Shutdown;
use tokio::net::UdpSocket;

/// Answers heartbeats until shutdown.
pub async fn run(socket: UdpSocket, mut shutdown: Shutdown) {
    let mut buf = [0u8; 128];
    loop {
        let received = tokio::select! {
            _ = shutdown.recv() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((_, peer)) => {
                // Best effort: a lost answer is a missed heartbeat, which the client tolerates.
                let _ = socket.send_to(&[0u8], peer).await;
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat receive failed"),
        }
    }
}
