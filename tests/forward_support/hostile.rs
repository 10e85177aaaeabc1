//! Messages that cost a relay much more than they cost the client who sends them.
#![allow(dead_code)]

use super::{gzip, read_reply, Mp};

/// `{"msg": "good-N"}` entries `[1, record]`, for PackedForward payloads.
pub fn good_entry(n: usize) -> Vec<u8> {
    Mp::new().arr(2).int(1).rec(&format!("good-{n}")).0
}

/// The options map asking for an ack of `chunk` (and gzip when `gzip`).
pub fn options(chunk: &str, gzip: bool) -> Vec<u8> {
    if gzip {
        Mp::new()
            .map(2)
            .s("compressed")
            .s("gzip")
            .s("chunk")
            .s(chunk)
            .0
    } else {
        Mp::new().map(1).s("chunk").s(chunk).0
    }
}

/// A gzip bomb: one CompressedPackedForward message of about 200 KiB holding `good-0`, one
/// event `{"k": <200 MiB of 0x01>}` and `good-1`. Built from gzip members (the payload is
/// their concatenation once inflated): one for the headers, 200 of 1 MiB of `0x01` each.
pub fn gzip_bomb(chunk: &str) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let mut head = good_entry(0);
    head.extend(Mp::new().arr(2).int(1).map(1).s("k").0);
    head.extend([0xdb]);
    head.extend(((200 * MIB) as u32).to_be_bytes());
    let mib = gzip(&vec![0x01; MIB]);
    let mut payload = gzip(&head);
    for _ in 0..200 {
        payload.extend_from_slice(&mib);
    }
    payload.extend(gzip(&good_entry(1)));
    Mp::new()
        .arr(3)
        .s("bomb")
        .bin(&payload)
        .raw(&options(chunk, true))
        .0
}

/// Forward mode: `good-0` … `good-{good-1}` with `{"msg": <big_len × 'x'>}` in the middle.
pub fn records_and_one_big(good: usize, big_len: usize, chunk: &str) -> Vec<u8> {
    let mut m = Mp::new().arr(3).s("app").arr(good as u32 + 1);
    for i in 0..good {
        if i == good / 2 {
            m = m.arr(2).int(1).rec(&"x".repeat(big_len));
        }
        m = m.arr(2).int(1).rec(&format!("good-{i}"));
    }
    m.raw(&options(chunk, false)).0
}

/// Forward mode: `good-0`, the event `[1, record]` (`record` is msgpack), `good-1`.
fn between_good_records(record: &[u8], chunk: &str) -> Vec<u8> {
    Mp::new()
        .arr(3)
        .s("app")
        .arr(3)
        .raw(&good_entry(0))
        .arr(2)
        .int(1)
        .raw(record)
        .raw(&good_entry(1))
        .raw(&options(chunk, false))
        .0
}

/// `{"k": <len bytes of 0x01>}` (6 bytes of JSON each) between two good records.
pub fn control_characters(len: usize, chunk: &str) -> Vec<u8> {
    let record = Mp::new().map(1).s("k").raw_str(&vec![0x01; len]).0;
    between_good_records(&record, chunk)
}

/// A record of `pairs` pairs `1: nil` (2 bytes of msgpack, 9 of JSON each) between two good
/// records.
pub fn many_nils(pairs: u32, chunk: &str) -> Vec<u8> {
    let mut record = Mp::new().map(pairs).0;
    for _ in 0..pairs {
        record.extend([0x01, 0xc0]);
    }
    between_good_records(&record, chunk)
}

/// Message mode with a tag of `len` bytes (unique per `n`) and the record `good-{n}`.
pub fn long_tag(n: usize, len: usize, chunk: &str) -> Vec<u8> {
    let mut tag = format!("t{n}.");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz";
    tag.extend((tag.len()..len).map(|i| char::from(alphabet[(i * 7 + n) % 26])));
    Mp::new()
        .arr(4)
        .s(&tag)
        .int(1)
        .rec(&format!("good-{n}"))
        .raw(&options(chunk, false))
        .0
}

/// Reads the server's HELO (the first message of the handshake).
pub fn read_helo(s: &mut std::net::TcpStream) {
    let helo = read_reply(s);
    assert!(helo.windows(4).any(|w| w == b"HELO"), "no HELO: {helo:?}");
}

/// A PING with a digest that cannot be right.
pub fn wrong_ping() -> Vec<u8> {
    Mp::new()
        .arr(6)
        .s("PING")
        .s("client")
        .s("salt")
        .s(&"0".repeat(128))
        .s("")
        .s("")
        .0
}

/// Opens up to `n` connections to `port` that send nothing, stopping at the first that cannot
/// connect within 2 s (a listen queue left full by a relay that no longer accepts).
pub fn idle_connections(port: u16, n: usize) -> Vec<std::net::TcpStream> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (0..n)
        .map_while(|_| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()
        })
        .collect()
}

/// `dead` (from `Relay::dead_letters`) holds an entry of one record whose reason contains
/// `reason`: with `truncated`, a description of a record over 64,000 bytes kept in under
/// 16 KiB; else the 100,000-byte record of [`records_and_one_big`] whole.
pub fn assert_one_dead_letter(dead: &[(serde_json::Value, String)], reason: &str, truncated: bool) {
    let found = dead.iter().find(|(meta, _)| {
        meta["reason"].as_str().is_some_and(|r| r.contains(reason))
            && meta["truncated"].as_bool().unwrap_or(false) == truncated
    });
    let Some((meta, data)) = found else {
        panic!("no dead letter with {reason:?} (truncated: {truncated}) in {dead:?}")
    };
    assert_eq!(meta["records"], 1, "only the big record");
    let v: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
    if truncated {
        assert!(v["size_bytes"].as_u64().unwrap() > 64_000, "{v}");
        assert!(data.len() < 16 << 10, "{} bytes kept", data.len());
    } else {
        assert_eq!(v["msg"].as_str().map(str::len), Some(100_000), "kept whole");
    }
}
