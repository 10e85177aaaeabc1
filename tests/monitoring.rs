//! The monitoring files users import, held to the binary they watch:
//! `conf/monitoring/alerts.yaml` passes `promtool check rules` and its unit tests
//! (`alerts.test.yaml`, which must fire every alert); `grafana-dashboard.json` is importable
//! (data source as a variable, one row per concern) and its queries are valid PromQL; and every
//! metric name either file uses exists on a running relay, so renaming a metric breaks the
//! build instead of a dashboard (the same holds for what `firehose-relay top` reads).
//!
//! promtool comes from Debian's `prometheus` package; `.ci/install-promtool` installs it
//! (the tests run that script when promtool is not on PATH).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::web_identity::WebIdentityAws;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn monitoring(file: &str) -> PathBuf {
    repo().join("conf/monitoring").join(file)
}

/// `promtool` on PATH, installed by `.ci/install-promtool` if missing.
fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| {
        let found = || {
            Command::new("promtool")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !found() {
            let out = Command::new("bash")
                .arg(repo().join(".ci/install-promtool"))
                .output()
                .expect("run .ci/install-promtool");
            assert!(
                out.status.success() && found(),
                "these tests need promtool (Debian package `prometheus`) and \
                 .ci/install-promtool could not install it:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        PathBuf::from("promtool")
    })
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn alert_rules() -> Vec<Yaml> {
    let doc: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(monitoring("alerts.yaml")).unwrap()).unwrap();
    doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

fn dashboard() -> Json {
    serde_json::from_str(&std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap())
        .expect("the dashboard is valid JSON")
}

/// Every `firehose_relay_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("firehose_relay_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..len].to_owned());
        rest = &tail[len..];
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = run_promtool(&["check", "rules", "alerts.yaml"], &monitoring(""));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_unit_tests_pass_and_fire_every_alert() {
    let out = run_promtool(&["test", "rules", "alerts.test.yaml"], &monitoring(""));
    assert!(out.contains("SUCCESS"), "{out}");

    let tests: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(monitoring("alerts.test.yaml")).unwrap())
            .unwrap();
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for case in t["alert_rule_test"].as_sequence().unwrap() {
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                fired.insert(case["alertname"].as_str().unwrap().to_owned());
            }
        }
    }
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            fired.contains(name),
            "alerts.test.yaml has no case in which {name} fires"
        );
    }
}

#[test]
fn every_alert_says_what_to_check_and_has_a_runbook_section() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let runbook = &readme[readme
        .find("### Runbook")
        .expect("README has a Runbook section")..];
    let mut names = BTreeSet::new();
    for rule in alert_rules() {
        let name = rule["alert"]
            .as_str()
            .expect("only alerting rules")
            .to_owned();
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| s.len() > 20),
                "{name}: annotation {key}"
            );
        }
        assert!(
            runbook.contains(&format!("#### {name}\n")),
            "README's runbook has no `#### {name}` section"
        );
        names.insert(name);
    }
    // What the operators asked for (issue 20), by the condition each alert watches.
    for wanted in [
        "FirehoseRelayBufferFillingUp",
        "FirehoseRelayOldestChunkTooOld",
        "FirehoseRelayDeliveryStalled",
        "FirehoseRelayCredentialsExpiring",
        "FirehoseRelayDeadLettering",
        "FirehoseRelayNotReady",
    ] {
        assert!(names.contains(wanted), "no {wanted} alert");
    }
    let filling = alert_rules()
        .into_iter()
        .find(|r| r["alert"] == "FirehoseRelayBufferFillingUp")
        .unwrap();
    assert!(filling["expr"].as_str().unwrap().contains("predict_linear"));
}

/// Every `"datasource"` object anywhere in the dashboard.
fn datasources<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                if k == "datasource" {
                    out.push(v);
                }
                datasources(v, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|v| datasources(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_is_importable_with_the_datasource_as_a_variable() {
    let d = dashboard();
    assert_eq!(d["uid"], "firehose-relay");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    assert!(d.get("id").is_none_or(Json::is_null), "no instance id");
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let mut sources = Vec::new();
    datasources(&d, &mut sources);
    assert!(sources.len() > 20);
    for ds in sources {
        assert_eq!(
            ds,
            &serde_json::json!({"type": "prometheus", "uid": "${datasource}"}),
            "every query uses the data source variable"
        );
    }

    let panels = d["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for concern in [
        "Intake",
        "Buffer",
        "Delivery",
        "Throttling and pacing",
        "Credentials",
        "Forward connections",
    ] {
        assert!(rows.contains(&concern), "no row `{concern}` in {rows:?}");
    }
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for p in panels {
        let id = p["id"].as_u64().unwrap();
        assert!(ids.insert(id), "panel id {id} used twice");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("panels {other} and {id} overlap at ({cx}, {cy})");
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {id} has no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "panel {id}: refIds are unique");
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "panel {id} says what it shows"
        );
    }
}

