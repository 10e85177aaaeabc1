//! The deployment files users apply: Kubernetes manifests and the Dockerfile must agree with the
//! binary and its config (no Docker engine or cluster here, so they are checked statically and
//! against the real binary).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("conf/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let kind = doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{path:?} has no kind"))
            .to_owned();
        by_kind.insert(kind, doc);
    }
    by_kind
}

fn relay_toml() -> toml::Table {
    std::fs::read_to_string(repo().join("conf/relay.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

fn container(m: &BTreeMap<String, Value>) -> &Value {
    &m["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
}

fn port_number(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn every_kind_needed_for_an_irsa_statefulset_is_present() {
    let m = manifests();
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "Kustomization",
    ] {
        assert!(m.contains_key(kind), "missing {kind}");
    }
    let sa = &m["ServiceAccount"];
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:iam::"));
    let sts = &m["StatefulSet"]["spec"];
    assert_eq!(
        sts["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    assert_eq!(
        m["Service"]["spec"]["clusterIP"].as_str(),
        Some("None"),
        "headless"
    );
    assert_eq!(sts["serviceName"], m["Service"]["metadata"]["name"]);
    let sec = &sts["template"]["spec"]["securityContext"];
    assert_eq!(sec["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        sec["fsGroup"], sec["runAsGroup"],
        "the volume is writable by the relay's group"
    );
}

#[test]
fn the_configmap_carries_exactly_conf_relay_toml() {
    let m = manifests();
    let embedded = m["ConfigMap"]["data"]["relay.toml"].as_str().unwrap();
    let file = std::fs::read_to_string(repo().join("conf/relay.toml")).unwrap();
    assert_eq!(
        embedded.trim_end(),
        file.trim_end(),
        "regenerate configmap.yaml from conf/relay.toml"
    );
}

#[test]
fn ports_volumes_and_grace_period_match_the_config() {
    let m = manifests();
    let c = container(&m);
    let cfg = relay_toml();
    let http_listen = cfg["http"]["listen"].as_str().unwrap();
    assert!(http_listen.ends_with(&format!(":{}", port_number(c, "http"))));
    let fwd_listen = cfg["sources"]["forward"]["listen"].as_str().unwrap();
    assert!(fwd_listen.ends_with(&format!(":{}", port_number(c, "forward"))));
    assert_eq!(
        m["Service"]["spec"]["ports"][0]["port"].as_u64(),
        Some(24224)
    );

    let data_dir = cfg["data_dir"].as_str().unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let data_mount = mounts
        .iter()
        .find(|v| v["mountPath"].as_str() == Some(data_dir))
        .expect("data_dir mounted");
    let claim = &m["StatefulSet"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"];
    assert_eq!(
        &data_mount["name"], claim,
        "data_dir lives on the persistent volume"
    );

    let config_arg = c["args"]
        .as_sequence()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    let config_mount = mounts
        .iter()
        .find(|v| v["name"].as_str() == Some("config"))
        .unwrap();
    assert_eq!(
        Path::new(config_arg).parent().unwrap(),
        Path::new(config_mount["mountPath"].as_str().unwrap())
    );

    let grace = m["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let timeout =
        firehose_relay::config::units::parse_duration(cfg["shutdown_timeout"].as_str().unwrap())
            .unwrap();
    assert!(
        timeout.as_secs() < grace,
        "shutdown_timeout must end before Kubernetes kills the pod"
    );
}

#[test]
fn probes_point_at_real_endpoints_of_the_binary() {
    let m = manifests();
    let c = container(&m);
    let mut paths = Vec::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(
            get["port"].as_str(),
            Some("http"),
            "{probe} uses the http port"
        );
        paths.push(get["path"].as_str().unwrap().to_owned());
    }
    // Start the real binary and ask each path.
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = common::write_config(
        dir.path(),
        &format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[sources.s]\ntype = \"sample\"\n[outputs.o]\ntype = \"stdout\"\n[outputs.o.buffer]\ntype = \"memory\"\n",
            dir.path().join("data").display()
        ),
    );
    let mut child = common::spawn_relay(&conf, &[]);
    common::wait_listening(port, Duration::from_secs(10));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in paths {
        let code = common::wait_for(Duration::from_secs(10), &format!("{path} → 200"), || {
            let code = rt.block_on(async {
                reqwest::get(format!("http://127.0.0.1:{port}{path}"))
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            });
            (code == 200).then_some(code)
        });
        assert_eq!(code, 200);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn manifest_environment_variables_are_keys_the_config_accepts() {
    let m = manifests();
    let c = container(&m);
    let mut cmd = Command::new(common::relay_bin());
    cmd.args(["check", "--config"])
        .arg(repo().join("conf/relay.toml"))
        .env_remove("RELAY_CONFIG");
    // What the EKS pod identity webhook injects.
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "header.payload.signature").unwrap();
    cmd.env(
        "AWS_ROLE_ARN",
        "arn:aws:iam::111122223333:role/firehose-relay",
    );
    cmd.env("AWS_WEB_IDENTITY_TOKEN_FILE", token.path());
    let mut relay_vars = 0;
    for e in c["env"].as_sequence().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = e["value"].as_str().unwrap();
        relay_vars += usize::from(name.starts_with("RELAY_"));
        cmd.env(name, value);
    }
    assert!(
        relay_vars >= 3,
        "the manifest shows buffer tuning through RELAY_* variables"
    );
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("overflow_action = \"block\""),
        "env override visible in check:\n{stdout}"
    );
    assert!(stdout.contains("total_limit_size = \"16g\""), "{stdout}");
}

#[test]
fn dockerfile_builds_this_binary_from_files_in_the_repo() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let cargo: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let bin = cargo["bin"].as_array().unwrap()[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stages = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if line.starts_with("FROM ") {
            stages += 1;
        }
        if let Some(rest) = line.strip_prefix("COPY ") {
            if rest.starts_with("--from=") {
                continue;
            }
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(
                    repo().join(src).exists(),
                    "Dockerfile copies {src}, which is not in the repo"
                );
            }
        }
        assert!(
            !line.contains("curl ") && !line.contains("wget "),
            "no downloads of prebuilt binaries: {line}"
        );
    }
    assert!(stages >= 2, "multi-stage build");
    assert!(
        text.contains(&format!("--bin {bin}")),
        "builds the `{bin}` binary"
    );
    assert!(text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")));
    assert!(text.contains("COPY conf/relay.toml /etc/firehose-relay/relay.toml"));
    assert!(
        text.contains("\"/etc/firehose-relay/relay.toml\""),
        "runs with the shipped config"
    );
    assert!(text.contains("USER 10001"), "non-root");
    assert!(text.contains("VOLUME [\"/var/lib/firehose-relay\"]"));
    assert!(text.contains("EXPOSE 24224/tcp") && text.contains("24231/tcp"));
}
