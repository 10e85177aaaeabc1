//! One client connection: optional TLS and handshake, then messages one at a time —
//! frame, decode, emit, ack — with at most `PIPELINE_DEPTH` messages being stored at once and no
//! read beyond that, and no message body read before it took its bytes of the source's
//! `in_flight_limit` (see [`super::budget`]): that is the backpressure, the client's TCP window
//! fills up when the buffer blocks. Acks go out in message order. The read buffer is sized for
//! the message being read and let go once it is framed; a connection waiting for a message holds
//! none until its first bytes arrive (see [`FIRST_READ`]).
//!
//! A connection reads about twice per message: what is left of a message once its length is
//! known, then its option map with the next message's first bytes. Counted with `perf stat -e
//! syscalls:sys_enter_recvfrom` on the e2e bench (1 connection, 1,000 records of 200 bytes per
//! message) and per socket with `strace`: 2.0 forward reads per message; the other ~14
//! `recvfrom` per message are the TLS reads of the Firehose responses (about 7 per call, 2 calls
//! per 1,000 records). So waking the
//! connection only once a message has arrived (`SO_RCVLOWAT` set to the bytes still missing)
//! has nothing to save: tried (2 `setsockopt` per message), it left the `recvfrom` count as it
//! was (16,286 against 16,279 per million records) and would need `unsafe` (no crate of the
//! tree sets the option).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::auth_guard::FAILURE_DELAY;
use super::budget::{with_json, Held, PROBE, SLACK};
use super::decode::DecodeError;
use super::handshake::Security;
use super::msgpack::Framer;
use crate::shutdown::Shutdown;

mod shared;
mod store;

pub use shared::Shared;
use store::store;

/// Largest PING accepted before the client is authenticated: its six fields (a host name of at
/// most 255 bytes, a salt, two 128-byte hex digests, a user name) take well under 1 KiB, so a
/// client that does not know the key cannot make the relay hold more than this.
pub const PING_LENGTH_LIMIT: usize = 4096;
/// Messages of one connection being stored at once. While message N waits for its fsync, N+1
/// is read and decoded, so one client is not limited to one round trip of decode + commit per
/// message; the bound keeps per-connection memory at a few messages, and once it is reached the
/// connection stops reading (backpressure through TCP, as before).
const PIPELINE_DEPTH: usize = 4;
/// Most bytes read before a message has a read buffer: a connection waiting for its next
/// message waits with this small array (part of its task) instead of a [`PROBE`]-sized buffer,
/// so an idle connection holds no read buffer. The rest of the message follows in the next read
/// (one more `read` per message).
const FIRST_READ: usize = 64;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The client sent a message we reject.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message (or handshake step) did not complete within `message_timeout`.
    #[error("no complete message within message_timeout ({0:?})")]
    MessageTimeout(Duration),
    /// The handshake failed (PONG false was sent).
    #[error("handshake refused: {0}")]
    Handshake(&'static str),
    /// The TLS handshake failed or timed out.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The client closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message ({0} bytes unread)")]
    Truncated(usize),
    /// Reading or writing the socket failed (typically a reset by the client).
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The decoding task died (a bug; reported, never propagated as a panic).
    #[error("internal error while decoding: {0}")]
    Internal(String),
}

/// Serves one accepted connection until the client leaves, misbehaves, or shutdown.
pub async fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: Shutdown) {
    shared
        .metrics
        .connections_accepted
        .get_or_create(&shared.labels)
        .inc();
    let open = shared
        .metrics
        .connections_open
        .get_or_create(&shared.labels)
        .clone();
    open.inc();
    let result = match &shared.acceptor {
        // Boxed: TLS state is several KiB, which a plain connection's task would otherwise hold
        // too (a task is as large as its largest state).
        Some(acceptor) => {
            Box::pin(async {
                match tokio::time::timeout(shared.message_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve(tls, peer, &shared, shutdown).await,
                    Ok(Err(e)) => Err(ConnError::Tls(e.to_string())),
                    Err(_) => Err(ConnError::Tls("timed out".to_owned())),
                }
            })
            .await
        }
        None => serve(stream, peer, &shared, shutdown).await,
    };
    open.dec();
    if let Err(e) = result {
        shared.report(peer, &e);
    }
}

