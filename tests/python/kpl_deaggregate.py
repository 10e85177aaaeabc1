"""Reads KPL aggregated records with the aws-kinesis-agg package (PyPI), an implementation
independent of the relay's (prost + md-5), the way a Lambda consumer deaggregates them.

Usage:
  kpl_deaggregate.py DIR
      DIR holds pairs NAME.bin (the data of one Kinesis record) and NAME.key (its partition
      key, UTF-8). Prints one JSON document: a list, in NAME order, of
      {"name", "aggregated", "complete", "records": [{"partition_key", "explicit_hash_key",
      "data_b64"}...]}.
      "aggregated": aws-kinesis-agg took the record as aggregated (it passes anything else
      through as one plain record, so a broken digest or magic shows up here, not as an error).
      "complete": the protobuf has every proto2 `required` field (what the KCL's Java parser
      insists on; a proto3-style encoder leaves out index 0 and empty data).
"""
import base64
import json
import os
import sys

import aws_kinesis_agg
# First: it puts its own directory on sys.path, which its messages_pb2 needs (it imports
# config_pb2 as a top-level module).
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from aws_kinesis_agg import messages_pb2


def complete(blob):
    message = messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(blob[len(aws_kinesis_agg.MAGIC):-aws_kinesis_agg.DIGEST_SIZE])
    except Exception:
        return False
    return message.IsInitialized()


def read(directory, name):
    with open(os.path.join(directory, name + ".bin"), "rb") as f:
        blob = f.read()
    with open(os.path.join(directory, name + ".key"), encoding="utf-8") as f:
        key = f.read()
    record = {
        "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "PartitionKey": key,
        "ApproximateArrivalTimestamp": 0,
        "Data": blob,
    }
    users = []
    aggregated = True
    for user in iter_deaggregate_records(record, data_format="Boto3"):
        k = user["kinesis"]
        if k.get("aggregated"):
            data_b64 = k["data"].decode("ascii")
        else:
            aggregated = False
            data_b64 = base64.b64encode(k["data"]).decode("ascii")
        users.append({
            "partition_key": k["partitionKey"],
            "explicit_hash_key": k.get("explicitHashKey"),
            "data_b64": data_b64,
        })
    return {"name": name, "aggregated": aggregated, "complete": complete(blob), "records": users}


def main():
    directory = sys.argv[1]
    names = sorted(n[:-4] for n in os.listdir(directory) if n.endswith(".bin"))
    json.dump([read(directory, n) for n in names], sys.stdout)


if __name__ == "__main__":
    main()
