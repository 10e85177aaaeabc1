//! Routing as a user sees it: filters, first match, labels, rejected records.

use std::path::Path;

use super::*;
use crate::buffer::config::BufferConfig;
use crate::buffer::memory::MemoryBuffer;
use crate::buffer::policy::BufferPolicy;
use crate::buffer::{now_ms, Enqueue};
use crate::event::EventTime;
use crate::pipeline::format::FormatOptions;
use crate::sink::stdout::{StdoutOutputConfig, StdoutSink};

struct Recorder(&'static str, Arc<Mutex<Vec<String>>>);
impl Filter for Recorder {
    fn apply(&self, batch: &mut EventBatch) {
        self.1
            .lock()
            .unwrap()
            .push(format!("{}:{}", self.0, batch.tag()));
    }
}

fn output(name: &str, pattern: &str) -> Arc<Output> {
    labelled_output(name, pattern, None, None)
}

/// An output with a label and, optionally, a `data_key` (records without it are rejected).
fn labelled_output(
    name: &str,
    pattern: &str,
    label: Option<&str>,
    data_key: Option<&str>,
) -> Arc<Output> {
    let buffer = BufferConfig::default();
    let format = FormatOptions {
        data_key: data_key.map(str::to_owned),
        ..FormatOptions::default()
    };
    Arc::new(Output {
        name: name.into(),
        pattern: TagPattern::parse(pattern).unwrap(),
        formatter: Formatter::new(format, None),
        buffer: Arc::new(MemoryBuffer::new(BufferPolicy::from_config(name, &buffer))),
        sink: Arc::new(StdoutSink),
        config: OutputConfig::Stdout(StdoutOutputConfig {
            type_tag: Default::default(),
            pattern: pattern.into(),
            label: label.map(str::to_owned),
            append_new_line: true,
            data_key: data_key.map(str::to_owned),
            buffer,
        }),
    })
}

async fn stored(o: &Output) -> Vec<String> {
    o.buffer.enqueue_staged(Enqueue::All).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = o.buffer.take(now_ms()).await.unwrap() {
        out.extend(
            c.records
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned()),
        );
    }
    out
}

fn stage(label: Option<&str>, pattern: &str, filter: impl Filter + 'static) -> FilterStage {
    FilterStage {
        label: label.map(str::to_owned),
        pattern: TagPattern::parse(pattern).unwrap(),
        filter: Box::new(filter),
    }
}

fn pipeline(filters: Vec<FilterStage>, outputs: &[&Arc<Output>], dir: &Path) -> Pipeline {
    Pipeline::new(
        filters,
        outputs.iter().map(|o| Arc::clone(o)).collect(),
        Arc::new(Metrics::new()),
        Arc::new(DeadLetter::new(dir)),
    )
}

fn batch(tag: &str, record: &str) -> EventBatch {
    let mut b = EventBatch::new(tag);
    b.push_raw(EventTime(0), record);
    b
}

