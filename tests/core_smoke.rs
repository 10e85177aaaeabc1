mod common;

#[test]
fn check_accepts_the_quickstart_config() {
    let out = std::process::Command::new(common::relay_bin())
        .args(["check", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/quickstart.toml"))
        .env_remove("RELAY_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
