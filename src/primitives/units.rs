//! Durations and sizes written the way Fluentd users write them.
//!
//! * Durations: `10s`, `500ms`, `1m`, `1h`, `1d`, or a bare number of seconds (`1`, `0.5`,
//!   also as a TOML integer or float).
//! * Sizes: `512k`, `1m`, `8g`, `1t` with Fluentd's binary meaning (`1m` = 1 MiB), the explicit
//!   `KiB`/`MiB`/`GiB`/`TiB` (also `kb`, `mb`… which Fluentd also reads as binary), or bytes.
//!
//! Both serialize back to the canonical text form so `check` prints what a user would write.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

/// A byte size from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// Why a duration or size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by a known unit.
    #[error("invalid {kind} `{text}`: expected {expected}")]
    Invalid {
        /// "duration" or "size".
        kind: &'static str,
        /// What was given.
        text: String,
        /// What would have been accepted.
        expected: &'static str,
    },
}

const DURATION_EXPECTED: &str =
    "a number of seconds or a number with a unit: ms, s, m, h, d (e.g. `10s`, `500ms`, `1.5`)";
const SIZE_EXPECTED: &str =
    "a number of bytes or a number with a unit: k, m, g, t (binary, `1m` = 1 MiB), KiB, MiB, GiB, TiB";

/// Splits `12.5ms` into (`12.5`, `ms`).
fn split_number(text: &str) -> (&str, &str) {
    let idx = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..idx], text[idx..].trim())
}

/// Parses a duration in Fluentd's notation.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Invalid {
        kind: "duration",
        text: text.to_owned(),
        expected: DURATION_EXPECTED,
    };
    let trimmed = text.trim();
    let (number, unit) = split_number(trimmed);
    if number.is_empty() {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(err()),
    };
    let secs = value * scale;
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

/// Parses a size in Fluentd's notation.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Invalid {
        kind: "size",
        text: text.to_owned(),
        expected: SIZE_EXPECTED,
    };
    let trimmed = text.trim();
    let (number, unit) = split_number(trimmed);
    if number.is_empty() {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = (value * scale).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Canonical text of a duration: the largest unit that divides it exactly.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", d.as_secs_f64());
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{}", ms / size, unit);
        }
    }
    format!("{ms}ms")
}

/// Canonical text of a size.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("t", 1u64 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ] {
        if bytes != 0 && bytes.is_multiple_of(size) {
            return format!("{}{}", bytes / size, unit);
        }
    }
    bytes.to_string()
}

impl ConfigDuration {
    /// From whole seconds.
    pub const fn secs(s: u64) -> Self {
        ConfigDuration(Duration::from_secs(s))
    }
    /// From milliseconds.
    pub const fn millis(ms: u64) -> Self {
        ConfigDuration(Duration::from_millis(ms))
    }
}

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = ConfigDuration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map(ConfigDuration).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ConfigDuration(Duration::from_secs(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(|v| ConfigDuration(Duration::from_secs(v)))
            .map_err(|_| E::custom(format!("invalid duration `{v}`: must not be negative")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Duration::try_from_secs_f64(v)
            .map(ConfigDuration)
            .map_err(|_| E::custom(format!("invalid duration `{v}`: {DURATION_EXPECTED}")))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SIZE_EXPECTED)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_size(v).map(ByteSize).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ByteSize(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom(format!("invalid size `{v}`: must not be negative")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.is_finite() && v >= 0.0 && v <= u64::MAX as f64 {
            Ok(ByteSize(v.round() as u64))
        } else {
            Err(E::custom(format!("invalid size `{v}`: {SIZE_EXPECTED}")))
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_fluentd_notation() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration(" 1.5s ").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn durations_reject_garbage_with_a_helpful_message() {
        for bad in ["", "s", "10 parsecs", "-1s", "1..2s", "abc"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
            assert!(err.contains("`10s`"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_are_binary_like_fluentd() {
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("8g").unwrap(), 8 << 30);
        assert_eq!(parse_size("8MB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12 apples").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn canonical_text_round_trips() {
        for d in ["10s", "500ms", "1m", "2h", "1d", "1.5s"] {
            let parsed = parse_duration(d).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_size(1 << 20), "1m");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(3 << 10), "3k");
    }

    #[test]
    fn deserializes_from_numbers_and_strings() {
        #[derive(Deserialize)]
        struct T {
            a: ConfigDuration,
            b: ConfigDuration,
            c: ByteSize,
            d: ByteSize,
        }
        let t: T = toml::from_str("a = 1\nb = 0.25\nc = \"1m\"\nd = 42").unwrap();
        assert_eq!(t.a.0, Duration::from_secs(1));
        assert_eq!(t.b.0, Duration::from_millis(250));
        assert_eq!(t.c.0, 1 << 20);
        assert_eq!(t.d.0, 42);
    }
}
