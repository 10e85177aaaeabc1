//! The deployment files users apply: Kubernetes manifests and the Dockerfile must agree with the
//! binary and its config (no Docker engine or cluster here, so they are checked statically and
//! against the real binary).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
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
    let timeout = firehose_relay::primitives::units::parse_duration(
        cfg["shutdown_timeout"].as_str().unwrap(),
    )
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
    let conf = common::write_config(
        dir.path(),
        &format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[sources.s]\ntype = \"sample\"\n[outputs.o]\ntype = \"stdout\"\n[outputs.o.buffer]\ntype = \"memory\"\n",
            dir.path().join("data").display()
        ),
    );
    let mut child = common::spawn_relay(&conf, &[]);
    let port = common::wait_http_addr(dir.path(), &mut child).port();
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

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn pod_labels(m: &BTreeMap<String, Value>) -> &Value {
    &m["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
}

/// True when every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_drain_job_template() {
    let m = manifests();
    let listed: Vec<&str> = m["Kustomization"]["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for entry in std::fs::read_dir(repo().join("conf/kubernetes")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".yaml") || name == "kustomization.yaml" {
            continue;
        }
        assert_eq!(
            listed.contains(&name.as_str()),
            name != "drain-job.yaml",
            "{name}: every manifest is applied by `kubectl apply -k`, except the drain Job \
             template, which is applied by hand per claim"
        );
    }
}

#[test]
fn pods_get_no_service_link_variables() {
    // A Service named `relay` would give every pod RELAY_SERVICE_HOST, RELAY_PORT...
    let m = manifests();
    for kind in ["StatefulSet", "Job"] {
        assert_eq!(
            m[kind]["spec"]["template"]["spec"]["enableServiceLinks"].as_bool(),
            Some(false),
            "{kind}"
        );
    }
    let retention = &m["StatefulSet"]["spec"]["persistentVolumeClaimRetentionPolicy"];
    assert_eq!(
        retention["whenScaled"].as_str(),
        Some("Retain"),
        "a scale-down keeps the removed pod's volume (and its backlog) for the drain Job"
    );
}

#[test]
fn the_drain_job_mounts_a_claim_of_the_statefulset_with_the_relays_settings() {
    let m = manifests();
    let sts = &m["StatefulSet"]["spec"];
    let job = &m["Job"]["spec"]["template"];
    let (sts_pod, job_pod) = (&sts["template"]["spec"], &job["spec"]);

    // <claim template>-<StatefulSet>-<ordinal>: the claim a removed pod leaves behind.
    let claim_template = sts["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let sts_name = m["StatefulSet"]["metadata"]["name"].as_str().unwrap();
    let data_volume = job_pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["persistentVolumeClaim"].is_mapping())
        .expect("the Job mounts a claim");
    let claim = data_volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    let ordinal = claim
        .strip_prefix(&format!("{claim_template}-{sts_name}-"))
        .unwrap_or_else(|| panic!("{claim} is not a claim of the StatefulSet"));
    assert!(ordinal.parse::<u32>().is_ok(), "{claim}");

    let (sc, jc) = (&sts_pod["containers"][0], &job_pod["containers"][0]);
    assert_eq!(jc["image"], sc["image"]);
    assert_eq!(
        jc["env"], sc["env"],
        "the same outputs, stream and buffer settings"
    );
    assert_eq!(
        job_pod["serviceAccountName"], sts_pod["serviceAccountName"],
        "IRSA"
    );
    assert_eq!(job_pod["securityContext"], sts_pod["securityContext"]);
    let mount = |c: &Value, name: &str| {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .map(|v| v["mountPath"].clone())
            .unwrap_or_else(|| panic!("no mount {name}"))
    };
    let data_name = data_volume["name"].as_str().unwrap();
    assert_eq!(mount(jc, data_name), mount(sc, claim_template), "data_dir");
    assert_eq!(mount(jc, "config"), mount(sc, "config"));
    assert_eq!(
        job_pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .map(|v| &v["configMap"]["name"]),
        Some(&m["ConfigMap"]["metadata"]["name"])
    );
    let args: Vec<&str> = jc["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "drain");
    assert!(args.contains(&"--timeout"), "{args:?}");
    let sts_config = sc["args"].as_sequence().and_then(|a| a.last());
    assert_eq!(
        args.last().copied(),
        sts_config.and_then(Value::as_str),
        "the same config file"
    );
    assert_ne!(job_pod["restartPolicy"].as_str(), Some("Always"));

    // The Job's command line and environment, run by the real binary on an empty volume.
    let data = tempfile::tempdir().unwrap();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "header.payload.signature").unwrap();
    let mut cmd = Command::new(common::relay_bin());
    cmd.args(&args[..args.len() - 1])
        .arg(repo().join("conf/relay.toml"))
        .env_remove("RELAY_CONFIG")
        .env("RELAY_DATA_DIR", data.path())
        .env(
            "AWS_ROLE_ARN",
            "arn:aws:iam::111122223333:role/firehose-relay",
        )
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", token.path());
    for e in jc["env"].as_sequence().unwrap() {
        cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("nothing to drain"),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The drain pod takes no clients: the Service and the PodDisruptionBudget must not pick it.
    let labels = &job["metadata"]["labels"];
    assert!(!selects(&m["Service"]["spec"]["selector"], labels));
    assert!(!selects(
        &m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        labels
    ));
}

#[test]
fn the_prometheus_rule_carries_exactly_conf_monitoring_alerts_yaml() {
    let rule = yaml_file(&repo().join("conf/kubernetes/monitoring/prometheusrule.yaml"));
    let alerts = yaml_file(&repo().join("conf/monitoring/alerts.yaml"));
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "copy the groups of conf/monitoring/alerts.yaml into prometheusrule.yaml"
    );
}

