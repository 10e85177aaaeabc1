//! The rows of `top` as text cells, shared by the terminal UI and the plain table.

use super::model::{OutputRow, SourceRow, View};

/// Column titles of the sources table.
pub const SOURCE_HEADER: [&str; 4] = ["SOURCE", "RECORDS/S", "CONNECTIONS", "RECORDS"];

/// Column titles of the outputs table.
pub const OUTPUT_HEADER: [&str; 9] = [
    "OUTPUT",
    "IN/S",
    "OUT/S",
    "BUFFER",
    "OLDEST",
    "RETRYING",
    "FAILURES",
    "PACING",
    "CREDENTIALS",
];

/// How the buffer fill bar is drawn: block characters on a terminal, ASCII in plain text.
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    /// Filled cell.
    pub full: char,
    /// Empty cell.
    pub empty: char,
    /// Cells.
    pub width: usize,
}

/// For the terminal UI.
pub const BLOCKS: Bar = Bar {
    full: '█',
    empty: '░',
    width: 10,
};

/// For plain text.
pub const ASCII: Bar = Bar {
    full: '#',
    empty: '.',
    width: 10,
};

/// `1234.5`, `-` when unknown.
fn per_second(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
}

/// `750 B`, `12.5 KiB`, `3.2 GiB`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `45s`, `12m05s`, `3h10m`; negative: `expired`.
pub fn duration(secs: f64) -> String {
    if secs < 0.0 {
        return "expired".to_owned();
    }
    let s = secs.round() as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `###....... 25% 250 B` (single spaces: the plain table separates cells by two).
fn buffer(row: &OutputRow, bar: Bar) -> String {
    let Some(fill) = row.fill else {
        return bytes(row.bytes);
    };
    let cells = ((fill.clamp(0.0, 1.0) * bar.width as f64).round() as usize).min(bar.width);
    let drawn: String = std::iter::repeat_n(bar.full, cells)
        .chain(std::iter::repeat_n(bar.empty, bar.width - cells))
        .collect();
    format!("{drawn} {:.0}% {}", fill * 100.0, bytes(row.bytes))
}

fn failures(row: &OutputRow) -> String {
    if row.failures.is_empty() {
        return "-".to_owned();
    }
    row.failures
        .iter()
        .map(|(class, n)| format!("{class}:{n:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sources table's cells.
pub fn source_cells(view: &View) -> Vec<Vec<String>> {
    view.sources
        .iter()
        .map(|s: &SourceRow| {
            vec![
                s.name.clone(),
                per_second(s.records_per_s),
                s.connections
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
                format!("{:.0}", s.records_total),
            ]
        })
        .collect()
}

/// The outputs table's cells.
pub fn output_cells(view: &View, bar: Bar) -> Vec<Vec<String>> {
    view.outputs
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                per_second(o.in_per_s),
                per_second(o.out_per_s),
                buffer(o, bar),
                o.oldest_s.map_or_else(|| "-".to_owned(), duration),
                format!("{:.0}", o.retrying),
                failures(o),
                o.pacing
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.2}")),
                o.credentials_expire_in_s
                    .map_or_else(|| "-".to_owned(), |s| format!("expires in {}", duration(s))),
            ]
        })
        .collect()
}

/// The readiness word of the title line.
pub fn readiness(view: &View) -> &'static str {
    match view.ready {
        Some(true) => "ready",
        Some(false) => "NOT READY",
        None => "readiness unknown",
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    lines.join("\n")
}

/// The whole view as plain text (`--once`, or stdout not a terminal).
pub fn plain(view: &View, url: &str) -> String {
    format!(
        "firehose-relay at {url}: {}\n\n{}\n\n{}\n",
        readiness(view),
        aligned(&SOURCE_HEADER, &source_cells(view)),
        aligned(&OUTPUT_HEADER, &output_cells(view, ASCII)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_plain_table_lines_up_its_columns() {
        let view = View {
            ready: Some(true),
            sources: vec![SourceRow {
                name: "forward".into(),
                records_per_s: Some(1234.5),
                records_total: 98765.0,
                connections: Some(2.0),
            }],
            outputs: vec![OutputRow {
                name: "firehose".into(),
                in_per_s: Some(1200.0),
                out_per_s: Some(1100.25),
                fill: Some(0.25),
                bytes: 3.0 * 1024.0 * 1024.0,
                oldest_s: Some(725.0),
                retrying: 1.0,
                failures: BTreeMap::from([("throttled".to_owned(), 3.0)]),
                pacing: Some(0.8),
                credentials_expire_in_s: Some(3000.0),
            }],
        };
        let text = plain(&view, "http://127.0.0.1:24231");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "firehose-relay at http://127.0.0.1:24231: ready");
        assert_eq!(lines[2], "SOURCE   RECORDS/S  CONNECTIONS  RECORDS");
        assert_eq!(lines[3], "forward  1234.5     2            98765");
        assert!(
            lines[5].starts_with("OUTPUT    IN/S    OUT/S   BUFFER"),
            "{}",
            lines[5]
        );
        assert_eq!(
            lines[6],
            "firehose  1200.0  1100.2  ###....... 25% 3.0 MiB  12m05s  1         \
             throttled:3  0.80    expires in 50m00s"
        );
    }

    #[test]
    fn sizes_and_durations_read_like_an_operator_writes_them() {
        assert_eq!(bytes(750.0), "750 B");
        assert_eq!(bytes(12.5 * 1024.0), "12.5 KiB");
        assert_eq!(duration(45.0), "45s");
        assert_eq!(duration(3.0 * 3600.0 + 600.0), "3h10m");
        assert_eq!(duration(-1.0), "expired");
    }
}
