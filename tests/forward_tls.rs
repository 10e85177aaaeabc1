//! TLS on the forward listener, with certificates generated here by `rcgen`: plain TLS, and
//! mutual TLS where a client without a certificate signed by `client_ca_path` is refused.

mod common;
mod forward_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use forward_support::{Mp, Relay};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued { cert, key }
    }
}

/// Writes the server's files into `dir` and returns the TOML for `[sources.fwd.tls]`.
fn server_files(dir: &Path, pki: &Pki, mutual: bool) -> String {
    let server = pki.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("server.pem"), server.cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server.key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), pki.ca.pem()).unwrap();
    let d = dir.display();
    let mut toml = format!(
        "[sources.fwd.tls]\ncert_path = \"{d}/server.pem\"\nkey_path = \"{d}/server.key\"\n"
    );
    if mutual {
        toml.push_str(&format!("client_ca_path = \"{d}/ca.pem\"\n"));
    }
    toml
}

fn client_config(pki: &Pki, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Sends one acked message over TLS; returns the reply bytes (empty if refused).
fn send_over_tls(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    chunk: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        &Mp::new()
            .arr(4)
            .s("tls")
            .int(1)
            .rec(chunk)
            .map(1)
            .s("chunk")
            .s(chunk)
            .0,
    )?;
    let mut buf = vec![0u8; 256];
    let n = tls.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// Starts a relay whose TLS files live in a directory that outlives the relay's config.
fn start(pki: &Pki, mutual: bool) -> (Relay, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let relay = Relay::start(&server_files(files.path(), pki, mutual));
    (relay, files)
}

#[test]
fn events_arrive_over_tls_and_are_acknowledged() {
    let pki = Pki::new();
    let (relay, _files) = start(&pki, false);
    let reply = send_over_tls(relay.port, client_config(&pki, None), "over-tls").unwrap();
    assert_eq!(reply, Mp::new().map(1).s("ack").s("over-tls").0);
    assert_eq!(relay.wait_records(1)[0]["msg"], "over-tls");
    // A plaintext client is refused, and TLS keeps working afterwards.
    let mut plain = relay.connect();
    let _ = plain.write_all(&Mp::new().arr(3).s("t").int(1).rec("plain").0);
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    relay.wait_log("TLS handshake failed");
    let reply = send_over_tls(relay.port, client_config(&pki, None), "again").unwrap();
    assert_eq!(reply, Mp::new().map(1).s("ack").s("again").0);
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let (relay, _files) = start(&pki, true);
    let anonymous = send_over_tls(relay.port, client_config(&pki, None), "anonymous");
    assert!(
        !matches!(&anonymous, Ok(r) if !r.is_empty()),
        "client without a certificate got {anonymous:?}"
    );
    // A client certificate from another CA is refused too (the client trusts the server).
    let other = Pki::new();
    let stranger = other.issue("client", ExtendedKeyUsagePurpose::ClientAuth);
    let mut config = (*client_config(&pki, None)).clone();
    config.client_auth_cert_resolver = client_config(&other, Some(&stranger))
        .client_auth_cert_resolver
        .clone();
    let refused = send_over_tls(relay.port, Arc::new(config), "stranger");
    assert!(
        !matches!(&refused, Ok(r) if !r.is_empty()),
        "client with a certificate from another CA got {refused:?}"
    );
    let client = pki.issue("client", ExtendedKeyUsagePurpose::ClientAuth);
    let reply = send_over_tls(relay.port, client_config(&pki, Some(&client)), "mtls").unwrap();
    assert_eq!(reply, Mp::new().map(1).s("ack").s("mtls").0);
    let recs = relay.wait_records(1);
    assert!(recs.iter().all(|r| r["msg"] == "mtls"));
}