#[tokio::test]
async fn events_go_to_the_first_matching_output_after_matching_filters_in_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let filters = vec![
        stage(None, "app.**", Recorder("f1", Arc::clone(&seen))),
        stage(None, "sys.*", Recorder("f2", Arc::clone(&seen))),
        stage(None, "**", Recorder("f3", Arc::clone(&seen))),
    ];
    let (apps, all) = (output("apps", "app.**"), output("all", "**"));
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(
        filters,
        vec![Arc::clone(&apps), Arc::clone(&all)],
        Arc::new(Metrics::new()),
        Arc::new(DeadLetter::new(dir.path())),
    );
    p.emit("src", None, batch("app.web", r#"{"a":1}"#))
        .await
        .unwrap();
    p.emit("src", None, batch("sys.kern", r#"{"b":2}"#))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["f1:app.web", "f3:app.web", "f2:sys.kern", "f3:sys.kern"]
    );
    assert_eq!(
        stored(&apps).await,
        vec!["{\"a\":1}\n"],
        "first match wins, no copy"
    );
    assert_eq!(stored(&all).await, vec!["{\"b\":2}\n"]);
}

#[tokio::test]
async fn unmatched_events_are_counted_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let p = Pipeline::new(
        vec![],
        vec![output("apps", "app.**")],
        Arc::clone(&metrics),
        Arc::new(DeadLetter::new(dir.path())),
    );
    p.emit("src", None, batch("other", "{}")).await.unwrap();
    let labels = vec![
        ("source", "src".to_owned()),
        ("reason", "no_output_matched".to_owned()),
    ];
    assert_eq!(metrics.records_dropped.get_or_create(&labels).get(), 1);
    assert_eq!(
        metrics.records_in.get_or_create(&source_label("src")).get(),
        1
    );
}

#[tokio::test]
async fn a_labelled_source_sees_only_its_labels_filters_and_outputs() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let filters = vec![
        stage(None, "**", Recorder("top", Arc::clone(&seen))),
        stage(Some("@main"), "**", Recorder("main", Arc::clone(&seen))),
    ];
    let top = output("top", "**");
    let main = labelled_output("main", "**", Some("@main"), None);
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(filters, &[&top, &main], dir.path());
    p.emit("fwd", None, batch("a", r#"{"n":1}"#)).await.unwrap();
    p.emit("gen", Some("@main"), batch("b", r#"{"n":2}"#))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["top:a", "main:b"]);
    assert_eq!(stored(&top).await, vec!["{\"n\":1}\n"]);
    assert_eq!(stored(&main).await, vec!["{\"n\":2}\n"]);
}

#[tokio::test]
async fn rejected_records_go_to_the_error_label_when_it_exists() {
    let strict = labelled_output("strict", "**", None, Some("log"));
    let errors = labelled_output("errors", "**", Some(ERROR_LABEL), None);
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![], &[&strict, &errors], dir.path());
    let mut b = batch("app", r#"{"log":"kept"}"#);
    b.push_raw(EventTime(7), r#"{"other":1}"#);
    p.emit("src", None, b).await.unwrap();
    assert_eq!(stored(&strict).await, vec!["kept\n"]);
    assert_eq!(stored(&errors).await, vec!["{\"other\":1}\n"]);
    assert!(
        p.dead_letter().list().unwrap().is_empty(),
        "nothing dead-lettered when @ERROR takes it"
    );
}

#[tokio::test]
async fn without_an_error_label_rejected_records_are_dead_lettered() {
    let strict = labelled_output("strict", "**", None, Some("log"));
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![], &[&strict], dir.path());
    p.emit("src", None, batch("app", r#"{"other":1}"#))
        .await
        .unwrap();
    assert_eq!(p.dead_letter().list().unwrap().len(), 1);
}

#[test]
fn records_are_split_by_chunk_key_in_order_skipping_rejected_events() {
    use crate::buffer::key::{KeyRule, KeyZone};
    use crate::pipeline::format::Rejected;
    let mut records = Records::new();
    for r in ["a\n", "b\n", "c\n", "d\n"] {
        records.push(r.as_bytes()).unwrap();
    }
    let rule = KeyRule {
        tag: true,
        timekey_secs: Some(60),
        zone: Some(KeyZone::Utc),
    };
    // Five events; the second was rejected (no record); slots 0, 60, 0, 120 for the rest.
    let times = [10, 61, 70, 59, 121];
    let rejected = [Rejected {
        index: 1,
        reason: String::new(),
    }];
    let parts = keyed_parts(&rule, "app.x", &times, &rejected, records.clone());
    let got: Vec<_> = parts
        .iter()
        .map(|(k, r)| {
            let text: String = r.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
            (k.tag.clone().unwrap(), k.timekey.unwrap(), text)
        })
        .collect();
    let want = [(0, "a\nc\n"), (60, "b\n"), (120, "d\n")]
        .map(|(slot, text)| ("app.x".to_owned(), slot, text.to_owned()));
    assert_eq!(got, want);
    let by_tag = KeyRule {
        timekey_secs: None,
        ..rule
    };
    let parts = keyed_parts(&by_tag, "app.x", &[], &[], records.clone());
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].0.tag.as_deref(), Some("app.x"));
    let unkeyed = keyed_parts(&KeyRule::default(), "app.x", &[], &[], records);
    assert!(unkeyed[0].0.is_empty());
}
