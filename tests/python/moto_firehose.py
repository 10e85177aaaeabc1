"""Helper for the moto end-to-end tests.

    moto_firehose.py setup ENDPOINT BUCKET STREAM   create an S3 bucket and a DirectPut delivery
                                                    stream writing into it
    moto_firehose.py read ENDPOINT BUCKET           print every object's bytes, concatenated in
                                                    key order (moto writes one object per
                                                    PutRecordBatch, records without delimiter)
"""
import sys

import boto3

KW = dict(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


def main():
    cmd, endpoint, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    s3 = boto3.client("s3", endpoint_url=endpoint, **KW)
    if cmd == "setup":
        stream = sys.argv[4]
        s3.create_bucket(Bucket=bucket)
        fh = boto3.client("firehose", endpoint_url=endpoint, **KW)
        fh.create_delivery_stream(
            DeliveryStreamName=stream,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{bucket}",
            },
        )
    elif cmd == "read":
        out = sys.stdout.buffer
        token = None
        while True:
            kw = dict(Bucket=bucket)
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_objects_v2(**kw)
            for obj in page.get("Contents", []):
                out.write(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
