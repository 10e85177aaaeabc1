//! `type = "forward"`: a drop-in for Fluentd's `in_forward` (Forward Protocol v1) on port
//! 24224, for Fluentd, Fluent Bit and fluent-logger clients.
//!
//! Guarantees:
//! * **Ack means stored.** `{"ack": chunk}` is written only after [`super::Emitter::emit`]
//!   resolved, i.e. after the output's buffer stored every event of the message. When the emit
//!   fails nothing is sent and the client resends.
//! * **Backpressure, bounded memory.** Messages being read, decoded and stored take bytes of
//!   one budget shared by every connection of the source (`in_flight_limit`, see [`budget`]);
//!   when it is used up connections stop reading, so memory does not grow with the number of
//!   clients. A connection has at most 4 messages being stored; a message longer than
//!   `message_length_limit` is rejected as soon as its length is known (see
//!   [`msgpack::Framer`]).
//! * **Bad input costs one connection.** A malformed message closes its connection with a
//!   rate-limited warning and `firehose_relay_forward_invalid_messages_total{reason}`; earlier
//!   messages of that connection are kept, other connections are unaffected, nothing panics.
//!
//! Layout: [`msgpack`] (framing, item reader), [`transcode`] (msgpack → JSON text), [`decode`]
//! (messages and modes), [`handshake`] (`shared_key`/users), [`tls`], [`connection`] (one
//! client), [`heartbeat`] (UDP), [`metrics`]. This file: config and the accept loop.
//!
//! Not implemented (documented gaps): the JSON variant of the protocol, `compressed: "zstd"`,
//! reverse DNS for `source_hostname_key` (it gets the peer IP, as resolving on the hot path
//! would let slow DNS stall ingestion), per-client `<client>` ACLs of Fluentd's `<security>`.

pub mod auth_guard;
pub mod budget;
pub mod connection;
pub mod decode;
pub mod handshake;
pub mod heartbeat;
pub mod metrics;
pub mod msgpack;
pub mod tls;
pub mod transcode;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Emitter;
use crate::fds::{AcceptBackoff, FdBudget};
use crate::ops::logging::Throttle;
use crate::primitives::{ByteSize, ConfigDuration};
use crate::shutdown::Shutdown;

pub use decode::{decode_message, decode_stream, DecodeError, DecodeOptions, Message};

/// `[sources.NAME]` with `type = "forward"`. Names follow Fluentd's `in_forward` where one
/// exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// The component type (already used to choose this struct).
    #[serde(rename = "type", skip_serializing)]
    pub type_tag: crate::primitives::TypeTag,
    /// Fluentd's `@label`: its events go only to the filters and outputs with this label
    /// (none: to those without a label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// TCP address to listen on (and UDP, with `heartbeat`).
    pub listen: String,
    /// Largest message accepted; a longer one closes the connection before it is buffered.
    pub message_length_limit: ByteSize,
    /// Bytes of messages between the sockets and the buffer (read, decoded, being stored),
    /// across all connections of this source; when used up, connections stop reading until
    /// appends resolve. A message larger than this takes all of it. See [`budget`].
    pub in_flight_limit: ByteSize,
    /// Largest decompressed CompressedPackedForward payload (zip-bomb guard; Fluentd's default).
    pub decompression_size_limit: ByteSize,
    /// Largest JSON text of one record. Transcoding a record stops once it passes this; the
    /// record is dead-lettered as a description (tag, time, size, first 4 KiB) and the rest of
    /// its message is stored and acknowledged. Unset: the largest record any output takes
    /// (the smaller of its `chunk_limit_size` and, for Firehose, 1,024,000 bytes).
    pub record_size_limit: Option<ByteSize>,
    /// Skip events with an invalid time or record inside a valid message (Fluentd's default);
    /// when false such a message is rejected as a whole and not acknowledged.
    pub skip_invalid_event: bool,
    /// Prefix added to every tag (`prefix.tag`).
    pub add_tag_prefix: Option<String>,
    /// Add the client's IP address to each record under this key.
    pub source_address_key: Option<String>,
    /// Add the client's host to each record under this key. This is the peer IP as text: no
    /// reverse DNS lookup is made (it would put DNS latency on the ingestion path).
    pub source_hostname_key: Option<String>,
    /// Most concurrent connections; more are accepted and closed at once (counted, logged).
    pub max_connections: usize,
    /// Close a connection idle for this long between messages; `0` never closes (Fluentd's
    /// behaviour; clients without acks can lose a message sent on a connection closed under them).
    pub idle_timeout: ConfigDuration,
    /// A message (or handshake step, or TLS handshake) must arrive completely within this time
    /// once its first byte came: the slowloris guard.
    pub message_timeout: ConfigDuration,
    /// Close the connection after each message and its ack (Fluentd's `deny_keepalive`).
    pub deny_keepalive: bool,
    /// Networks allowed to connect (CIDR or single address); empty allows everyone.
    pub allow: Vec<String>,
    /// Answer UDP heartbeats on the same port (Fluentd's `heartbeat_type udp`).
    pub heartbeat: bool,
    /// Fluentd's `<security>`: the `shared_key` handshake.
    pub security: Option<SecurityConfig>,
    /// TLS on the TCP listener.
    pub tls: Option<TlsConfig>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            type_tag: Default::default(),
            label: None,
            listen: "0.0.0.0:24224".to_owned(),
            message_length_limit: ByteSize::mib(32),
            in_flight_limit: ByteSize::mib(2),
            decompression_size_limit: ByteSize::mib(256),
            record_size_limit: None,
            skip_invalid_event: true,
            add_tag_prefix: None,
            source_address_key: None,
            source_hostname_key: None,
            max_connections: 1024,
            idle_timeout: ConfigDuration::secs(0),
            message_timeout: ConfigDuration::secs(60),
            deny_keepalive: false,
            allow: Vec::new(),
            heartbeat: false,
            security: None,
            tls: None,
        }
    }
}

