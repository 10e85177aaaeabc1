//! `<source>`: `forward` and `sample` (`dummy`).

use super::params::Params;
use super::render::Section;
use super::{Cx, Why};
use crate::fluentd::syntax::Directive;
use crate::primitives::ByteSize;

impl Cx {
    pub(super) fn source(&mut self, d: &Directive) {
        let mut ps = Params::new(d);
        let ty = ps.plugin_type();
        let kind = match ty.as_deref() {
            Some("forward") => "forward",
            Some("sample" | "dummy") => "sample",
            other => {
                self.unsupported_plugin(d, other, "source", "forward, sample (dummy)");
                return;
            }
        };
        let name = self.name(d, kind);
        let mut sec = Section::new(&d.pos, d.describe(), format!("sources.{name}"));
        sec.string("type", kind);
        self.copy_string(&mut ps, "@label", &mut sec, "label");
        if let Some(p) = ps.take("@log_level") {
            self.warn(
                &p.pos,
                "@log_level is not converted: the relay's log level is set for the whole process with RUST_LOG",
            );
        }
        if kind == "forward" {
            self.forward(d, &mut ps, &mut sec);
        } else {
            self.sample(d, &mut ps, &mut sec);
        }
        self.sections.push(sec);
    }

    fn sample(&mut self, d: &Directive, ps: &mut Params<'_>, sec: &mut Section) {
        match ps.take("tag") {
            Some(p) => {
                if let Some(t) = self.string(p) {
                    sec.string("tag", t);
                }
            }
            None => self.finding(
                &d.pos,
                "tag",
                Why::InvalidValue,
                "the sample source needs a tag (Fluentd refuses to start without one)",
                "add `tag NAME`",
            ),
        }
        if let Some(p) = ps.take("rate") {
            if let Some(n) = self.count::<u32>(p) {
                sec.set("rate", f64::from(n));
            }
        }
        if let Some(p) = ps.take("size") {
            if let Some(n) = self.count::<u32>(p) {
                sec.set("size", i64::from(n));
            }
        }
        if let Some(p) = ps.take("auto_increment_key") {
            if let Some(k) = self.string(p) {
                sec.string("auto_increment_key", k);
            }
        }
        if let Some(p) = ps.take_any(&["sample", "dummy"]) {
            self.sample_record(p, sec);
        }
        if let Some(p) = ps.take("suspend") {
            if self.boolean(p) == Some(true) {
                self.finding(
                    &p.pos,
                    "suspend",
                    Why::UnsupportedParameter,
                    "the relay's sample source has no saved state to resume from",
                    "remove it",
                );
            }
        }
        for c in &d.children {
            self.finding(
                &c.pos,
                &c.describe(),
                Why::UnsupportedParameter,
                "the sample source has no subsections",
                "remove it",
            );
        }
        self.leftovers(ps, "the sample source has no such parameter");
    }

