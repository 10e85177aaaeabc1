//! A fake STS and a fake Firehose that trusts the keys it issues: what a relay with IRSA
//! (web-identity) credentials talks to, and the TOML that points an output at both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fake_firehose::FakeFirehose;
use super::fake_sts::FakeSts;

/// The two fakes and the projected token file.
pub struct WebIdentityAws {
    pub sts: Arc<FakeSts>,
    pub fh: FakeFirehose,
    token: PathBuf,
}

impl WebIdentityAws {
    /// Credentials valid for an hour; Firehose has delivery stream `s`; the token is written
    /// into `dir`.
    pub fn start(dir: &Path) -> WebIdentityAws {
        let sts = Arc::new(FakeSts::start(Duration::from_secs(3600)));
        let fh = FakeFirehose::http();
        fh.create_stream("s").trust_keys_from(sts.key_lookup());
        let token = dir.join("token");
        std::fs::write(&token, "header.payload.signature").expect("write the token file");
        WebIdentityAws { sts, fh, token }
    }

    /// Stream, region and endpoint keys, then the `[outputs.NAME.credentials]` section.
    pub fn output_toml(&self, name: &str) -> String {
        format!(
            r#"delivery_stream = "s"
region = "eu-west-1"
endpoint_url = "{fh}"
[outputs.{name}.credentials]
type = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/relay"
web_identity_token_file = {token:?}
sts_endpoint_url = "{sts}"
"#,
            fh = self.fh.url,
            sts = self.sts.url,
            token = self.token.display().to_string(),
        )
    }
}