/// `[sources.NAME.security]`. Its `Debug` form leaves the key out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// The key both sides know; never logged or printed.
    pub shared_key: String,
    /// Our name in the PONG; defaults to the machine's host name.
    #[serde(default)]
    pub self_hostname: Option<String>,
    /// When not empty, clients must also log in as one of these users (Fluentd's `user_auth`).
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// `[[sources.NAME.security.users]]`. Its `Debug` form leaves the password out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name.
    pub username: String,
    /// Password; never logged or printed.
    pub password: String,
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("shared_key", &"<redacted>")
            .field("self_hostname", &self.self_hostname)
            .field("users", &self.users)
            .finish()
    }
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[sources.NAME.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

impl ForwardConfig {
    /// Values that parse but cannot work.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push((
                "listen",
                format!("{:?} is not an address like 0.0.0.0:24224", self.listen),
            ));
        }
        if self.message_length_limit.0 < 1024 {
            p.push(("message_length_limit", "must be at least 1k".to_owned()));
        }
        if self.in_flight_limit.0 < 64 * 1024 {
            p.push(("in_flight_limit", "must be at least 64k".to_owned()));
        } else if self.in_flight_limit.0 > u64::from(u32::MAX) {
            p.push(("in_flight_limit", "must be below 4g".to_owned()));
        }
        if usize::try_from(self.message_length_limit.0).is_err()
            || usize::try_from(self.decompression_size_limit.0).is_err()
        {
            p.push((
                "message_length_limit",
                "too large for this platform".to_owned(),
            ));
        }
        if let Some(limit) = self.record_size_limit {
            if limit.0 < 1024 {
                p.push(("record_size_limit", "must be at least 1k".to_owned()));
            } else if limit.0 > u64::from(u32::MAX) {
                p.push(("record_size_limit", "must be below 4g".to_owned()));
            }
        }
        if self.decompression_size_limit.0 == 0 {
            p.push((
                "decompression_size_limit",
                "must be greater than 0".to_owned(),
            ));
        }
        if self.max_connections == 0 {
            p.push(("max_connections", "must be at least 1".to_owned()));
        }
        if self.message_timeout.0.is_zero() {
            p.push(("message_timeout", "must be greater than 0".to_owned()));
        }
        for a in &self.allow {
            if parse_network(a).is_none() {
                p.push((
                    "allow",
                    format!("{a:?} is not a CIDR network or an IP address"),
                ));
            }
        }
        if let Some(prefix) = &self.add_tag_prefix {
            if prefix.is_empty() {
                p.push(("add_tag_prefix", "must not be empty".to_owned()));
            }
        }
        if let Some(s) = &self.security {
            if s.shared_key.is_empty() {
                p.push(("security.shared_key", "must not be empty".to_owned()));
            }
        }
        p
    }
}

