"""SigV4 checks with botocore's own signer, an implementation independent of the relay's (the
Rust SDK's aws-sigv4) and of the test fakes' verifier.

Usage:
  sigv4_check.py recompute REQUEST.json
      REQUEST.json: {"method", "url", "headers": [[name, value]...], "body_b64", "access_key",
      "secret", "session_token" (or null)}. Recomputes the signature of the captured request
      over the headers its Authorization header lists, at its X-Amz-Date, and exits non-zero
      unless it equals the signature the request carries.
  sigv4_check.py call URL STREAM ACCESS_KEY SECRET TOKEN|- EXPECT
      Sends a PutRecordBatch signed by botocore (boto3's client) to URL; EXPECT is "ok" or the
      error code the service must answer. Exits non-zero on any other outcome.
"""
import base64
import json
import sys

import boto3
import botocore.config
import botocore.exceptions
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def parse_authorization(value):
    algorithm, rest = value.split(" ", 1)
    if algorithm != "AWS4-HMAC-SHA256":
        fail("unexpected algorithm " + algorithm)
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    _key, date, region, service, terminal = fields["Credential"].split("/")
    if terminal != "aws4_request":
        fail("bad credential scope " + fields["Credential"])
    return date, region, service, fields["SignedHeaders"].split(";"), fields["Signature"]


def recompute(path):
    with open(path) as f:
        captured = json.load(f)
    headers = captured["headers"]
    auth = [v for k, v in headers if k.lower() == "authorization"]
    if len(auth) != 1:
        fail("expected one Authorization header, got %r" % auth)
    date, region, service, signed, sent_signature = parse_authorization(auth[0])
    amz_date = [v for k, v in headers if k.lower() == "x-amz-date"][0]
    if not amz_date.startswith(date):
        fail("X-Amz-Date %s outside the scope date %s" % (amz_date, date))

    class SignOnly(SigV4Auth):
        """botocore's signer restricted to the headers the request says it signed."""

        def headers_to_sign(self, request):
            chosen = super().headers_to_sign(request)
            for name in set(k.lower() for k in chosen.keys()):
                if name not in signed:
                    del chosen[name]
            missing = [h for h in signed if h not in chosen]
            if missing:
                fail("signed headers missing from the request: %r" % missing)
            return chosen

    body = base64.b64decode(captured["body_b64"])
    request = AWSRequest(
        method=captured["method"],
        url=captured["url"],
        data=body,
    )
    for k, v in headers:
        if k.lower() != "authorization":
            request.headers[k] = v  # appends: repeated headers stay repeated
    request.context["timestamp"] = amz_date
    creds = Credentials(captured["access_key"], captured["secret"], captured["session_token"])
    signer = SignOnly(creds, service, region)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    if expected != sent_signature:
        fail("botocore computes %s, the request carries %s\ncanonical request:\n%s"
             % (expected, sent_signature, canonical))
    print("ok " + expected)


def call(url, stream, access_key, secret, token, expect):
    client = boto3.client(
        "firehose",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=None if token == "-" else token,
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    try:
        out = client.put_record_batch(
            DeliveryStreamName=stream,
            Records=[{"Data": b'{"from":"botocore"}\n'}, {"Data": b"\x00\xff binary"}],
        )
        outcome = "ok" if out["FailedPutCount"] == 0 else "failed records"
    except botocore.exceptions.ClientError as e:
        outcome = e.response["Error"]["Code"]
    if outcome != expect:
        fail("expected %s, got %s" % (expect, outcome))
    print(outcome)


if __name__ == "__main__":
    if sys.argv[1] == "recompute":
        recompute(sys.argv[2])
    elif sys.argv[1] == "call":
        call(*sys.argv[2:8])
    else:
        fail("unknown mode " + sys.argv[1])
