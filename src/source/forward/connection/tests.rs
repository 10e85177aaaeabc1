//! A connection's read buffer while it waits for a message.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream};

use super::*;
use crate::flush::deadletter::DeadLetter;
use crate::ops::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::shutdown::ShutdownTrigger;
use crate::source::forward::metrics::ForwardMetrics;
use crate::source::forward::ForwardConfig;
use crate::source::Emitter;

/// The shared state of a forward source with default settings and no outputs.
fn shared(dir: &std::path::Path) -> Shared {
    let metrics = Arc::new(Metrics::new());
    let pipeline = Pipeline::new(
        Vec::new(),
        Vec::new(),
        Arc::clone(&metrics),
        Arc::new(DeadLetter::new(dir)),
    );
    Shared::new(
        "fwd",
        &ForwardConfig::default(),
        Emitter::new("fwd", None, Arc::new(pipeline)),
        ForwardMetrics::for_registry(&metrics),
        None,
    )
    .unwrap()
}

/// Runs `next_frame` for a while; `None` if it was still waiting (it is cancel-safe).
async fn frame_within(
    conn: &mut Conn<'_, DuplexStream>,
    d: Duration,
) -> Option<Result<Option<(Bytes, Held)>, ConnError>> {
    tokio::time::timeout(d, conn.next_frame(false)).await.ok()
}

/// A PackedForward message of tag `t` with `n` records.
fn message(n: usize) -> Vec<u8> {
    let mut entries = Vec::new();
    for i in 0..n {
        // [1, {"k": "v<i>"}] with a fixstr of up to 31 bytes.
        let v = format!("v{i:0>20}");
        entries.extend([0x92, 0x01, 0x81, 0xa1, b'k', 0xa0 | v.len() as u8]);
        entries.extend(v.as_bytes());
    }
    let mut m = vec![0x92, 0xa1, b't', 0xc6];
    m.extend((entries.len() as u32).to_be_bytes());
    m.extend(entries);
    m
}

#[tokio::test]
async fn a_connection_waiting_for_a_message_holds_no_read_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let (_trigger, shutdown) = ShutdownTrigger::new();
    let (ours, mut client) = tokio::io::duplex(64 * 1024);
    let mut conn = Conn {
        stream: ours,
        buf: BytesMut::new(),
        framer: Framer::new(shared.message_length_limit),
        held: shared.in_flight.nothing(),
        took: false,
        wire: 0,
        shared: &shared,
        shutdown,
    };
    // Before its first message.
    assert!(frame_within(&mut conn, Duration::from_millis(100))
        .await
        .is_none());
    assert_eq!(conn.buf.capacity(), 0, "an idle connection holds a buffer");

    // A message sent in two parts: framed whole, with its bytes.
    let m = message(500);
    assert!(m.len() > PROBE, "{}", m.len());
    client.write_all(&m[..10]).await.unwrap();
    assert!(frame_within(&mut conn, Duration::from_millis(100))
        .await
        .is_none());
    client.write_all(&m[10..]).await.unwrap();
    let (frame, held) = frame_within(&mut conn, Duration::from_secs(10))
        .await
        .expect("framed")
        .unwrap()
        .expect("a message");
    assert_eq!(&frame[..], &m[..]);
    assert_eq!(held.len(), with_json(m.len()));
    drop((frame, held));

    // Between two messages.
    assert!(frame_within(&mut conn, Duration::from_millis(100))
        .await
        .is_none());
    assert_eq!(
        conn.buf.capacity(),
        0,
        "a connection waiting for its next message holds a buffer"
    );

    // Two messages in one write: the second is framed from what was read with the first.
    let small = message(3);
    client
        .write_all(&[small.as_slice(), small.as_slice()].concat())
        .await
        .unwrap();
    for _ in 0..2 {
        let (frame, _held) = frame_within(&mut conn, Duration::from_secs(10))
            .await
            .expect("framed")
            .unwrap()
            .expect("a message");
        assert_eq!(&frame[..], &small[..]);
    }
    assert!(frame_within(&mut conn, Duration::from_millis(100))
        .await
        .is_none());
    assert_eq!(conn.buf.capacity(), 0);

    // The client leaves cleanly between messages.
    drop(client);
    assert!(matches!(
        frame_within(&mut conn, Duration::from_secs(10)).await,
        Some(Ok(None))
    ));
}
