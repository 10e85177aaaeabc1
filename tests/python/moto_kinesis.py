"""Helper for the moto Kinesis end-to-end test.

    moto_kinesis.py setup ENDPOINT STREAM SHARDS   create a stream of SHARDS shards, wait until active
    moto_kinesis.py read ENDPOINT STREAM           print every record of every shard (GetRecords from
                                                   TRIM_HORIZON), one JSON line each:
                                                   {"shard": ..., "key": ..., "data": base64}
"""
import base64
import json
import sys
import time

import boto3

KW = dict(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


def main():
    cmd, endpoint, stream = sys.argv[1], sys.argv[2], sys.argv[3]
    k = boto3.client("kinesis", endpoint_url=endpoint, **KW)
    if cmd == "setup":
        k.create_stream(StreamName=stream, ShardCount=int(sys.argv[4]))
        for _ in range(100):
            if k.describe_stream(StreamName=stream)["StreamDescription"]["StreamStatus"] == "ACTIVE":
                return
            time.sleep(0.1)
        sys.exit("stream never became active")
    elif cmd == "read":
        shards = k.list_shards(StreamName=stream)["Shards"]
        for shard in shards:
            sid = shard["ShardId"]
            it = k.get_shard_iterator(StreamName=stream, ShardId=sid,
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                page = k.get_records(ShardIterator=it, Limit=10000)
                for r in page["Records"]:
                    print(json.dumps({"shard": sid, "key": r["PartitionKey"],
                                      "data": base64.b64encode(r["Data"]).decode()}))
                if not page["Records"]:
                    break
                it = page.get("NextShardIterator")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
