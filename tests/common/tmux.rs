//! A real terminal for tests: a detached tmux session running one command, whose screen can be
//! captured and which can be sent keys. Killed when dropped.

use std::process::Command;

/// Panics with what to do when tmux is missing.
pub fn require() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test drives a real terminal and needs tmux: apt-get install -y tmux \
         (.ci/run installs it)"
    );
}

/// A detached tmux session (200x40) running a shell command.
pub struct Tmux(String);

impl Tmux {
    /// Starts `command` in a new session named after `what` and this process.
    pub fn start(what: &str, command: &str) -> Tmux {
        require();
        let name = format!("relay-{what}-{}", std::process::id());
        let started = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "200", "-y", "40"])
            .arg(command)
            .env_remove("RELAY_CONFIG")
            .status()
            .expect("run tmux");
        assert!(started.success(), "tmux new-session failed");
        Tmux(name)
    }

    /// The visible screen.
    pub fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names, e.g. `q`, `Enter`).
    pub fn send_keys(&self, keys: &str) {
        let sent = Command::new("tmux")
            .args(["send-keys", "-t", &self.0, keys])
            .status()
            .expect("run tmux");
        assert!(sent.success(), "tmux send-keys failed");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}