    /// `sample {"k":"v"}` or `[{"k":"v"}]` (one record; Fluentd rotates through several).
    fn sample_record(&mut self, p: &crate::fluentd::syntax::Param, sec: &mut Section) {
        let Some(text) = self.typed(p, |t| Ok(t.to_owned())) else {
            return;
        };
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&text);
        let record = match parsed {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(serde_json::Value::Array(items)) if items.len() == 1 && items[0].is_object() => {
                match items.into_iter().next() {
                    Some(serde_json::Value::Object(m)) => m,
                    _ => return,
                }
            }
            Ok(serde_json::Value::Array(_)) => {
                self.finding(
                    &p.pos,
                    &p.key,
                    Why::DifferentSemantics,
                    "Fluentd rotates through several sample records; the relay's sample source emits one",
                    "keep one record, or use one sample source per record",
                );
                return;
            }
            _ => {
                self.finding(
                    &p.pos,
                    &p.key,
                    Why::InvalidValue,
                    "not a JSON object",
                    "write the record as a JSON object",
                );
                return;
            }
        };
        match toml::Value::try_from(serde_json::Value::Object(record)) {
            Ok(v) => sec.set("record", v),
            Err(e) => self.finding(
                &p.pos,
                &p.key,
                Why::InvalidValue,
                &format!("the record cannot be written in TOML ({e}; TOML has no null)"),
                "leave out null values",
            ),
        }
    }

    fn forward(&mut self, d: &Directive, ps: &mut Params<'_>, sec: &mut Section) {
        // `port "#{ENV['PORT'] || 24224}"` stays a reference, checked once expanded.
        let port = match ps.take("port") {
            Some(p) if p.value.literal().is_none() => self.string(p),
            Some(p) => self.count::<u16>(p).map(|n| n.to_string()),
            None => Some("24224".to_owned()),
        };
        let bind = match ps.take("bind") {
            Some(p) => self.string(p),
            None => Some("0.0.0.0".to_owned()),
        };
        if let (Some(port), Some(bind)) = (port, bind) {
            let host = if bind.contains(':') && !bind.starts_with('[') {
                format!("[{bind}]")
            } else {
                bind
            };
            sec.string("listen", format!("{host}:{port}"));
        }
        // in_forward also answers UDP heartbeats on its port.
        sec.set("heartbeat", true);
        if let Some(p) = ps.take("chunk_size_limit") {
            if let Some(n) = self.size(p) {
                sec.string("message_length_limit", ByteSize(n).to_string());
            }
        }
        if let Some(p) = ps.take("decompression_size_limit") {
            if let Some(n) = self.size(p) {
                sec.string("decompression_size_limit", ByteSize(n).to_string());
            }
        }
        for key in ["skip_invalid_event", "deny_keepalive"] {
            if let Some(p) = ps.take(key) {
                if let Some(b) = self.boolean(p) {
                    sec.set(key, b);
                }
            }
        }
        for key in [
            "add_tag_prefix",
            "source_address_key",
            "source_hostname_key",
        ] {
            if let Some(p) = ps.take(key) {
                if let Some(s) = self.string(p) {
                    sec.string(key, s);
                }
            }
        }
        if let Some(p) = ps.take("resolve_hostname") {
            if self.boolean(p) == Some(true) {
                self.warn(
                    &p.pos,
                    "resolve_hostname: the relay does no reverse DNS lookup; source_hostname_key holds the client's address",
                );
            }
        }
        self.ignored(
            ps.take("linger_timeout"),
            "the relay closes connections without lingering",
        );
        self.ignored(
            ps.take("chunk_size_warn_limit"),
            "the relay has no warning threshold, only the limit",
        );
        self.ignored(
            ps.take("send_keepalive_packet"),
            "the relay does not send TCP keepalive probes",
        );
        for c in self.without_repeats(d, &["security", "transport"]) {
            match c.name.as_str() {
                "security" => self.security(c, sec),
                "transport" => self.transport(c, sec),
                _ => self.finding(
                    &c.pos,
                    &c.describe(),
                    Why::UnsupportedParameter,
                    "the forward source has no such section",
                    "remove it",
                ),
            }
        }
        self.leftovers(ps, "the forward source has no such parameter");
    }

    fn security(&mut self, d: &Directive, src: &mut Section) {
        let mut ps = Params::new(d);
        let mut sec = Section::new(&d.pos, d.describe(), format!("{}.security", src.path));
        match ps.take("shared_key") {
            Some(p) => {
                if let Some(k) = self.string(p) {
                    sec.string("shared_key", k);
                }
            }
            None => {
                self.finding(
                    &d.pos,
                    "<security> shared_key",
                    Why::InvalidValue,
                    "<security> needs a shared_key",
                    "add `shared_key`",
                );
                return;
            }
        }
        if let Some(p) = ps.take("self_hostname") {
            if let Some(h) = self.string(p) {
                sec.string("self_hostname", h);
            }
        }
        let user_auth = match ps.take("user_auth") {
            Some(p) => self.boolean(p).unwrap_or(false),
            None => false,
        };
        let anonymous = match ps.take("allow_anonymous_source") {
            Some(p) => self.boolean(p).unwrap_or(true),
            None => true,
        };
        let mut networks = Vec::new();
        for c in &d.children {
            match c.name.as_str() {
                "user" if user_auth => self.user(c, &mut sec),
                "user" => self.warn(
                    &c.pos,
                    "<user> is not converted: user_auth is not enabled, so Fluentd does not check it either",
                ),
                "client" => self.client(c, &mut networks),
                _ => self.finding(
                    &c.pos,
                    &c.describe(),
                    Why::UnsupportedParameter,
                    "<security> has no such section in the relay",
                    "remove it",
                ),
            }
        }
        if user_auth && !sec.children.iter().any(|c| c.path.ends_with(".users")) {
            self.finding(
                &d.pos,
                "user_auth",
                Why::InvalidValue,
                "user_auth is on but there is no <user>",
                "add <user> sections or remove user_auth",
            );
        }
        if !anonymous {
            if networks.is_empty() {
                self.finding(
                    &d.pos,
                    "allow_anonymous_source",
                    Why::DifferentSemantics,
                    "with allow_anonymous_source false Fluentd accepts only the <client> hosts, and none is given",
                    "add <client> sections with a network",
                );
            } else {
                src.set(
                    "allow",
                    toml::Value::Array(networks.into_iter().map(toml::Value::String).collect()),
                );
            }
        } else if !networks.is_empty() {
            self.warn(
                &d.pos,
                "<client> sections are not converted: allow_anonymous_source is true (the default), so Fluentd accepts other clients too",
            );
        }
        self.leftovers(&ps, "<security> has no such parameter in the relay");
        src.children.push(sec);
    }

    fn user(&mut self, d: &Directive, sec: &mut Section) {
        let mut ps = Params::new(d);
        let mut user = Section::array_element(&d.pos, d.describe(), format!("{}.users", sec.path));
        for key in ["username", "password"] {
            match ps.take(key) {
                Some(p) => {
                    if let Some(v) = self.string(p) {
                        user.string(key, v);
                    }
                }
                None => self.finding(
                    &d.pos,
                    &format!("<user> {key}"),
                    Why::InvalidValue,
                    "missing",
                    &format!("add `{key}`"),
                ),
            }
        }
        self.leftovers(&ps, "<user> has only username and password");
        sec.children.push(user);
    }

    /// `<client>`: a network or address the relay's `allow` takes.
    fn client(&mut self, d: &Directive, networks: &mut Vec<String>) {
        let mut ps = Params::new(d);
        match (ps.take("network"), ps.take("host")) {
            (Some(p), _) => {
                if let Some(n) = self.string(p) {
                    networks.push(n);
                }
            }
            (None, Some(p)) => {
                let host = p.value.literal().unwrap_or_default();
                if host.parse::<std::net::IpAddr>().is_ok() {
                    networks.push(host);
                } else {
                    self.finding(
                        &p.pos,
                        "<client> host",
                        Why::DifferentSemantics,
                        "the relay matches clients by address, it does not resolve host names",
                        "write the host's address or network with `network`",
                    );
                }
            }
            (None, None) => self.finding(
                &d.pos,
                "<client>",
                Why::InvalidValue,
                "neither host nor network",
                "add `network`",
            ),
        }
        for key in ["shared_key", "users"] {
            if let Some(p) = ps.take(key) {
                self.finding(
                    &p.pos,
                    &format!("<client> {key}"),
                    Why::UnsupportedParameter,
                    "the relay has one shared key and one user list for all clients",
                    "remove it and use the <security> shared_key and users",
                );
            }
        }
        self.leftovers(&ps, "<client> has no such parameter in the relay");
    }

    fn transport(&mut self, d: &Directive, src: &mut Section) {
        let mut ps = Params::new(d);
        match d.arg.trim() {
            "tcp" | "" => {
                self.leftovers(&ps, "<transport tcp> has no parameters in the relay");
                return;
            }
            "tls" => {}
            other => {
                self.finding(
                    &d.pos,
                    &d.describe(),
                    Why::UnsupportedParameter,
                    &format!("the relay has no `{other}` transport"),
                    "use tcp or tls",
                );
                return;
            }
        }
        let mut tls = Section::new(&d.pos, d.describe(), format!("{}.tls", src.path));
        for (from, to) in [("cert_path", "cert_path"), ("private_key_path", "key_path")] {
            match ps.take(from) {
                Some(p) => {
                    if let Some(v) = self.string(p) {
                        tls.string(to, v);
                    }
                }
                None => self.finding(
                    &d.pos,
                    &format!("<transport tls> {from}"),
                    Why::UnsupportedParameter,
                    "the relay needs a certificate and key in files (it does not generate them)",
                    &format!("add `{from}`"),
                ),
            }
        }
        let client_auth = match ps.take("client_cert_auth") {
            Some(p) => self.boolean(p).unwrap_or(false),
            None => false,
        };
        let ca = ps.take("ca_path");
        match (client_auth, ca) {
            (true, Some(p)) => {
                if let Some(v) = self.string(p) {
                    tls.string("client_ca_path", v);
                }
            }
            (true, None) => self.finding(
                &d.pos,
                "client_cert_auth",
                Why::DifferentSemantics,
                "the relay checks client certificates against a CA bundle file only (not the system store)",
                "add `ca_path` with the CA that signs the clients' certificates",
            ),
            (false, Some(p)) => self.warn(
                &p.pos,
                "ca_path is not converted: client_cert_auth is off, so client certificates are not checked",
            ),
            (false, None) => {}
        }
        for key in ["version", "min_version", "max_version", "ciphers"] {
            self.ignored(
                ps.take(key),
                "the relay offers TLS 1.2 and 1.3 with rustls' safe cipher suites",
            );
        }
        if let Some(p) = ps.take("insecure") {
            if self.boolean(p) == Some(true) {
                self.finding(
                    &p.pos,
                    "insecure",
                    Why::UnsupportedParameter,
                    "the relay does not offer insecure TLS versions or ciphers",
                    "remove it",
                );
            }
        }
        self.leftovers(
            &ps,
            "the relay's TLS takes cert_path, private_key_path, client_cert_auth and ca_path only",
        );
        src.children.push(tls);
    }
}
