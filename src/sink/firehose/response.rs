//! Reading successful PutRecordBatch responses without the SDK's generic deserializer.
//!
//! Why: a response carries one entry per record (`{"RecordId":"…"}`, ~60 bytes each in
//! production), and the SDK's schema-driven deserializer allocates a `String` per record id
//! through dynamic dispatch per field: 7 % of the relay's CPU in the end-to-end profile. The
//! relay never uses record ids, only the per-record error codes. [`FastResponses`] is an
//! interceptor added to each PutRecordBatch call; when the response is an HTTP 200 it puts a
//! deserializer of its own in front of the SDK's, in the call's own config layer. That
//! deserializer reads the body with `serde_json` (borrowed, record ids skipped) into the
//! SDK's own output type, so the sink's logic does not change. Error responses (throttling,
//! 4xx/5xx) never reach it: the SDK's deserializer, which knows the protocol's error
//! encodings, reads them as before. A 200 body that is not a PutRecordBatch result (which the
//! SDK would not accept either) becomes an error, and the call's records stay pending.
//!
//! Firehose writes these bodies the same way every time: no whitespace, no escapes, three
//! known keys. [`parse_plain`] reads exactly that shape, a few bytes per record id instead of
//! serde's visitor calls per key and value (4–5 % of the relay's CPU in the e2e profile), and
//! gives up on anything else, which `serde_json` then reads. So the fast path never accepts a
//! body that serde would reject or read differently; a property test holds it to that.

use std::borrow::Cow;

use aws_sdk_firehose::operation::put_record_batch::PutRecordBatchOutput;
use aws_sdk_firehose::types::PutRecordBatchResponseEntry;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, Output, OutputOrError,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use aws_smithy_types::config_bag::ConfigBag;

/// Interceptor for one PutRecordBatch call: installs [`Deserializer`] when the response is an
/// HTTP 200. Only for PutRecordBatch: the output it builds is that operation's.
#[derive(Debug, Default)]
pub struct FastResponses;

impl Intercept for FastResponses {
    fn name(&self) -> &'static str {
        "FastPutRecordBatchResponses"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.response().status().as_u16() == 200 {
            cfg.interceptor_state()
                .store_put(SharedResponseDeserializer::new(Deserializer));
        }
        Ok(())
    }
}

/// Reads the body of an HTTP 200 PutRecordBatch response.
#[derive(Debug)]
struct Deserializer;

impl DeserializeResponse for Deserializer {
    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        _cfg: &ConfigBag,
    ) -> OutputOrError {
        let body = response.body().bytes().unwrap_or_default();
        match parse_success(body) {
            Some(output) => Ok(Output::erase(output)),
            None => Err(OrchestratorError::other(format!(
                "unreadable PutRecordBatch response (HTTP 200, {} bytes): {}",
                body.len(),
                String::from_utf8_lossy(body.get(..200).unwrap_or(body))
            ))),
        }
    }
}

/// The body of a successful PutRecordBatch response, as far as the relay reads it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    failed_put_count: i32,
    #[serde(default)]
    encrypted: Option<bool>,
    #[serde(borrow)]
    request_responses: Vec<Entry<'a>>,
}

/// One entry; `RecordId` is skipped without being copied.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    #[serde(default, borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error_message: Option<Cow<'a, str>>,
}

/// The SDK output for a 200 body, or `None` if the body is not a PutRecordBatch result.
fn parse_success(body: &[u8]) -> Option<PutRecordBatchOutput> {
    parse_plain(body).or_else(|| parse_any(body))
}

/// Any JSON spelling of a PutRecordBatch result, with `serde_json`.
fn parse_any(body: &[u8]) -> Option<PutRecordBatchOutput> {
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    let entries = body
        .request_responses
        .into_iter()
        .map(|e| {
            sdk_entry(
                e.error_code.map(Cow::into_owned),
                e.error_message.map(Cow::into_owned),
            )
        })
        .collect();
    output(body.failed_put_count, body.encrypted, entries)
}

