//! The PutRecords request body, written in one pass from the records' bytes, as the Firehose
//! face writes PutRecordBatch's (see `sink::firehose::request` for why): the awsJson1.1
//! document `{"StreamName":…,"Records":[{"Data":"<base64>","PartitionKey":…},…]}` (or
//! `"StreamARN"`), swapped in before signing. A test holds it to the SDK's own serialization.

use bytes::Bytes;

use crate::json_text::write_escaped;

/// Where the records go: `stream_name` or `stream_arn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `StreamName`.
    Name(String),
    /// `StreamARN`.
    Arn(String),
}

impl Target {
    /// The name or ARN.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Name(s) | Target::Arn(s) => s,
        }
    }
}

/// One record of a call: data (before base64), partition key, optional explicit hash key.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The data blob.
    pub data: &'a [u8],
    /// The partition key.
    pub partition_key: &'a str,
    /// The explicit hash key (a decimal 128-bit integer).
    pub explicit_hash_key: Option<&'a str>,
}

/// The JSON body of a PutRecords call of `records` to `target`.
pub fn put_records_body<'a, I>(target: &Target, records: I) -> Bytes
where
    I: IntoIterator<Item = Entry<'a>>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    // Keys are escaped into `text` first (they are short); worst case 6 bytes per byte.
    let estimate: usize = records
        .clone()
        .map(|r| {
            base64_simd::STANDARD.encoded_length(r.data.len())
                + r.partition_key.len()
                + r.explicit_hash_key.map_or(0, str::len)
                + 64
        })
        .sum();
    let mut body = Vec::with_capacity(estimate + target.as_str().len() + 32);
    let mut text = String::new();
    body.extend_from_slice(br#"{"Records":["#);
    for (i, r) in records.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"Data":""#);
        base64_simd::STANDARD.encode_append(r.data, &mut body);
        body.extend_from_slice(br#"","PartitionKey":"#);
        text.clear();
        write_escaped(&mut text, r.partition_key);
        body.extend_from_slice(text.as_bytes());
        if let Some(h) = r.explicit_hash_key {
            body.extend_from_slice(br#","ExplicitHashKey":"#);
            text.clear();
            write_escaped(&mut text, h);
            body.extend_from_slice(text.as_bytes());
        }
        body.push(b'}');
    }
    body.extend_from_slice(match target {
        Target::Name(_) => br#"],"StreamName":"#,
        Target::Arn(_) => br#"],"StreamARN":"#,
    });
    text.clear();
    write_escaped(&mut text, target.as_str());
    body.extend_from_slice(text.as_bytes());
    body.push(b'}');
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("the body is valid JSON")
    }

    #[test]
    fn the_body_is_the_awsjson_document_kinesis_expects() {
        let records = [
            Entry {
                data: b"{\"a\":1}\n",
                partition_key: "k\"1é",
                explicit_hash_key: None,
            },
            Entry {
                data: &[0, 255, 10],
                partition_key: "2",
                explicit_hash_key: Some("170141183460469231731687303715884105728"),
            },
        ];
        let body = put_records_body(&Target::Name("logs".into()), records);
        assert_eq!(
            parse(&body),
            serde_json::json!({
                "StreamName": "logs",
                "Records": [
                    {"Data": "eyJhIjoxfQo=", "PartitionKey": "k\"1é"},
                    {"Data": "AP8K", "PartitionKey": "2",
                     "ExplicitHashKey": "170141183460469231731687303715884105728"},
                ]
            })
        );
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/logs";
        let body = put_records_body(&Target::Arn(arn.into()), std::iter::empty());
        assert_eq!(
            parse(&body),
            serde_json::json!({"StreamARN": arn, "Records": []})
        );
    }

    async fn sdk_body(target: &Target, records: &[(Vec<u8>, String, Option<String>)]) -> Vec<u8> {
        use aws_sdk_kinesis::primitives::Blob;
        use aws_sdk_kinesis::types::PutRecordsRequestEntry;

        let capture = crate::sink::aws_batch::capture::Capture::default();
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "AKID", "SECRET", None, None, "test",
            ))
            .interceptor(capture.clone())
            .build();
        let client = aws_sdk_kinesis::Client::from_conf(conf);
        let entries = records
            .iter()
            .map(|(d, k, h)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(d.clone()))
                    .partition_key(k)
                    .set_explicit_hash_key(h.clone())
                    .build()
                    .unwrap()
            })
            .collect();
        let call = client.put_records().set_records(Some(entries));
        let call = match target {
            Target::Name(n) => call.stream_name(n),
            Target::Arn(a) => call.stream_arn(a),
        };
        let _ = call.send().await;
        let body = capture.take();
        body.expect("the SDK built a body")
    }

    /// The SDK's own serializer must produce the same document: if a future SDK changed the
    /// protocol, this fails instead of production.
    #[tokio::test]
    async fn the_body_matches_what_the_sdk_itself_would_send() {
        let records: Vec<(Vec<u8>, String, Option<String>)> = (0..50u8)
            .map(|n| {
                let data = (0..n).map(|k| k.wrapping_mul(37) ^ n).collect();
                let key = format!("key-{n}-\u{1}\"é\u{1F600}");
                let hash = (n % 3 == 0).then(|| (u128::from(n) << 100).to_string());
                (data, key, hash)
            })
            .collect();
        let entries = || {
            records.iter().map(|(d, k, h)| Entry {
                data: d,
                partition_key: k,
                explicit_hash_key: h.as_deref(),
            })
        };
        for target in [
            Target::Name("stream-1".into()),
            Target::Arn("arn:aws:kinesis:eu-west-1:123456789012:stream/s".into()),
        ] {
            let sdk = sdk_body(&target, &records).await;
            let ours = put_records_body(&target, entries());
            assert_eq!(parse(&sdk), parse(&ours), "{target:?}");
        }
    }
}