/// `10.0.0.0/8` or `10.1.2.3`.
fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Binds the listener(s), then serves in a task until `shutdown`: stops accepting, lets every
/// connection finish the message it is processing (and ack it), then returns. Connections hold
/// a slot of `fds` (shared by every forward source) while they are open.
pub async fn spawn(
    name: &str,
    config: ForwardConfig,
    emitter: Emitter,
    shutdown: Shutdown,
    fds: FdBudget,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr: SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("listen: {:?} is not an address", config.listen))?;
    let acceptor = match &config.tls {
        Some(t) => Some(tls::acceptor(t).context("tls")?),
        None => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    let allow: Arc<[ipnet::IpNet]> = config
        .allow
        .iter()
        .filter_map(|a| parse_network(a))
        .collect();
    let metrics = metrics::ForwardMetrics::for_registry(emitter.pipeline().metrics());
    let heartbeat = if config.heartbeat {
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .with_context(|| format!("cannot listen for UDP heartbeats on {local}"))?;
        let refused = metrics
            .heartbeats_refused
            .get_or_create(&crate::ops::metrics::source_label(name))
            .clone();
        let allowed = heartbeat::Allowed::new(Arc::clone(&allow), refused);
        Some(tokio::spawn(heartbeat::run(
            socket,
            allowed,
            shutdown.clone(),
        )))
    } else {
        None
    };
    let shared = Arc::new(connection::Shared::new(
        name, &config, emitter, metrics, acceptor,
    )?);
    tracing::info!(source = name, address = %local, tls = config.tls.is_some(),
        security = config.security.is_some(), record_size_limit = shared.record_size_limit(),
        "forward source listening");
    let admission = Admission {
        allow,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        fds,
    };
    Ok(tokio::spawn(accept_loop(
        listener, shared, admission, shutdown, heartbeat,
    )))
}

/// Who may connect: `allow`, `max_connections`, the process's descriptor budget.
struct Admission {
    allow: Arc<[ipnet::IpNet]>,
    slots: Arc<Semaphore>,
    fds: FdBudget,
}

/// What an admitted connection holds until it ends.
type Admitted = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);

impl Admission {
    /// The slots for a connection from `peer`, or the refusal reason (counted and logged).
    fn admit(&self, shared: &connection::Shared, peer: SocketAddr) -> Option<Admitted> {
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&peer.ip())) {
            shared.reject(peer, "not_allowed", "client address is not in `allow`");
            return None;
        }
        if shared.locked_out(peer) {
            shared.reject(
                peer,
                "handshake_lockout",
                "too many failed handshakes from this address in the last minute",
            );
            return None;
        }
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            shared.reject(peer, "max_connections", "max_connections reached");
            return None;
        };
        let Some(fd) = self.fds.try_take() else {
            shared.reject(
                peer,
                "fd_limit",
                "no file descriptor left for clients (the rest is kept for the buffer)",
            );
            return None;
        };
        Some((slot, fd))
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<connection::Shared>,
    admission: Admission,
    mut shutdown: Shutdown,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
) {
    let mut connections = JoinSet::new();
    let accept_errors = Throttle::new(Duration::from_secs(10));
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff.reset();
                x
            }
            Err(e) => {
                let reason = AcceptBackoff::reason(&e);
                shared.count_accept_error(reason);
                let wait = backoff.next_wait();
                if let Some(suppressed) = accept_errors.allow() {
                    tracing::warn!(source = %shared.name, error = %e, reason, suppressed,
                        retry_in_ms = wait.as_millis() as u64, "accept failed");
                }
                tokio::select! {
                    _ = shutdown.recv() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let Some(admitted) = admission.admit(&shared, peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection::run(stream, peer, shared, shutdown).await;
            drop(admitted);
        });
    }
    drop(listener);
    tracing::info!(source = %shared.name, open = connections.len(),
        "forward source stopped accepting; finishing in-progress messages");
    while connections.join_next().await.is_some() {}
    if let Some(h) = heartbeat {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_fluentd() {
        let c = ForwardConfig::default();
        assert_eq!(c.listen, "0.0.0.0:24224");
        assert_eq!(c.message_length_limit, ByteSize::mib(32));
        assert_eq!(c.decompression_size_limit, ByteSize::mib(256));
        assert!(c.skip_invalid_event);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn problems_name_the_key() {
        let c = ForwardConfig {
            listen: "nope".into(),
            allow: vec!["10.0.0.0/8".into(), "bogus".into()],
            max_connections: 0,
            ..Default::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["listen", "max_connections", "allow"]);
    }

    #[test]
    fn check_redacts_the_shared_key_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            r#"
[sources.fwd]
type = "forward"
[sources.fwd.security]
shared_key = "topsecret-key"
users = [{ username = "alice", password = "topsecret-pw" }]
[outputs.out]
type = "stdout"
"#,
        )
        .unwrap();
        let config =
            crate::config::Config::load(&crate::config::ConfigSource { file: Some(file) }).unwrap();
        let text = config.to_redacted_toml().unwrap();
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("alice"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(debug.contains("alice"), "{debug}");
    }

    #[test]
    fn networks_accept_cidrs_and_plain_addresses() {
        assert!(parse_network("127.0.0.1")
            .is_some_and(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap())));
        assert!(parse_network("::1/128").is_some());
        assert!(parse_network("10.0.0.0/33").is_none());
    }
}