/// A connection's socket and read state.
struct Conn<'s, S> {
    stream: S,
    buf: BytesMut,
    framer: Framer,
    /// Bytes of `in_flight_limit` taken for the message being read.
    held: Held,
    /// Whether the message being read made its one take (see [`super::budget`]).
    took: bool,
    /// Bytes of the message being read that its take covers (it holds [`with_json`] of them).
    wire: usize,
    shared: &'s Shared,
    shutdown: Shutdown,
}

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: Shutdown,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
        framer: Framer::new(shared.message_length_limit),
        held: shared.in_flight.nothing(),
        took: false,
        wire: 0,
        shared,
        shutdown,
    };
    if let Some(security) = &shared.security {
        let authenticated = handshake(&mut conn, security).await;
        if let Err(e) = &authenticated {
            if !matches!(e, ConnError::Io(_) | ConnError::Truncated(_)) {
                shared
                    .auth_guard
                    .record_failure(peer.ip(), std::time::Instant::now());
            }
        }
        if !authenticated? {
            return Ok(());
        }
    }
    let opts = Arc::new(shared.options_for(peer));
    // Emits in flight, in message order; each resolves to the ack to send (if any).
    let mut storing = futures::stream::FuturesOrdered::new();
    let mut reading = true;
    let result = loop {
        if !reading && storing.is_empty() {
            break Ok(());
        }
        tokio::select! {
            // Acks first: they free pipeline slots and tell clients their data is safe.
            biased;
            Some(ack) = storing.next(), if !storing.is_empty() => {
                if let Err(e) = conn.send_ack(ack).await {
                    break Err(e);
                }
            }
            frame = conn.next_frame(false), if reading && storing.len() < PIPELINE_DEPTH => {
                match frame {
                    Ok(Some((frame, held))) => match conn.decode(frame, held, &opts).await {
                        // Boxed: the queue keeps a slot as large as its future even
                        // when empty, so an idle connection would hold one.
                        Ok(Some((events, held))) => {
                            storing.push_back(Box::pin(store(shared, events, held)))
                        }
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    },
                    Ok(None) => reading = false,
                    Err(e) => break Err(e),
                }
                if shared.deny_keepalive {
                    reading = false;
                }
            }
        }
    };
    // Messages decoded before an error are still stored and acknowledged: the client must not
    // resend what is safe.
    while let Some(ack) = storing.next().await {
        if conn.send_ack(ack).await.is_err() {
            break;
        }
    }
    let _ = conn.stream.shutdown().await;
    result
}

/// The `shared_key` handshake; false when the client left before its PING. A PING is framed
/// with [`PING_LENGTH_LIMIT`]; a refusal waits [`FAILURE_DELAY`] first.
async fn handshake<S>(conn: &mut Conn<'_, S>, security: &Security) -> Result<bool, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (helo, bytes) = security.helo(!conn.shared.deny_keepalive);
    conn.write(&bytes).await?;
    conn.framer = Framer::new(PING_LENGTH_LIMIT);
    let ping = conn.next_frame(true).await;
    conn.framer = Framer::new(conn.shared.message_length_limit);
    let Some((ping, _held)) = ping? else {
        return Ok(false);
    };
    match security.answer_ping(&helo, &ping) {
        Ok(pong) => {
            conn.write(&pong).await?;
            Ok(true)
        }
        Err(refusal) => {
            tokio::time::sleep(FAILURE_DELAY).await;
            // The client may already be gone; the refusal is reported either way.
            let _ = conn.write(&refusal.pong).await;
            let _ = conn.stream.shutdown().await;
            Err(ConnError::Handshake(refusal.reason))
        }
    }
}