/// The dashboard's queries (panels and variables) with Grafana's variables replaced by values
/// Prometheus accepts.
fn dashboard_queries(d: &Json) -> Vec<(String, String)> {
    let substitute = |e: &str| {
        e.replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$output", ".*")
    };
    let mut queries = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let name = format!("panel {} ({}) {}", p["id"], p["title"], t["refId"]);
            queries.push((name, substitute(t["expr"].as_str().unwrap())));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(SELECTOR, label) is Grafana's; the selector inside is PromQL.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map_or(q, |(sel, _)| sel);
            queries.push((format!("variable {}", v["name"]), substitute(inner)));
        }
    }
    queries
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses expressions only inside rule files: one recording rule per query.
    let queries = dashboard_queries(&dashboard());
    let rules: Vec<Yaml> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("dashboard_query_{i}").into());
            rule.insert("expr".into(), expr.clone().into());
            Yaml::Mapping(rule)
        })
        .collect();
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(rules));
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.rules.yaml"),
        serde_yaml::to_string(&doc).unwrap(),
    )
    .unwrap();
    let out = run_promtool(&["check", "rules", "dashboard.rules.yaml"], dir.path());
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}\nqueries: {queries:#?}"
    );
}

/// Names a PromQL query may use for the families in an exposition: `NAME_total` for counters,
/// `_bucket`/`_sum`/`_count` for histograms, `_created` where the exposition has it, and the
/// sample names themselves.
fn queryable_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_exists_on_a_running_relay() {
    // A relay with every kind of component that has metrics: a forward source, a Firehose
    // output with web-identity credentials (fake STS and Firehose), a file buffer.
    let dir = tempfile::tempdir().unwrap();
    let aws = WebIdentityAws::start(dir.path());
    let conf = common::write_config(
        dir.path(),
        &format!(
            r#"
data_dir = {data:?}
shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:0"
[sources.forward]
type = "forward"
listen = "127.0.0.1:0"
[outputs.firehose]
type = "firehose"
{aws}
[outputs.firehose.buffer]
type = "file"
"#,
            data = dir.path().join("data").display().to_string(),
            aws = aws.output_toml("firehose"),
        ),
    );
    let mut child = common::spawn_relay(&conf, &[]);
    let http = common::wait_http_addr(dir.path(), &mut child);
    // The HTTP endpoint answers while the buffers recover, before the sources (and their
    // metric families) exist: scrape once the forward source listens.
    common::wait_forward_addr(dir.path(), &mut child, "forward");
    let exposition = common::wait_for(Duration::from_secs(30), "/metrics with credentials", || {
        let text = scrape(http);
        text.contains("firehose_relay_aws_credentials_expiry_timestamp_seconds{")
            .then_some(text)
    });
    let _ = child.kill();
    let _ = child.wait();
    let available = queryable_names(&exposition);

    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let files = [
        ("alerts.yaml", monitoring("alerts.yaml")),
        ("alerts.test.yaml", monitoring("alerts.test.yaml")),
        (
            "grafana-dashboard.json",
            monitoring("grafana-dashboard.json"),
        ),
        (
            "prometheusrule.yaml",
            repo().join("conf/kubernetes/monitoring/prometheusrule.yaml"),
        ),
    ];
    for (label, path) in &files {
        for name in metric_names(&std::fs::read_to_string(path).unwrap()) {
            used.entry(name).or_default().insert(label);
        }
    }
    for name in firehose_relay::ops::top::METRICS_USED {
        used.entry((*name).to_owned())
            .or_default()
            .insert("firehose-relay top");
    }
    assert!(used.len() > 25, "found only {used:?}");
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !available.contains(*name))
        .map(|(name, files)| format!("{name} (in {files:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used but not exposed by the relay:\n  {}\nexposed:\n{exposition}",
        missing.join("\n  ")
    );
}
