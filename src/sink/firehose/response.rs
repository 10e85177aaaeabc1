//! Reading successful PutRecordBatch responses without the SDK's generic deserializer.
//!
//! Why: a response carries one entry per record (`{"RecordId":"…"}`, ~60 bytes each in
//! production), and the SDK's schema-driven deserializer allocates a `String` per record id
//! through dynamic dispatch per field: 7 % of the relay's CPU in the end-to-end profile. The
//! relay never uses record ids, only the per-record error codes. [`FastResponses`] is an
//! interceptor of the Firehose client; when a PutRecordBatch response is an HTTP 200 it puts a
//! deserializer of its own in front of the SDK's, in the call's own config layer. That
//! deserializer reads the body with `serde_json` (borrowed, record ids skipped) into the
//! SDK's own output type, so the sink's logic does not change. Error responses (throttling,
//! 4xx/5xx) never reach it: the SDK's deserializer, which knows the protocol's error
//! encodings, reads them as before. A 200 body that is not a PutRecordBatch result (which the
//! SDK would not accept either) becomes an error, and the call's records stay pending.
//!
//! When `FailedPutCount` is 0 and comes before the entries (Firehose writes it first), every
//! record was accepted: the entries are only counted (each must still be a JSON object), and
//! the output gets that many empty entries. Measured with `cargo bench --bench
//! firehose_response` (500 entries with a 56-digit `RecordId`, two runs, 2026-12-03): 15.6 and
//! 13.9 µs against 25.4 and 24.8 µs for the same answer read entry by entry (`FailedPutCount`
//! last), about 11 µs per call, 2 % of the relay's CPU per record; in the end-to-end A/B of
//! the same sitting, 10 rounds of 2 M records, the pairs' ratios against the relay without it
//! were 0.97 (1 connection) and 0.99 (8).
//!
//! A hand-written byte reader of Firehose's own spelling used to sit in front of `serde_json`
//! (about 120 lines, with a property test and a fuzz target holding it to serde's reading).
//! Measured on its own (`cargo bench --bench firehose_response`, one run, 2026-12-02): for a
//! 500-record answer with 56-digit record ids it took 17.4 µs against serde's 33.8 µs (partial
//! failure: 24.9 against 46.7 µs), so it saved about 16 µs per call, 0.03 CPU-seconds per
//! million records, about 1 % of the relay's 2.5 CPU-seconds per million (README). Writing the
//! request body of the same call took 20.4 µs in that run. Not worth a second JSON reader to
//! keep in agreement with the first: removed.

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

use crate::sink::aws_batch::prebuilt::is_operation;

/// Interceptor of the Firehose client: installs its own deserializer when the response to a
/// PutRecordBatch call is an HTTP 200 (only then: the output it builds is that operation's).
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
        if context.response().status().as_u16() == 200 && is_operation(cfg, "PutRecordBatch") {
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
struct Body {
    failed_put_count: i32,
    encrypted: Option<bool>,
    request_responses: Vec<PutRecordBatchResponseEntry>,
}

/// The members of a result the relay reads; the others are skipped.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "PascalCase")]
enum Member {
    FailedPutCount,
    Encrypted,
    RequestResponses,
    #[serde(other)]
    Other,
}

impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Body;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PutRecordBatch result")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let (mut failed, mut encrypted, mut entries) = (None, None, None);
                while let Some(member) = map.next_key::<Member>()? {
                    match member {
                        Member::FailedPutCount if failed.is_some() => {
                            return Err(A::Error::duplicate_field("FailedPutCount"))
                        }
                        Member::FailedPutCount => failed = Some(map.next_value::<i32>()?),
                        Member::Encrypted => encrypted = map.next_value::<Option<bool>>()?,
                        Member::RequestResponses if entries.is_some() => {
                            return Err(A::Error::duplicate_field("RequestResponses"))
                        }
                        // Every record accepted (Firehose writes the count first): the
                        // entries are only counted, which the sink checks against the
                        // records it sent.
                        Member::RequestResponses if failed == Some(0) => {
                            let n = map.next_value::<Vec<AnObject>>()?.len();
                            let accepted = PutRecordBatchResponseEntry::builder().build();
                            entries = Some(vec![accepted; n]);
                        }
                        Member::RequestResponses => {
                            entries = Some(map.next_value::<Entries>()?.0);
                        }
                        Member::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Body {
                    failed_put_count: failed
                        .ok_or_else(|| A::Error::missing_field("FailedPutCount"))?,
                    encrypted,
                    request_responses: entries
                        .ok_or_else(|| A::Error::missing_field("RequestResponses"))?,
                })
            }
        }
        d.deserialize_map(Members)
    }
}

