//! Arbitrary text into the fluent.conf parser: it must never panic, and whatever it accepts
//! must be consistent (every position inside the text, every directive named). What it accepts
//! then goes through the converter, which must not panic either, must write valid TOML, and
//! must place every finding inside the text.
#![no_main]

use firehose_relay::fluentd::parse_str;
use firehose_relay::fluentd::syntax::Directive;
use libfuzzer_sys::fuzz_target;

fn check(d: &Directive, lines: u32) {
    assert!(!d.name.is_empty());
    assert!(d.pos.line >= 1 && d.pos.line <= lines, "{} > {lines}", d.pos);
    for p in &d.params {
        assert!(p.pos.line >= d.pos.line && p.pos.line <= lines);
    }
    for c in &d.children {
        check(c, lines);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = u32::try_from(text.lines().count().max(1) + 1).unwrap_or(u32::MAX);
    match parse_str(text, "fuzz.conf") {
        Ok(parsed) => {
            for d in &parsed.document.directives {
                check(d, lines);
            }
            let conversion = firehose_relay::fluentd::convert::convert(&parsed);
            if let Err(e) = conversion.toml.parse::<toml::Table>() {
                panic!("invalid TOML ({e}):\n{}", conversion.toml);
            }
            for f in &conversion.findings {
                assert!(f.pos.line >= 1 && f.pos.line <= lines, "{f}");
            }
            let _ = conversion.report();
        }
        Err(e) => {
            assert!(e.pos.line >= 1 && e.pos.line <= lines, "{e}");
            let _ = e.to_string();
        }
    }
});
