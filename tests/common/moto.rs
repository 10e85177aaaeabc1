//! moto (`moto[server]`, a real third-party AWS emulator) for end-to-end runs: Firehose into
//! S3, and STS `AssumeRoleWithWebIdentity`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `moto_server` on a free 127.0.0.1 port; killed on drop.
pub struct Moto {
    pub url: String,
    child: Child,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/moto_firehose.py")
}

impl Moto {
    /// Starts moto from the test venv (see [`super::python`]); panics with a clear message if
    /// moto cannot be installed or started.
    pub fn start() -> Moto {
        let py = super::python();
        let server = py.parent().expect("venv bin dir").join("moto_server");
        assert!(
            server.exists(),
            "moto_server not found at {} although the test requirements installed; is `moto[server]` in tests/python/requirements.txt?",
            server.display()
        );
        let port = super::free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        super::wait_listening(port, Duration::from_secs(30));
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// Creates `bucket` and a DirectPut stream `stream` delivering into it.
    pub fn create_stream(&self, bucket: &str, stream: &str) {
        let out = Command::new(super::python())
            .arg(script())
            .args(["setup", &self.url, bucket, stream])
            .output()
            .expect("run moto_firehose.py");
        assert!(
            out.status.success(),
            "moto setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// All bytes moto wrote into `bucket`.
    pub fn read_bucket(&self, bucket: &str) -> Vec<u8> {
        let out = Command::new(super::python())
            .arg(script())
            .args(["read", &self.url, bucket])
            .output()
            .expect("run moto_firehose.py");
        assert!(
            out.status.success(),
            "moto read failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
