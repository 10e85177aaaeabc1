//! Parameter values as Fluentd's `config_param` types read them (`Fluent::Config` in
//! `types.rb`), with an error wherever Fluentd's reading would surprise: its size and time
//! parsers take the *last digits before a unit letter anywhere in the text*, so `1.5m` is 5 MiB
//! and `500ms` is 500 minutes to Fluentd. The relay refuses to guess and says what Fluentd
//! would have read.

use std::time::Duration;

/// Why a value is not of its type, in a sentence for the report.
pub type TypeError = String;

/// A `:size`: `512k`, `8m`, `1g`, `1t` (binary; an optional `b`/`ib` after the letter, any
/// case) or a number of bytes.
pub fn size(text: &str) -> Result<u64, TypeError> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "`{text}` is not a size (write e.g. 512k, 8m, 1g or bytes)"
        ));
    }
    let number: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let unit = t[digits..].to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ if unit.starts_with('.') => {
            return Err(format!(
                "`{text}`: Fluentd reads the digits right before the unit only (it would read `{}`); write a whole number with a smaller unit (e.g. 1536k for 1.5m)",
                fluentd_size_misreading(t)
            ))
        }
        _ => return Err(format!("`{text}` is not a size (write e.g. 512k, 8m, 1g or bytes)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// What Fluentd's size parser makes of `1.5m`: the digits just before the first unit letter.
fn fluentd_size_misreading(t: &str) -> String {
    let lower = t.to_ascii_lowercase();
    let Some(u) = lower.find(['k', 'm', 'g', 't']) else {
        return t.to_owned();
    };
    let start = lower[..u]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    lower[start..=u].to_owned()
}

/// A `:time`: `10s`, `5m`, `1h`, `1d` (whole numbers) or seconds as a number (`1`, `0.5`).
pub fn time(text: &str) -> Result<Duration, TypeError> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &t[digits..];
    let scale = match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        _ => None,
    };
    if let (Some(scale), true) = (scale, digits > 0) {
        let n: u64 = t[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        return n
            .checked_mul(scale)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{text}` is too large"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("`{text}` is not a duration"));
        }
    }
    let hint = if unit.ends_with("ms") {
        " (Fluentd has no `ms`: it would read `500ms` as 500 minutes; write 0.5 for half a second)"
    } else if t.contains('.') && t.ends_with(['s', 'm', 'h', 'd']) {
        " (Fluentd reads only the digits right before the unit: `1.5s` would be 5 seconds; write 1.5)"
    } else {
        ""
    };
    Err(format!(
        "`{text}` is not a time Fluentd reads the same way{hint}; write e.g. 10s, 5m, 1h, 1d or a number of seconds"
    ))
}

/// A `:bool`: `true`/`yes`, `false`/`no`; the empty value (a key alone) and a value that is
/// really a comment (`flag #note`) are true, as in Fluentd.
pub fn bool(text: &str) -> Result<bool, TypeError> {
    match text.trim() {
        "true" | "yes" | "" => Ok(true),
        "false" | "no" => Ok(false),
        t if t.starts_with('#') => Ok(true),
        _ => Err(format!(
            "`{text}` is not a boolean (true, false, yes or no)"
        )),
    }
}

/// An `:integer`.
pub fn integer(text: &str) -> Result<i64, TypeError> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an integer"))
}

/// A `:float`.
pub fn float(text: &str) -> Result<f64, TypeError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// An `:array` of strings: a JSON array, or values separated by commas.
pub fn array(text: &str) -> Result<Vec<String>, TypeError> {
    let t = text.trim();
    if t.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(t).map_err(|e| format!("`{text}` is not a JSON array: {e}"))?;
        return Ok(items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect());
    }
    if t.is_empty() {
        return Ok(Vec::new());
    }
    Ok(t.split(',').map(|s| s.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(size("1m").unwrap(), 1 << 20);
        assert_eq!(size("8g").unwrap(), 8 << 30);
        assert_eq!(size("512K").unwrap(), 512 << 10);
        assert_eq!(size("2MB").unwrap(), 2 << 20);
        assert_eq!(size("1000").unwrap(), 1000);
        let e = size("1.5m").unwrap_err();
        assert!(e.contains("would read `5m`"), "{e}");
        assert!(size("abc").is_err());
        assert!(size("1x").is_err());
    }

    #[test]
    fn times_read_like_fluentd_or_are_refused() {
        assert_eq!(time("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(time("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(time("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(time("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(time("1").unwrap(), Duration::from_secs(1));
        assert_eq!(time("0.5").unwrap(), Duration::from_millis(500));
        assert!(time("500ms").unwrap_err().contains("500 minutes"));
        assert!(time("1.5s").unwrap_err().contains("5 seconds"));
        assert!(time("soon").is_err());
        assert!(time("-1").is_err());
    }

    #[test]
    fn booleans_include_fluentd_quirks() {
        assert!(bool("true").unwrap());
        assert!(bool("yes").unwrap());
        assert!(bool("").unwrap());
        assert!(bool("#comment").unwrap());
        assert!(!bool("no").unwrap());
        assert!(bool("maybe").is_err());
    }

    #[test]
    fn arrays_are_json_or_comma_separated() {
        assert_eq!(array(r#"["a","b"]"#).unwrap(), vec!["a", "b"]);
        assert_eq!(array("a, b ,c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(array("").unwrap(), Vec::<String>::new());
    }
}
