//! Chunk keys (Fluentd's `<buffer tag, time>`): what an output's chunks are kept apart by, so
//! that everything in one chunk shares the values its destination is named from (the stream
//! name's `${tag}` and strftime placeholders, resolved per chunk by the sink).
//!
//! `[outputs.NAME.buffer] chunk_keys = ["tag", "time"]` with `timekey = "1h"`: each chunk holds
//! records of one tag and one time slot. A slot is `timekey` long and starts at a multiple of
//! it in the zone of `timekey_use_utc` / `timekey_zone` (local time by default, as Fluentd):
//! `slot = t - (t + offset) mod timekey`, Fluentd's `calculate_timekey`. The slot is taken from
//! the event's time, not from the time it arrived.
//!
//! Without chunk keys a chunk's key is empty ([`ChunkKey::default`]) and everything is as
//! before: one open chunk per output.

use chrono::{FixedOffset, Local, Offset, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The key of one chunk: the tag and the time slot its records share, when the output's
/// buffer is keyed by them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    /// The records' tag (`chunk_keys` has `tag`).
    pub tag: Option<String>,
    /// Start of the records' time slot, Unix seconds (`chunk_keys` has `time`).
    pub timekey: Option<i64>,
}

impl ChunkKey {
    /// True for the key of an output without chunk keys.
    pub fn is_empty(&self) -> bool {
        self.tag.is_none() && self.timekey.is_none()
    }
}

impl std::fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tag, self.timekey) {
            (None, None) => f.write_str("(none)"),
            (Some(t), None) => write!(f, "tag={t}"),
            (None, Some(k)) => write!(f, "timekey={k}"),
            (Some(t), Some(k)) => write!(f, "tag={t} timekey={k}"),
        }
    }
}

/// One entry of `chunk_keys`. Fluentd also takes record field names; the relay does not
/// (such a key is a config error naming the two it knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkKeyName {
    /// The event's tag.
    Tag,
    /// The event's time slot (`timekey`).
    Time,
}

/// The zone time slots start in and the stream name's strftime placeholders are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyZone {
    /// The process's local time (Fluentd's default, `timekey_use_utc false`).
    Local,
    /// UTC (`timekey_use_utc = true`).
    Utc,
    /// A fixed offset (`timekey_zone = "+09:00"`).
    Fixed(FixedOffset),
}

impl KeyZone {
    /// Reads `timekey_zone`: `+HH:MM`, `-HHMM`, `+HH`, `Z` or `UTC`. Named zones
    /// (`Asia/Tokyo`) are refused: the relay has no zone database.
    pub fn parse(s: &str) -> Result<KeyZone, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(KeyZone::Utc);
        }
        let err = || {
            format!(
                "`{s}` is not a fixed offset like \"+09:00\" or \"-0500\" (named zones are not \
                 supported: write the offset)"
            )
        };
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1, &t[1..]),
            Some(b'-') => (-1, &t[1..]),
            _ => return Err(err()),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit())
            || !(digits.len() == 2 || digits.len() == 4)
            || rest.contains(':') && rest.len() != 5
        {
            return Err(err());
        }
        let hours: i32 = digits[..2].parse().map_err(|_| err())?;
        let minutes: i32 = if digits.len() == 4 {
            digits[2..].parse().map_err(|_| err())?
        } else {
            0
        };
        if hours > 23 || minutes > 59 {
            return Err(err());
        }
        FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
            .map(KeyZone::Fixed)
            .ok_or_else(err)
    }

    /// The zone's offset from UTC at `secs` (Unix seconds), in seconds.
    pub fn offset_at(self, secs: i64) -> i64 {
        match self {
            KeyZone::Utc => 0,
            KeyZone::Fixed(o) => i64::from(o.local_minus_utc()),
            KeyZone::Local => Local
                .timestamp_opt(secs, 0)
                .single()
                .map_or(0, |t| i64::from(t.offset().fix().local_minus_utc())),
        }
    }

    /// `pattern` (strftime) of the time `secs` in this zone, or `None` if the pattern has an
    /// invalid directive.
    pub fn strftime(self, secs: i64, pattern: &str) -> Option<String> {
        use std::fmt::Write;
        let utc = Utc.timestamp_opt(secs, 0).single()?;
        let items = chrono::format::StrftimeItems::new(pattern);
        let mut out = String::new();
        let ok = match self {
            KeyZone::Utc => write!(out, "{}", utc.format_with_items(items)),
            KeyZone::Fixed(o) => write!(out, "{}", utc.with_timezone(&o).format_with_items(items)),
            KeyZone::Local => write!(
                out,
                "{}",
                utc.with_timezone(&Local).format_with_items(items)
            ),
        };
        ok.ok().map(|()| out)
    }
}

