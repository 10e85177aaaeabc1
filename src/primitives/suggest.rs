//! "Did you mean …?" for misspelled keys and `type` values: the valid name nearest to what was
//! written, by edit distance.

/// The candidate nearest to `found` (Levenshtein distance over characters, case-insensitive),
/// if it is close enough to be a plausible misspelling: at most one edit per three characters of
/// `found`, at least one and at most three. Ties go to the first candidate.
pub fn nearest<'a>(found: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let found = found.to_lowercase();
    let allowed = (found.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (distance(&found, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions) between two strings, counted in
/// characters.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // One row of the dynamic-programming table: row[j] = distance(a[..i], b[..j]).
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The message for a name that is not one of `expected`: `what` is what the name is (`key`,
/// `type`, `value`). The valid names are listed plainly, and the nearest one suggested.
pub fn unknown_name(what: &str, found: &str, expected: &[&str]) -> String {
    let mut text = format!("unknown {what} `{found}`");
    if let Some(near) = nearest(found, expected) {
        text.push_str(&format!(", did you mean `{near}`?"));
    }
    match expected {
        [] => {}
        [only] => text.push_str(&format!(" (the only valid {what} is {only})")),
        _ => text.push_str(&format!(" (valid: {})", expected.join(", "))),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("flush_intervall", "flush_interval"), 1);
        assert_eq!(distance("flush_intreval", "flush_interval"), 2);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(
            distance("fireh\u{f6}se", "firehose"),
            1,
            "characters, not bytes"
        );
    }

    #[test]
    fn the_nearest_plausible_name_is_suggested() {
        let keys = ["flush_interval", "flush_thread_count", "flush_mode", "type"];
        assert_eq!(nearest("flush_intervall", &keys), Some("flush_interval"));
        assert_eq!(nearest("flush_intreval", &keys), Some("flush_interval"));
        assert_eq!(nearest("Flush_Mode", &keys), Some("flush_mode"));
        assert_eq!(nearest("typ", &keys), Some("type"));
        // Too far from everything: no guess.
        assert_eq!(nearest("retry_wait", &keys), None);
        assert_eq!(nearest("x", &keys), None);
    }

    #[test]
    fn the_message_lists_valid_names_without_nested_quotes() {
        let text = unknown_name("key", "flush_intervall", &["type", "flush_interval"]);
        assert_eq!(
            text,
            "unknown key `flush_intervall`, did you mean `flush_interval`? \
             (valid: type, flush_interval)"
        );
        let text = unknown_name("type", "kafka", &["firehose", "file", "stdout"]);
        assert_eq!(text, "unknown type `kafka` (valid: firehose, file, stdout)");
    }
}
