//! The `shared_key` handshake of Forward Protocol v1 (Fluentd's `<security>`):
//!
//! 1. server → `["HELO", {"nonce": bin16, "auth": bin16, "keepalive": bool}]`
//! 2. client → `["PING", hostname, shared_key_salt, hex(sha512(salt‖hostname‖nonce‖key)),
//!    username, hex(sha512(auth‖username‖password))]`
//! 3. server → `["PONG", true, "", self_hostname, hex(sha512(salt‖self_hostname‖nonce‖key))]`
//!    or `["PONG", false, reason, "", ""]` and the connection is closed.
//!
//! Every string of the PING is taken as raw bytes (str or bin, UTF-8 or not): Fluent Bit sends
//! the salt as str and nonces with arbitrary bytes. This module is pure (no I/O) so it can be
//! tested against hand-computed digests.
//!
//! Comparisons take the same time whoever connects: digests are compared in constant time, and
//! the user check computes every configured user's digest and compares hashes of the names, so
//! the time does not tell whether a user name exists (a short-circuiting search would answer
//! faster for unknown names). Refusals are delayed and counted per address by
//! [`super::auth_guard`].

use rand::RngCore;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::msgpack::{Cursor, Item};
use super::SecurityConfig;

/// The server side of the handshake, from the config.
#[derive(Clone)]
pub struct Security {
    shared_key: Vec<u8>,
    self_hostname: String,
    users: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("self_hostname", &self.self_hostname)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// What the server sent in its HELO, needed to check the PING.
#[derive(Debug, Clone)]
pub struct Helo {
    /// Random nonce that the client's digest must cover.
    pub nonce: [u8; 16],
    /// Random salt for the password digest.
    pub auth_salt: [u8; 16],
}

/// A failed handshake: the PONG to send before closing, and why (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `["PONG", false, reason, "", ""]` bytes.
    pub pong: Vec<u8>,
    /// Metric label.
    pub reason: &'static str,
}