/// Any JSON object, its members skipped: a list of them (`Vec<AnObject>`, whose elements take
/// no memory) is how an all-accepted answer's entries are counted.
///
/// Why: with every record accepted, reading each entry into the SDK's type (a string scan for
/// its `RecordId`, a field match, a builder) is the whole cost of an answer; counting skips
/// all but the scan (numbers in the module docs).
struct AnObject;

impl<'de> serde::Deserialize<'de> for AnObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = AnObject;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PutRecordBatch response entry")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::IgnoredAny;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnObject)
            }
        }
        d.deserialize_map(Members)
    }
}

/// The entries of a result, read straight into the SDK's type: no list of borrowed entries
/// in between, and room for a full call's entries from the start.
struct Entries(Vec<PutRecordBatchResponseEntry>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> serde::de::Visitor<'de> for List {
            type Value = Entries;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of PutRecordBatch response entries")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(super::MAX_RECORDS_PER_CALL);
                while let Some(e) = seq.next_element::<Entry<'de>>()? {
                    entries.push(
                        PutRecordBatchResponseEntry::builder()
                            .set_error_code(e.error_code.map(Cow::into_owned))
                            .set_error_message(e.error_message.map(Cow::into_owned))
                            .build(),
                    );
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_seq(List)
    }
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

/// The SDK output for a 200 body (any JSON spelling of a PutRecordBatch result), or `None` if
/// the body is not one. Entries carry no record id: the relay never uses it.
fn parse_success(body: &[u8]) -> Option<PutRecordBatchOutput> {
    let body: Body = serde_json::from_slice(body).ok()?;
    PutRecordBatchOutput::builder()
        .failed_put_count(body.failed_put_count)
        .set_encrypted(body.encrypted)
        .set_request_responses(Some(body.request_responses))
        .build()
        .ok()
}

/// Reads a 200 body as the relay does, for `benches/firehose_response.rs`.
#[doc(hidden)]
pub fn read_success(body: &[u8]) -> Option<PutRecordBatchOutput> {
    parse_success(body)
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
    fn a_full_success_is_counted_wherever_its_count_is() {
        let entries = r#"[{"RecordId":"1"},{"RecordId":"2","Extra":[1,{"a":null}]},{}]"#;
        for body in [
            format!(r#"{{"FailedPutCount":0,"RequestResponses":{entries}}}"#),
            format!(r#"{{"RequestResponses":{entries},"FailedPutCount":0}}"#),
            format!(r#"{{"Encrypted":true,"FailedPutCount":0,"RequestResponses":{entries}}}"#),
        ] {
            let out = parse_success(body.as_bytes()).unwrap();
            assert_eq!(
                (out.failed_put_count(), out.request_responses().len()),
                (0, 3)
            );
            assert!(out
                .request_responses()
                .iter()
                .all(|e| e.error_code().is_none()));
        }
        // A second list or count is not a result.
        for body in [
            format!(r#"{{"FailedPutCount":0,"RequestResponses":{entries},"RequestResponses":[]}}"#),
            format!(r#"{{"RequestResponses":{entries},"FailedPutCount":0,"FailedPutCount":0}}"#),
        ] {
            assert!(parse_success(body.as_bytes()).is_none(), "{body}");
        }
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
    fn any_json_spelling_of_a_result_is_read() {
        for body in [
            &br#"{ "FailedPutCount": 0, "RequestResponses": [ {"RecordId": "a"} ] }"#[..],
            br#"{"FailedPutCount":1,"RequestResponses":[{"ErrorCode":"X","ErrorMessage":"Slow \"down\""}]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a","Extra":1}]}"#,
            br#"{"FailedPutCount":0,"Encrypted":null,"RequestResponses":[{"RecordId":null}]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[]} "#,
        ] {
            assert!(parse_success(body).is_some(), "{}", String::from_utf8_lossy(body));
        }
        // A full call's entries and more (the list grows past its first room).
        for n in [0, 1, 500, 501, 1200] {
            let entries = vec![r#"{"RecordId":"x"}"#; n].join(",");
            let body = format!(r#"{{"FailedPutCount":0,"RequestResponses":[{entries}]}}"#);
            let out = parse_success(body.as_bytes()).unwrap();
            assert_eq!(out.request_responses().len(), n);
        }
        // And what is not a valid result is refused.
        for body in [
            &br#"{"FailedPutCount":01,"RequestResponses":[]}"#[..],
            br#"{"FailedPutCount":0,"FailedPutCount":0,"RequestResponses":[]}"#,
            br#"{"FailedPutCount":9999999999,"RequestResponses":[]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a"}]"#,
            b"{\"FailedPutCount\":0,\"RequestResponses\":[{\"RecordId\":\"a\x01\"}]}",
            br#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a"},1]}"#,
            br#"{"FailedPutCount":0,"RequestResponses":{"RecordId":"a"}}"#,
            br#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a"},]}"#,
            br#"{"FailedPutCount":1,"RequestResponses":[{"ErrorCode":5}]}"#,
        ] {
            assert!(
                parse_success(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
