//! The PutRecordBatch request body, written in one pass from the records' bytes.
//!
//! Why not let the SDK serialize it: its generic path copies every record into an owned
//! `Record { data: Blob }`, then into a base64 `String` of its own, then into the JSON document:
//! three copies and several allocations per record, about a tenth of the relay's CPU at
//! 200-byte records. This module writes the same awsJson1.1 document
//! (`{"DeliveryStreamName":…,"Records":[{"Data":"<base64>"},…]}`) straight from the records
//! into one exactly-sized buffer, and [`super::FirehoseSink`]'s client swaps it in before
//! signing ([`crate::sink::aws_batch::prebuilt`]): SigV4 signs exactly these bytes, and
//! everything else (endpoint resolution, credentials, timeouts, response parsing, error
//! classification) stays the SDK's. A test checks the document against the SDK's own
//! serialization of the same records, so a protocol change cannot slip by unnoticed.

use bytes::Bytes;

use crate::json_text::write_escaped;

/// Opening of the document up to the stream name.
const HEAD: &[u8] = br#"{"DeliveryStreamName":"#;
/// Between the stream name and the first record.
const RECORDS: &[u8] = br#","Records":["#;
/// Around each record's base64 data.
const RECORD_OPEN: &[u8] = br#"{"Data":""#;
const RECORD_CLOSE: &[u8] = br#""}"#;
/// Closing of the document.
const TAIL: &[u8] = b"]}";

/// The JSON body of a PutRecordBatch call of `records` (their data, before base64) to
/// `stream`.
pub fn put_record_batch_body<'a, I>(stream: &str, records: I) -> Bytes
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    let per_record = RECORD_OPEN.len() + RECORD_CLOSE.len() + 1;
    let data_len: usize = records
        .clone()
        .map(|r| base64_simd::STANDARD.encoded_length(r.len()) + per_record)
        .sum();
    let mut body = Vec::with_capacity(
        HEAD.len() + stream.len() * 6 + 2 + RECORDS.len() + data_len + TAIL.len(),
    );
    body.extend_from_slice(HEAD);
    // Stream names are `[a-zA-Z0-9_.-]{1,64}`, but the name comes from configuration, so
    // anything is escaped correctly rather than assumed.
    let mut name = String::with_capacity(stream.len() + 2);
    write_escaped(&mut name, stream);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(RECORDS);
    for (i, record) in records.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(RECORD_OPEN);
        base64_simd::STANDARD.encode_append(record, &mut body);
        body.extend_from_slice(RECORD_CLOSE);
    }
    body.extend_from_slice(TAIL);
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::aws_batch::prebuilt::{with_body, PrebuiltBody};

    fn parse(body: &Bytes) -> serde_json::Value {
        serde_json::from_slice(body).expect("the body is valid JSON")
    }

    #[test]
    fn the_body_is_the_awsjson_document_firehose_expects() {
        let records: Vec<&[u8]> = vec![b"{\"a\":1}\n", b"", &[0, 255, 10]];
        let body = put_record_batch_body("logs-prod", records.iter().copied());
        assert_eq!(
            parse(&body),
            serde_json::json!({
                "DeliveryStreamName": "logs-prod",
                "Records": [
                    {"Data": "eyJhIjoxfQo="},
                    {"Data": ""},
                    {"Data": "AP8K"},
                ]
            })
        );
        // Exactly sized: no reallocation on the way.
        assert_eq!(
            body.len(),
            br#"{"DeliveryStreamName":"logs-prod","Records":[{"Data":"eyJhIjoxfQo="},{"Data":""},{"Data":"AP8K"}]}"#.len()
        );
    }

    #[test]
    fn an_empty_call_and_an_odd_stream_name_are_still_valid_json() {
        let body = put_record_batch_body("we\"ird\\name\u{1}é", std::iter::empty::<&[u8]>());
        assert_eq!(
            parse(&body),
            serde_json::json!({"DeliveryStreamName": "we\"ird\\name\u{1}é", "Records": []})
        );
    }

    /// A client with [`PrebuiltBody`] and a capture of what would be sent.
    fn client_with(capture: &crate::sink::aws_batch::capture::Capture) -> aws_sdk_firehose::Client {
        let conf = aws_sdk_firehose::Config::builder()
            .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
            .region(aws_sdk_firehose::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_firehose::config::Credentials::new(
                "AKID", "SECRET", None, None, "test",
            ))
            .interceptor(PrebuiltBody {
                operation: "PutRecordBatch",
            })
            .interceptor(capture.clone())
            .build();
        aws_sdk_firehose::Client::from_conf(conf)
    }

    #[tokio::test]
    async fn the_client_sends_the_prebuilt_body_of_the_call() {
        let capture = crate::sink::aws_batch::capture::Capture::default();
        let client = client_with(&capture);
        for records in [&[&b"one"[..], b"two"][..], &[b"three"]] {
            let body = put_record_batch_body("s", records.iter().copied());
            let call = client
                .put_record_batch()
                .delivery_stream_name("s")
                .set_records(Some(Vec::new()))
                .send();
            let _ = with_body(body.clone(), call).await;
            assert_eq!(capture.take().as_deref(), Some(&body[..]));
        }
    }

    #[tokio::test]
    async fn a_call_without_its_prebuilt_body_is_not_sent() {
        let capture = crate::sink::aws_batch::capture::Capture::default();
        let client = client_with(&capture);
        let e = client
            .put_record_batch()
            .delivery_stream_name("s")
            .set_records(Some(Vec::new()))
            .send()
            .await
            .unwrap_err();
        assert!(
            format!("{:?}", e).contains("without its prebuilt body"),
            "{e:?}"
        );
        assert_eq!(capture.take(), None, "nothing was sent");
    }

    /// The SDK's own serializer must produce the same document: if a future SDK changed the
    /// protocol, this fails instead of production.
    #[tokio::test]
    async fn the_body_matches_what_the_sdk_itself_would_send() {
        use aws_sdk_firehose::primitives::Blob;
        use aws_sdk_firehose::types::Record;

        let data: Vec<Vec<u8>> = (0..50u8)
            .map(|n| (0..n).map(|k| k.wrapping_mul(37) ^ n).collect())
            .collect();
        let capture = crate::sink::aws_batch::capture::Capture::default();
        let conf = aws_sdk_firehose::Config::builder()
            .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
            .region(aws_sdk_firehose::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_firehose::config::Credentials::new(
                "AKID", "SECRET", None, None, "test",
            ))
            .interceptor(capture.clone())
            .build();
        let client = aws_sdk_firehose::Client::from_conf(conf);
        let records = data
            .iter()
            .map(|d| {
                Record::builder()
                    .data(Blob::new(d.clone()))
                    .build()
                    .unwrap()
            })
            .collect();
        let _ = client
            .put_record_batch()
            .delivery_stream_name("stream-1")
            .set_records(Some(records))
            .send()
            .await;
        let sdk_body = capture.take().expect("the SDK built a body");
        let ours = put_record_batch_body("stream-1", data.iter().map(Vec::as_slice));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&sdk_body).unwrap(),
            parse(&ours)
        );
    }
}