/// The SDK's output for what either reader read.
fn output(
    failed_put_count: i32,
    encrypted: Option<bool>,
    entries: Vec<PutRecordBatchResponseEntry>,
) -> Option<PutRecordBatchOutput> {
    PutRecordBatchOutput::builder()
        .failed_put_count(failed_put_count)
        .set_encrypted(encrypted)
        .set_request_responses(Some(entries))
        .build()
        .ok()
}

/// The SDK's entry for one record's result (no record id: the relay never uses it).
fn sdk_entry(code: Option<String>, message: Option<String>) -> PutRecordBatchResponseEntry {
    PutRecordBatchResponseEntry::builder()
        .set_error_code(code)
        .set_error_message(message)
        .build()
}

/// Reads `body` with both readers; panics if the fast one accepts a body that `serde_json`
/// refuses or reads differently. The `firehose_response` fuzz target's entry point.
#[doc(hidden)]
pub fn check_readers_agree(body: &[u8]) {
    if let Some(fast) = parse_plain(body) {
        let slow = parse_any(body).unwrap_or_else(|| {
            panic!(
                "serde refuses what the fast reader read: {}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(summary(&fast), summary(&slow));
    }
}

/// One entry's error code and message.
type CodeAndMessage = (Option<String>, Option<String>);

/// What the sink reads from an output: failed count, encryption, each entry's code and message.
fn summary(out: &PutRecordBatchOutput) -> (i32, Option<bool>, Vec<CodeAndMessage>) {
    (
        out.failed_put_count(),
        out.encrypted(),
        out.request_responses()
            .iter()
            .map(|e| {
                (
                    e.error_code().map(str::to_owned),
                    e.error_message().map(str::to_owned),
                )
            })
            .collect(),
    )
}

/// The body as Firehose writes it: `{"FailedPutCount":N,"Encrypted":B,"RequestResponses":[…]}`
/// with the keys in any order, each entry an object of `RecordId`, `ErrorCode` and
/// `ErrorMessage` strings without escapes, and no whitespace. `None` for anything else.
fn parse_plain(body: &[u8]) -> Option<PutRecordBatchOutput> {
    let mut r = Reader { b: body, i: 0 };
    let (mut failed, mut encrypted, mut entries) = (None, None, None);
    r.object(|r, key| {
        match key {
            b"FailedPutCount" if failed.is_none() => failed = Some(r.count()?),
            b"Encrypted" if encrypted.is_none() => encrypted = Some(r.boolean()?),
            b"RequestResponses" if entries.is_none() => entries = Some(r.entries()?),
            _ => return None,
        }
        Some(())
    })?;
    if r.i != body.len() {
        return None;
    }
    output(failed?, encrypted, entries?)
}

/// A cursor over a response body for [`parse_plain`]; every method is `None` when the next
/// bytes are not what it reads, and then the whole fast path gives up.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    /// Consumes `c` if it comes next.
    fn byte(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// Consumes `lit` if it comes next.
    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        self.b
            .get(self.i..)?
            .starts_with(lit)
            .then(|| self.i += lit.len())
    }

    /// A string without escapes or control characters; its bytes between the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let start = self.i;
        let end = crate::json_text::next_escape(self.b, start)?;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        Some(&self.b[start..end])
    }

    /// A string that must be UTF-8 (serde reads it as `&str`).
    fn text(&mut self) -> Option<String> {
        std::str::from_utf8(self.string()?).ok().map(str::to_owned)
    }

    /// `true` or `false`.
    fn boolean(&mut self) -> Option<bool> {
        if self.literal(b"true").is_some() {
            return Some(true);
        }
        self.literal(b"false").map(|()| false)
    }

    /// A count: 1 to 9 digits without a leading zero (so it fits an `i32` as serde reads it).
    fn count(&mut self) -> Option<i32> {
        let digits = self.b.get(self.i..)?;
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 || (n > 1 && digits[0] == b'0') {
            return None;
        }
        self.i += n;
        std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
    }

    /// `open item,item,… close` (or nothing between): `item` reads each element.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.byte(open)?;
        if self.byte(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            if self.byte(b',').is_none() {
                break;
            }
        }
        self.byte(close)
    }

    /// `{"key":value,…}` (or `{}`): `field` reads each value after its key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            let key = r.string()?;
            r.byte(b':')?;
            field(r, key)
        })
    }

    /// `[entry,…]`.
    fn entries(&mut self) -> Option<Vec<PutRecordBatchResponseEntry>> {
        let mut out = Vec::new();
        self.sequence(b'[', b']', |r| {
            out.push(r.entry()?);
            Some(())
        })?;
        Some(out)
    }

    /// `{"RecordId":"…"}` or `{"ErrorCode":"…","ErrorMessage":"…"}`, keys in any order; the
    /// record id is skipped.
    fn entry(&mut self) -> Option<PutRecordBatchResponseEntry> {
        let (mut id, mut code, mut message) = (false, None, None);
        self.object(|r, key| {
            match key {
                b"RecordId" if !id => {
                    r.string()?;
                    id = true;
                }
                b"ErrorCode" if code.is_none() => code = Some(r.text()?),
                b"ErrorMessage" if message.is_none() => message = Some(r.text()?),
                _ => return None,
            }
            Some(())
        })?;
        Some(sdk_entry(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_success_keeps_one_entry_per_record_and_no_record_ids() {
        let body = br#"{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[
            {"RecordId":"49543463076548007577105092703039560359975228518395012686"},
            {"RecordId":"49543463076570308322303623326179887152428262250726293522"}]}"#;
        let out = parse_success(body).unwrap();
        assert_eq!(out.failed_put_count(), 0);
        assert_eq!(out.encrypted(), Some(false));
        assert_eq!(out.request_responses().len(), 2);
        assert!(out
            .request_responses()
            .iter()
            .all(|e| e.error_code().is_none() && e.record_id().is_none()));
    }

    #[test]
    fn partial_failures_keep_their_codes_and_messages_in_order() {
        let body = br#"{"FailedPutCount":1,"RequestResponses":[
            {"RecordId":"a"},
            {"ErrorCode":"ServiceUnavailableException","ErrorMessage":"Slow down \"please\""},
            {"RecordId":"c"}]}"#;
        let out = parse_success(body).unwrap();
        assert_eq!(out.failed_put_count(), 1);
        let e = out.request_responses();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].error_code(), None);
        assert_eq!(e[1].error_code(), Some("ServiceUnavailableException"));
        assert_eq!(e[1].error_message(), Some("Slow down \"please\""));
        assert_eq!(e[2].error_code(), None);
    }

    #[test]
    fn a_body_that_is_not_a_result_is_refused() {
        for body in [
            &b""[..],
            b"not json",
            br#"{"__type":"ServiceUnavailableException","message":"x"}"#,
            br#"{"FailedPutCount":"zero","RequestResponses":[]}"#,
            br#"{"FailedPutCount":0}"#,
        ] {
            assert!(parse_success(body).is_none(), "{body:?}");
        }
    }

    #[test]
    fn firehose_s_own_spelling_takes_the_fast_path() {
        for body in [
            &br#"{"Encrypted":false,"FailedPutCount":0,"RequestResponses":[{"RecordId":"4954346307654800757710509270303956035997522851839501268600"},{"RecordId":"4954346307657030832230362332617988715242826225072629352200"}]}"#[..],
            br#"{"FailedPutCount":1,"RequestResponses":[{"RecordId":"a"},{"ErrorCode":"ServiceUnavailableException","ErrorMessage":"Slow down."}],"Encrypted":true}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[]}"#,
        ] {
            let fast = parse_plain(body).expect("fast path");
            assert_eq!(summary(&fast), summary(&parse_any(body).unwrap()));
        }
    }

    #[test]
    fn other_spellings_fall_back_to_serde() {
        for body in [
            &br#"{ "FailedPutCount": 0, "RequestResponses": [ {"RecordId": "a"} ] }"#[..],
            br#"{"FailedPutCount":1,"RequestResponses":[{"ErrorCode":"X","ErrorMessage":"Slow \"down\""}]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a","Extra":1}]}"#,
            br#"{"FailedPutCount":0,"Encrypted":null,"RequestResponses":[{"RecordId":null}]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[]} "#,
        ] {
            assert!(parse_plain(body).is_none(), "{}", String::from_utf8_lossy(body));
            assert!(parse_success(body).is_some(), "{}", String::from_utf8_lossy(body));
        }
        // And what serde refuses stays refused.
        for body in [
            &br#"{"FailedPutCount":01,"RequestResponses":[]}"#[..],
            br#"{"FailedPutCount":0,"FailedPutCount":0,"RequestResponses":[]}"#,
            br#"{"FailedPutCount":9999999999,"RequestResponses":[]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a"}]"#,
            b"{\"FailedPutCount\":0,\"RequestResponses\":[{\"RecordId\":\"a\x01\"}]}",
        ] {
            assert!(
                parse_success(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// JSON-ish pieces, mostly valid, sometimes not: the fast path may give up on any of
        /// them, but must never disagree with serde.
        fn string() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => "[A-Za-z0-9 .]{0,12}".prop_map(|s| format!("\"{s}\"")),
                2 => ".{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
                1 => "[\\\\\"\\x01é]{0,4}".prop_map(|s| format!("\"{s}\"")),
                1 => Just("null".to_owned()),
                1 => Just("7".to_owned()),
            ]
        }

        fn entry() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                (
                    prop_oneof![
                        4 => Just("RecordId"),
                        2 => Just("ErrorCode"),
                        2 => Just("ErrorMessage"),
                        1 => Just("Other")
                    ],
                    string(),
                ),
                0..4,
            )
            .prop_map(|fields| {
                let inner: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", inner.join(","))
            })
        }

        fn body() -> impl Strategy<Value = Vec<u8>> {
            let count = prop_oneof![
                8 => (0u32..20).prop_map(|n| n.to_string()),
                1 => Just("01".to_owned()),
                1 => Just("-1".to_owned()),
                1 => Just("4294967296".to_owned()),
                1 => Just("1.0".to_owned()),
            ];
            let encrypted = prop_oneof![
                Just(None),
                Just(Some("true")),
                Just(Some("false")),
                Just(Some("null"))
            ];
            (
                count,
                encrypted,
                proptest::collection::vec(entry(), 0..5),
                any::<bool>(),
                any::<proptest::sample::Index>(),
                proptest::option::weighted(0.2, (any::<proptest::sample::Index>(), any::<u8>())),
            )
                .prop_map(|(count, encrypted, entries, responses_first, cut, flip)| {
                    let mut fields = vec![format!("\"FailedPutCount\":{count}")];
                    if let Some(e) = encrypted {
                        fields.push(format!("\"Encrypted\":{e}"));
                    }
                    let responses = format!("\"RequestResponses\":[{}]", entries.join(","));
                    if responses_first {
                        fields.insert(0, responses);
                    } else {
                        fields.push(responses);
                    }
                    let mut body = format!("{{{}}}", fields.join(",")).into_bytes();
                    // Sometimes one byte changed, sometimes the body cut short.
                    if let Some((at, b)) = flip {
                        let i = at.index(body.len());
                        body[i] = b;
                    } else if cut.index(8) == 0 {
                        body.truncate(cut.index(body.len()));
                    }
                    body
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn the_fast_path_never_disagrees_with_serde(body in body()) {
                if let Some(fast) = parse_plain(&body) {
                    let slow = parse_any(&body);
                    prop_assert!(slow.is_some(), "serde refuses what the fast path read: {}", String::from_utf8_lossy(&body));
                    prop_assert_eq!(summary(&fast), summary(&slow.unwrap()));
                }
            }
        }
    }
}