#[test]
fn the_monitoring_component_scrapes_the_relay_pods() {
    let m = manifests();
    let dir = repo().join("conf/kubernetes/monitoring");
    let component = yaml_file(&dir.join("kustomization.yaml"));
    assert_eq!(component["kind"].as_str(), Some("Component"));
    let mut kinds = Vec::new();
    for r in component["resources"].as_sequence().unwrap() {
        let doc = yaml_file(&dir.join(r.as_str().unwrap()));
        assert_eq!(
            doc["metadata"]["namespace"],
            m["StatefulSet"]["metadata"]["namespace"]
        );
        kinds.push(doc["kind"].as_str().unwrap().to_owned());
        if doc["kind"] == "PodMonitor" {
            assert!(selects(
                &doc["spec"]["selector"]["matchLabels"],
                pod_labels(&m)
            ));
            let endpoint = &doc["spec"]["podMetricsEndpoints"][0];
            let port = endpoint["port"].as_str().unwrap();
            port_number(container(&m), port);
            assert_eq!(
                endpoint["path"].as_str(),
                m["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
                    ["prometheus.io/path"]
                    .as_str()
            );
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["PodMonitor", "PrometheusRule"]);
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn kustomize_builds_the_manifests_with_and_without_the_monitoring_component() {
    // kustomize is part of kubectl; Debian's kubernetes-client (1.20) predates components.
    let kubectl_ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !kubectl_ok {
        eprintln!(
            "SKIPPED kustomize build: kubectl (with kustomize >= 3.7) is not installed and no \
             package of this machine's registries provides one; the manifests are still checked \
             statically by the other tests"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("kubernetes");
    copy_tree(&repo().join("conf/kubernetes"), &base);
    let build = |what: &str| {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&base)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize ({what}) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_yaml::Deserializer::from_slice(&out.stdout)
            .map(|d| {
                let v = Value::deserialize(d).unwrap();
                v["kind"].as_str().unwrap().to_owned()
            })
            .collect::<Vec<_>>()
    };
    let kinds = build("base");
    assert!(kinds.contains(&"StatefulSet".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"Job".to_owned()), "{kinds:?}");
    // What the README says to do: uncomment the component.
    let k = base.join("kustomization.yaml");
    let text = std::fs::read_to_string(&k).unwrap().replace(
        "# components:\n#   - monitoring",
        "components:\n  - monitoring",
    );
    std::fs::write(&k, text).unwrap();
    let kinds = build("with the monitoring component");
    for kind in ["StatefulSet", "PodMonitor", "PrometheusRule"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} in {kinds:?}");
    }
}
