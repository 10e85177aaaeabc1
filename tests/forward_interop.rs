//! Interop with clients nobody here wrote: Python `fluent-logger` and `msgpack` (the venv is
//! created by `common::python()` from `tests/python/requirements.txt`).

mod common;
mod forward_support;

use forward_support::{run_python, Relay};

fn msgs(relay: &Relay) -> Vec<String> {
    let mut m: Vec<String> = relay
        .records()
        .iter()
        .filter_map(|r| r["msg"].as_str().map(str::to_owned))
        .collect();
    m.sort();
    m
}

#[test]
fn fluent_logger_events_arrive_with_their_times() {
    let relay = Relay::start("");
    run_python(&["logger", &relay.port.to_string()]);
    let recs = relay.wait_records(3);
    let first = recs
        .iter()
        .find(|r| r["msg"] == "logger-1")
        .expect("logger-1");
    assert_eq!(
        first["nested"]["list"],
        serde_json::json!([1, 2.5, null, true])
    );
    assert_eq!(first["uni"], "héllo ✓");
    let out = relay.stdout();
    assert!(
        out.contains("2020-09-13 12:26:40.123456"),
        "EventTime kept:\n{out}"
    );
    assert!(
        out.contains("2020-09-13 12:26:41.000000000 +0000 py.int: {\"msg\":\"logger-3\"}"),
        "{out}"
    );
}

#[test]
fn every_mode_is_acknowledged_after_it_is_stored() {
    let relay = Relay::start("");
    run_python(&["ack", &relay.port.to_string()]);
    relay.wait_records(7);
    assert_eq!(
        msgs(&relay),
        [
            "ack-forward-1",
            "ack-forward-2",
            "ack-gzip-1",
            "ack-gzip-2",
            "ack-message",
            "ack-packed-1",
            "ack-packed-2"
        ]
    );
    assert!(relay
        .stdout()
        .contains("2020-09-13 12:26:40.000000005 +0000 py.ack: {\"msg\":\"ack-gzip-2\"}"));
}

#[test]
fn python_handshake_with_the_right_key_then_wrong_key() {
    let relay = Relay::start(
        "[sources.fwd.security]\nshared_key = \"s3cret\"\nself_hostname = \"relay-test\"\n",
    );
    let port = relay.port.to_string();
    run_python(&["handshake", &port, "s3cret", "ok"]);
    relay.wait_records(1);
    run_python(&["handshake", &port, "wrong", "fail"]);
    relay.wait_log("shared_key_mismatch");
    assert_eq!(msgs(&relay), ["secure"]);
}

#[test]
fn python_handshake_with_username_and_password() {
    let relay = Relay::start(
        "[sources.fwd.security]\nshared_key = \"s3cret\"\nself_hostname = \"relay-test\"\n\
         [[sources.fwd.security.users]]\nusername = \"alice\"\npassword = \"pw-alice\"\n",
    );
    let port = relay.port.to_string();
    run_python(&["handshake", &port, "s3cret", "ok", "alice", "pw-alice"]);
    relay.wait_records(1);
    run_python(&["handshake", &port, "s3cret", "fail", "alice", "wrong"]);
    relay.wait_log("user_auth_failed");
    run_python(&["handshake", &port, "s3cret", "fail"]);
    assert_eq!(msgs(&relay), ["secure"]);
}
