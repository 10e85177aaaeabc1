//! Credentials of fluent-plugin-kinesis outputs: static keys, `<assume_role_credentials>`,
//! `<web_identity_credentials>`, `<instance_profile_credentials>`, or nothing (the default
//! chain); shared by `kinesis_firehose` ([`super::output`]) and the Kinesis outputs.

use super::params::Params;
use super::render::Section;
use super::{Cx, Why};
use crate::fluentd::syntax::Directive;

impl Cx {
    /// Static keys, `<assume_role_credentials>`, `<web_identity_credentials>`,
    /// `<instance_profile_credentials>`; nothing means the default chain (the relay also reads
    /// IRSA's variables first, as the SDK's chain does).
    pub(super) fn credentials(&mut self, d: &Directive, ps: &mut Params<'_>, sec: &mut Section) {
        let key = ps.take("aws_key_id");
        let secret = ps.take("aws_sec_key");
        let token = ps.take("aws_ses_token");
        let mut creds: Option<Section> = None;
        match (key, secret) {
            (Some(k), Some(s)) => {
                let mut c = Section::new(
                    &k.pos,
                    "aws_key_id/aws_sec_key",
                    format!("{}.credentials", sec.path),
                );
                c.string("type", "static");
                let pairs = [(k, "access_key_id"), (s, "secret_access_key")];
                for (p, to) in pairs.into_iter().chain(token.map(|t| (t, "session_token"))) {
                    if let Some(v) = self.string(p) {
                        c.string(to, v);
                    }
                }
                creds = Some(c);
            }
            (Some(p), None) | (None, Some(p)) => self.finding(
                &p.pos,
                &p.key,
                Why::InvalidValue,
                "aws_key_id and aws_sec_key go together",
                "give both",
            ),
            (None, None) => {}
        }
        for c in &d.children {
            let section = match c.name.as_str() {
                "web_identity_credentials" => self.web_identity(c, sec),
                "assume_role_credentials" => self.assume_role(c, sec),
                "instance_profile_credentials" => {
                    let mut s =
                        Section::new(&c.pos, c.describe(), format!("{}.credentials", sec.path));
                    s.string("type", "default");
                    if !c.params.is_empty() {
                        self.warn(&c.pos, "<instance_profile_credentials> parameters are not converted: the default chain reads the instance profile with the SDK's settings");
                    }
                    s
                }
                "shared_credentials" | "process_credentials" => {
                    self.finding(&c.pos, &c.describe(), Why::UnsupportedPlugin, "the relay reads credentials files and processes only through the SDK default chain", "remove the section and set AWS_PROFILE / AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE (credential_process) for the default chain");
                    continue;
                }
                "buffer" | "format" | "inject" => continue,
                "secondary" => {
                    self.finding(&c.pos, "<secondary>", Why::UnsupportedPlugin, "the relay has no secondary output; chunks that exhaust their retries are dead-lettered and can be replayed with `firehose-relay dead-letter replay`", "remove the section");
                    continue;
                }
                _ => {
                    self.finding(
                        &c.pos,
                        &c.describe(),
                        Why::UnsupportedParameter,
                        "kinesis_firehose has no such section in the relay",
                        "remove it",
                    );
                    continue;
                }
            };
            if creds.is_some() {
                self.finding(
                    &c.pos,
                    &c.describe(),
                    Why::InvalidValue,
                    "more than one source of credentials",
                    "keep one",
                );
            } else {
                creds = Some(section);
            }
        }
        match creds {
            Some(c) => sec.children.push(c),
            None => self.warn(&d.pos, "no credentials given: the relay uses AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (IRSA) when both are set, else the SDK default chain, like the plugin"),
        }
    }

    fn sts_common(&mut self, ps: &mut Params<'_>, s: &mut Section, keys: &[&'static str]) {
        for key in keys {
            self.copy_string(ps, key, s, key);
        }
        if let Some(p) = ps.take("duration_seconds") {
            if let Some(n) = self.integer(p) {
                if (900..=43_200).contains(&n) {
                    s.set("duration_seconds", n);
                } else {
                    self.finding(
                        &p.pos,
                        "duration_seconds",
                        Why::InvalidValue,
                        "STS grants 900 to 43200 seconds",
                        "use a value in that range",
                    );
                }
            }
        }
        self.copy_string(ps, "sts_endpoint_url", s, "sts_endpoint_url");
        self.copy_string(ps, "sts_region", s, "sts_region");
        if let Some(p) = ps.take("sts_http_proxy") {
            self.finding(
                &p.pos,
                "sts_http_proxy",
                Why::UnsupportedParameter,
                "the relay sends STS calls through the output's proxy (http_proxy) or HTTPS_PROXY",
                "remove it and set http_proxy on the output or HTTPS_PROXY",
            );
        }
    }

    fn web_identity(&mut self, c: &Directive, sec: &Section) -> Section {
        let mut ps = Params::new(c);
        let mut s = Section::new(&c.pos, c.describe(), format!("{}.credentials", sec.path));
        s.string("type", "web_identity");
        self.sts_common(
            &mut ps,
            &mut s,
            &[
                "role_arn",
                "role_session_name",
                "web_identity_token_file",
                "policy",
            ],
        );
        for key in ["role_arn", "web_identity_token_file"] {
            if !s.has(key) {
                self.warn(
                    &c.pos,
                    format!(
                        "<web_identity_credentials> without {key}: the relay reads it from ${}",
                        if key == "role_arn" {
                            "AWS_ROLE_ARN"
                        } else {
                            "AWS_WEB_IDENTITY_TOKEN_FILE"
                        }
                    ),
                );
            }
        }
        self.leftovers(
            &ps,
            "<web_identity_credentials> has no such parameter in the relay",
        );
        s
    }

    fn assume_role(&mut self, c: &Directive, sec: &Section) -> Section {
        let mut ps = Params::new(c);
        let mut s = Section::new(&c.pos, c.describe(), format!("{}.credentials", sec.path));
        s.string("type", "assume_role");
        self.sts_common(
            &mut ps,
            &mut s,
            &["role_arn", "role_session_name", "external_id", "policy"],
        );
        if !s.has("role_arn") {
            self.finding(
                &c.pos,
                "<assume_role_credentials> role_arn",
                Why::InvalidValue,
                "missing",
                "add role_arn",
            );
        }
        self.leftovers(
            &ps,
            "<assume_role_credentials> has no such parameter in the relay",
        );
        s
    }
}