impl<S> Conn<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next complete message with its bytes of `in_flight_limit`, or `None` when the
    /// client closed cleanly, the connection was idle for `idle_timeout`, or shutdown began.
    /// `handshake` applies `message_timeout` even before the first byte; waiting for the budget
    /// does not count against it. Cancel-safe: what was read or taken stays in `self`.
    async fn next_frame(&mut self, handshake: bool) -> Result<Option<(Bytes, Held)>, ConnError> {
        let timeout = self.shared.message_timeout;
        let mut deadline = handshake.then(|| Instant::now() + timeout);
        loop {
            let mut want = None;
            if !self.buf.is_empty() {
                if let Some(len) = self.framer.advance(&self.buf)? {
                    if !self.took {
                        // Read within the probe: counted from here until it is stored.
                        tokio::select! {
                            _ = self.shutdown.recv() => return Ok(None),
                            h = self.shared.in_flight.take(with_json(len)) => self.held = h,
                        }
                    }
                    let held = self.held.split(with_json(len));
                    // Taken beyond the message: given back. The bytes of the next message read
                    // with it (at most PROBE) move to a buffer of their own, so that the frame's
                    // allocation is freed once it is decoded.
                    self.held = self.shared.in_flight.nothing();
                    self.took = false;
                    let frame = self.buf.split_to(len).freeze();
                    self.buf = BytesMut::from(&self.buf[..]);
                    return Ok(Some((frame, held)));
                }
                deadline.get_or_insert_with(|| Instant::now() + timeout);
                want = self.take_due();
            }
            if self.shutdown.is_shutdown() {
                return Ok(None);
            }
            if let Some(wire) = want {
                tokio::select! {
                    _ = self.shutdown.recv() => return Ok(None),
                    h = self.shared.in_flight.take(with_json(wire)) => self.held = h,
                }
                self.took = true;
                self.wire = wire;
                if deadline.is_some() {
                    deadline = Some(Instant::now() + timeout);
                }
                continue;
            }
            let wait_until =
                deadline.or_else(|| self.shared.idle_timeout.map(|d| Instant::now() + d));
            let room = self.room();
            // Between messages nothing is buffered: the first bytes are awaited in `first`, so
            // that a connection waiting for its next message holds no read buffer.
            let waiting = self.buf.is_empty();
            if !waiting {
                self.reserve(room);
            }
            let expired = async {
                match wait_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut first = [0u8; FIRST_READ];
            let mut limited = (&mut self.stream).take(room as u64);
            let buf = &mut self.buf;
            let read_some = async {
                match waiting {
                    true => limited.read(&mut first).await,
                    false => limited.read_buf(buf).await,
                }
            };
            let read = tokio::select! {
                _ = self.shutdown.recv() => return Ok(None),
                _ = expired => {
                    if deadline.is_some() {
                        return Err(ConnError::MessageTimeout(timeout));
                    }
                    tracing::debug!(source = %self.shared.name, "closing idle forward connection");
                    return Ok(None);
                }
                r = read_some => r?,
            };
            if waiting && read > 0 {
                self.reserve(room);
                self.buf.extend_from_slice(&first[..read]);
            }
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::Truncated(self.buf.len()))
                };
            }
        }
    }

    /// Makes room in the read buffer for a read of up to `room` bytes: for the whole message
    /// when its length is known, in one allocation (growing by `room` would double the buffer,
    /// and copy it, near its end).
    fn reserve(&mut self, room: usize) {
        if self.buf.capacity() - self.buf.len() < room {
            let known = match self.took {
                true => (self.framer.at_least() + SLACK).min(self.wire),
                false => 0,
            };
            self.buf
                .reserve(room.max(known.saturating_sub(self.buf.len())));
        }
    }

    /// For an incomplete message: the bytes to take for (of the message as received; it takes
    /// [`with_json`] of them) before reading on, if it is time to take them (see
    /// [`super::budget`] for the rules).
    fn take_due(&mut self) -> Option<usize> {
        let buffered = self.buf.len();
        let at_least = self.framer.at_least();
        if !self.took {
            if at_least >= buffered + SLACK {
                // A str/bin header announced the entries: the message's length is known.
                return Some(at_least + SLACK);
            }
            if buffered < PROBE {
                return None;
            }
            return Some(self.shared.message_length_limit);
        }
        if buffered < self.wire || self.held.len() >= self.shared.in_flight.limit() {
            return None;
        }
        // The message outgrew its take: give it back and take for the longest message (taking
        // more while holding some could wait forever, see the budget's rules).
        self.held = self.shared.in_flight.nothing();
        self.took = false;
        Some(self.shared.message_length_limit)
    }

    /// How many bytes the next read may bring: the rest of the probe before the message took
    /// its bytes, then what it took (in steps of at most its known length or [`PROBE`], so
    /// that little of the next message is read with it).
    fn room(&self) -> usize {
        let buffered = self.buf.len();
        if !self.took {
            return PROBE.saturating_sub(buffered).max(1);
        }
        let step = self.framer.at_least().saturating_sub(buffered).max(PROBE);
        if buffered < self.wire {
            (self.wire - buffered).min(step)
        } else {
            // Larger than the whole budget, which it holds: read on.
            step
        }
    }

    /// Writes an ack, if there is one.
    async fn send_ack(&mut self, ack: Option<Vec<u8>>) -> Result<(), ConnError> {
        if let Some(ack) = ack {
            self.write(&ack).await?;
            self.shared.acks_sent.inc();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