/// `hex(sha512(parts...))`, lowercase like Ruby's `hexdigest`.
pub fn hex_sha512(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Equality whose time does not depend on where the inputs differ (only on their lengths,
/// which are public here: hex digests are always 128 bytes).
fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// True when one of `users` has name `user` and password digest `pass`. Every user's password
/// digest is computed (by `password_digest(name, password)`) and every comparison made, with
/// the names compared as SHA-512 hashes so that their lengths do not show either.
fn user_matches(
    users: &[(Vec<u8>, Vec<u8>)],
    user: &[u8],
    pass: &[u8],
    mut password_digest: impl FnMut(&[u8], &[u8]) -> String,
) -> bool {
    let wanted = Sha512::digest(user);
    let mut found = subtle::Choice::from(0);
    for (name, password) in users {
        let name_ok = Sha512::digest(name).as_slice().ct_eq(wanted.as_slice());
        let pass_ok = password_digest(name, password).as_bytes().ct_eq(pass);
        found |= name_ok & pass_ok;
    }
    found.into()
}

/// The machine's host name (for `self_hostname`), without a lookup that could fail startup.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_str(out, s);
}

impl Security {
    /// From `[sources.NAME.security]`.
    pub fn new(config: &SecurityConfig) -> Self {
        Security {
            shared_key: config.shared_key.as_bytes().to_vec(),
            self_hostname: config
                .self_hostname
                .clone()
                .unwrap_or_else(default_hostname),
            users: config
                .users
                .iter()
                .map(|u| {
                    (
                        u.username.as_bytes().to_vec(),
                        u.password.as_bytes().to_vec(),
                    )
                })
                .collect(),
        }
    }

    /// A fresh HELO and its encoding.
    pub fn helo(&self, keepalive: bool) -> (Helo, Vec<u8>) {
        let mut rng = rand::thread_rng();
        let mut helo = Helo {
            nonce: [0; 16],
            auth_salt: [0; 16],
        };
        rng.fill_bytes(&mut helo.nonce);
        rng.fill_bytes(&mut helo.auth_salt);
        let mut out = Vec::with_capacity(64);
        let _ = rmp::encode::write_array_len(&mut out, 2);
        write_str(&mut out, "HELO");
        let _ = rmp::encode::write_map_len(&mut out, 3);
        write_str(&mut out, "nonce");
        let _ = rmp::encode::write_bin(&mut out, &helo.nonce);
        write_str(&mut out, "auth");
        let _ = rmp::encode::write_bin(&mut out, &helo.auth_salt);
        write_str(&mut out, "keepalive");
        let _ = rmp::encode::write_bool(&mut out, keepalive);
        (helo, out)
    }

    fn refuse(reason: &'static str, text: &str) -> Refusal {
        let mut pong = Vec::with_capacity(32 + text.len());
        let _ = rmp::encode::write_array_len(&mut pong, 5);
        write_str(&mut pong, "PONG");
        let _ = rmp::encode::write_bool(&mut pong, false);
        write_str(&mut pong, text);
        write_str(&mut pong, "");
        write_str(&mut pong, "");
        Refusal { pong, reason }
    }

    /// Checks a PING (one framed msgpack message); returns the PONG to send.
    pub fn answer_ping(&self, helo: &Helo, frame: &[u8]) -> Result<Vec<u8>, Refusal> {
        let invalid = || Self::refuse("invalid_ping", "invalid ping message");
        let mut cur = Cursor::new(frame);
        if !matches!(cur.next_item(), Ok(Item::Array(6))) {
            return Err(invalid());
        }
        let mut field = || match cur.next_item() {
            Ok(Item::Str(b) | Item::Bin(b)) => Some(b),
            _ => None,
        };
        let (Some(b"PING"), Some(hostname), Some(salt), Some(digest), Some(user), Some(pass)) =
            (field(), field(), field(), field(), field(), field())
        else {
            return Err(invalid());
        };
        let expected = hex_sha512(&[salt, hostname, &helo.nonce, &self.shared_key]);
        if !same(digest, expected.as_bytes()) {
            return Err(Self::refuse("shared_key_mismatch", "shared_key mismatch"));
        }
        if !self.users.is_empty() {
            let digest = |u: &[u8], p: &[u8]| hex_sha512(&[&helo.auth_salt, u, p]);
            if !user_matches(&self.users, user, pass, digest) {
                return Err(Self::refuse(
                    "user_auth_failed",
                    "username/password mismatch",
                ));
            }
        }
        let mut pong = Vec::with_capacity(200);
        let _ = rmp::encode::write_array_len(&mut pong, 5);
        write_str(&mut pong, "PONG");
        let _ = rmp::encode::write_bool(&mut pong, true);
        write_str(&mut pong, "");
        write_str(&mut pong, &self.self_hostname);
        let server_digest = hex_sha512(&[
            salt,
            self.self_hostname.as_bytes(),
            &helo.nonce,
            &self.shared_key,
        ]);
        write_str(&mut pong, &server_digest);
        Ok(pong)
    }
}

#[cfg(test)]
mod tests {
    use super::super::UserConfig;
    use super::*;

    /// `hex(sha512(a‖b‖…))` written from the protocol spec, independently of [`hex_sha512`]
    /// (one-shot digest of the concatenation, hex by hand); checked against FIPS 180-2's
    /// "abc" vector in [`spec_digest_matches_the_fips_vector`].
    fn spec_digest(parts: &[&[u8]]) -> String {
        let joined: Vec<u8> = parts.concat();
        Sha512::digest(&joined)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn spec_digest_matches_the_fips_vector() {
        assert_eq!(
            spec_digest(&[b"a", b"bc"]),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    fn security(users: Vec<UserConfig>) -> Security {
        Security::new(&SecurityConfig {
            shared_key: "secret".into(),
            self_hostname: Some("relay".into()),
            users,
        })
    }

    /// A PING with str fields (Fluent Bit style) or bin fields.
    fn ping(helo: &Helo, key: &str, user: &str, password: &str, as_bin: bool) -> Vec<u8> {
        let salt = b"\xffsalt-not-utf8";
        let digest = spec_digest(&[salt, b"client", &helo.nonce, key.as_bytes()]);
        let pass = if user.is_empty() {
            String::new()
        } else {
            spec_digest(&[&helo.auth_salt, user.as_bytes(), password.as_bytes()])
        };
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, 6).unwrap();
        for f in [
            b"PING" as &[u8],
            b"client",
            salt,
            digest.as_bytes(),
            user.as_bytes(),
            pass.as_bytes(),
        ] {
            if as_bin {
                rmp::encode::write_bin(&mut out, f).unwrap();
            } else {
                rmp::encode::write_str_len(&mut out, f.len() as u32).unwrap();
                out.extend_from_slice(f);
            }
        }
        out
    }

    fn pong_fields(pong: &[u8]) -> (bool, Vec<u8>, Vec<u8>) {
        let mut cur = Cursor::new(pong);
        assert_eq!(cur.next_item().unwrap(), Item::Array(5));
        assert_eq!(cur.next_item().unwrap(), Item::Str(b"PONG"));
        let Item::Bool(ok) = cur.next_item().unwrap() else {
            panic!()
        };
        let Item::Str(reason) = cur.next_item().unwrap() else {
            panic!()
        };
        let _host = cur.next_item().unwrap();
        let Item::Str(digest) = cur.next_item().unwrap() else {
            panic!()
        };
        (ok, reason.to_vec(), digest.to_vec())
    }

    #[test]
    fn helo_carries_nonce_auth_and_keepalive() {
        for keepalive in [true, false] {
            let (helo, bytes) = security(vec![]).helo(keepalive);
            let mut cur = Cursor::new(&bytes);
            assert_eq!(cur.next_item().unwrap(), Item::Array(2));
            assert_eq!(cur.next_item().unwrap(), Item::Str(b"HELO"));
            assert_eq!(cur.next_item().unwrap(), Item::Map(3));
            assert_eq!(cur.next_item().unwrap(), Item::Str(b"nonce"));
            assert_eq!(cur.next_item().unwrap(), Item::Bin(&helo.nonce));
            assert_eq!(cur.next_item().unwrap(), Item::Str(b"auth"));
            assert_eq!(cur.next_item().unwrap(), Item::Bin(&helo.auth_salt));
            assert_eq!(cur.next_item().unwrap(), Item::Str(b"keepalive"));
            assert_eq!(cur.next_item().unwrap(), Item::Bool(keepalive));
            assert!(cur.next_item().is_err(), "nothing after the map");
        }
        let (a, _) = security(vec![]).helo(true);
        let (b, _) = security(vec![]).helo(true);
        assert_ne!(a.nonce, b.nonce, "a fresh nonce per HELO");
        assert_ne!(
            a.nonce, a.auth_salt,
            "nonce and auth salt are drawn separately"
        );
    }

    #[test]
    fn right_key_gets_a_pong_with_the_server_digest() {
        let s = security(vec![]);
        let (helo, _) = s.helo(true);
        for as_bin in [false, true] {
            let pong = s
                .answer_ping(&helo, &ping(&helo, "secret", "", "", as_bin))
                .unwrap();
            let (ok, _, digest) = pong_fields(&pong);
            assert!(ok);
            let want = spec_digest(&[b"\xffsalt-not-utf8", b"relay", &helo.nonce, b"secret"]);
            assert_eq!(digest, want.as_bytes());
        }
    }

    #[test]
    fn wrong_key_is_refused_with_a_reason() {
        let s = security(vec![]);
        let (helo, _) = s.helo(true);
        let refusal = s
            .answer_ping(&helo, &ping(&helo, "wrong", "", "", false))
            .unwrap_err();
        assert_eq!(refusal.reason, "shared_key_mismatch");
        let (ok, reason, _) = pong_fields(&refusal.pong);
        assert!(!ok);
        assert_eq!(reason, b"shared_key mismatch");
    }

    #[test]
    fn users_must_log_in() {
        let s = security(vec![UserConfig {
            username: "alice".into(),
            password: "pw".into(),
        }]);
        let (helo, _) = s.helo(true);
        assert!(s
            .answer_ping(&helo, &ping(&helo, "secret", "alice", "pw", false))
            .is_ok());
        let bad = s.answer_ping(&helo, &ping(&helo, "secret", "alice", "nope", false));
        assert_eq!(bad.unwrap_err().reason, "user_auth_failed");
        let anonymous = s.answer_ping(&helo, &ping(&helo, "secret", "", "", false));
        assert_eq!(anonymous.unwrap_err().reason, "user_auth_failed");
    }

    #[test]
    fn the_user_check_does_the_same_work_for_unknown_names() {
        let users: Vec<(Vec<u8>, Vec<u8>)> = ["alice", "bob", "carol"]
            .iter()
            .map(|u| (u.as_bytes().to_vec(), b"pw".to_vec()))
            .collect();
        let digest = |u: &[u8], p: &[u8]| hex_sha512(&[b"salt", u, p]);
        let good = digest(b"bob", b"pw");
        for (user, pass, ok) in [
            (&b"bob"[..], good.as_bytes(), true),
            (b"bob", b"wrong", false),
            (b"mallory", good.as_bytes(), false),
            (b"", b"", false),
        ] {
            let mut computed = 0;
            let counted = |u: &[u8], p: &[u8]| {
                computed += 1;
                digest(u, p)
            };
            assert_eq!(user_matches(&users, user, pass, counted), ok);
            assert_eq!(computed, users.len(), "every user's digest, for {user:?}");
        }
    }

    #[test]
    fn malformed_ping_is_refused() {
        let s = security(vec![]);
        let (helo, _) = s.helo(true);
        for bad in [
            vec![0xc0],
            vec![0x91, 0xa4, b'P', b'I', b'N', b'G'],
            vec![0x96, 1, 2, 3, 4, 5, 6],
        ] {
            assert_eq!(
                s.answer_ping(&helo, &bad).unwrap_err().reason,
                "invalid_ping"
            );
        }
    }
}