/// How an output computes the key of its records, resolved from its buffer config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyRule {
    /// Records are kept apart by tag.
    pub tag: bool,
    /// Records are kept apart by time slot of this many seconds.
    pub timekey_secs: Option<i64>,
    /// The zone slots start in.
    pub zone: Option<KeyZone>,
}

impl KeyRule {
    /// True when records are kept apart by anything.
    pub fn is_keyed(&self) -> bool {
        self.tag || self.timekey_secs.is_some()
    }

    /// The start of the slot of time `secs` (Unix seconds): Fluentd's `calculate_timekey`.
    pub fn slot_of(&self, secs: i64) -> Option<i64> {
        let size = self.timekey_secs?.max(1);
        let offset = self.zone.unwrap_or(KeyZone::Local).offset_at(secs);
        Some(secs - (secs.saturating_add(offset)).rem_euclid(size))
    }

    /// The key of records of `tag` whose event time is `secs` (Unix seconds).
    pub fn key(&self, tag: &str, secs: i64) -> ChunkKey {
        ChunkKey {
            tag: self.tag.then(|| tag.to_owned()),
            timekey: self.slot_of(secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_at_multiples_of_the_timekey_in_their_zone() {
        let utc = KeyRule {
            tag: false,
            timekey_secs: Some(3600),
            zone: Some(KeyZone::Utc),
        };
        // 2026-12-03 10:28:55 UTC
        assert_eq!(utc.slot_of(1_796_293_735), Some(1_796_292_000));
        let day_tokyo = KeyRule {
            timekey_secs: Some(86_400),
            zone: Some(KeyZone::parse("+09:00").unwrap()),
            ..utc
        };
        // Midnight in Tokyo is 15:00 UTC the day before.
        let slot = day_tokyo.slot_of(1_796_293_735).unwrap();
        assert_eq!((slot + 9 * 3600) % 86_400, 0);
        assert!(slot <= 1_796_293_735 && 1_796_293_735 - slot < 86_400);
        let half_hour_behind = KeyRule {
            zone: Some(KeyZone::parse("-0930").unwrap()),
            ..day_tokyo
        };
        let s = half_hour_behind.slot_of(1_796_293_735).unwrap();
        assert_eq!((s - 9 * 3600 - 1800).rem_euclid(86_400), 0);
        assert_eq!(KeyRule::default().slot_of(5), None);
    }

    #[test]
    fn zones_are_fixed_offsets_or_utc() {
        assert_eq!(KeyZone::parse("UTC"), Ok(KeyZone::Utc));
        assert_eq!(KeyZone::parse("+09").unwrap().offset_at(0), 9 * 3600);
        assert_eq!(
            KeyZone::parse("-05:30").unwrap().offset_at(0),
            -(5 * 3600 + 1800)
        );
        for bad in ["Asia/Tokyo", "+9", "+24:00", "0900", "+09:0", "+0960", ""] {
            assert!(KeyZone::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            KeyZone::Utc
                .strftime(1_796_292_000, "logs-%Y%m%d%H")
                .as_deref(),
            Some("logs-2026120310")
        );
        assert_eq!(KeyZone::Utc.strftime(0, "%Q"), None);
    }
}
