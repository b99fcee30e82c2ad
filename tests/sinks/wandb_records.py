"""Read the records of an offline ``run-<id>.wandb`` file (wandb 0.31 keeps history/summary only there).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of
chunks, each ``crc32 (4) | length (2) | type (1) | payload``; types FULL=1, FIRST=2, MIDDLE=3, LAST=4 and a block
tail shorter than a chunk header is zero padding. Payloads are ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
import time

BLOCK = 32 * 1024
HEADER = 7


def records(path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, "not a wandb datastore file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if pos + HEADER + length > len(data):  # the writer is mid-chunk: the rest is not there yet
            return
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            continue
        pending += payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def wait_for_exit(path, timeout: float = 60.0) -> list:
    """The records of ``path`` once its ``exit`` record is there. ``run.finish()`` returns before wandb's service
    process has flushed an offline run to disk (seen here: a 7-byte file, header only, right after ``finish``; and a
    record half written, which does not parse until the rest is there)."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            got = list(records(path))
        except DecodeError:  # read while a record was half written: read again
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        if any(r.WhichOneof("record_type") == "exit" for r in got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def read_run(path) -> dict:
    """{"run": RunRecord, "config": {...}, "history": [rows], "summary": {...}, "exit_code": int}."""
    out = {"run": None, "config": {}, "history": [], "summary": {}, "exit_code": None}
    for r in wait_for_exit(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update(_items(r.run.config.update))
        elif kind == "config":
            out["config"].update(_items(r.config.update))
        elif kind == "history":
            out["history"].append(_items(r.history.item))
        elif kind == "summary":
            out["summary"].update(_items(r.summary.update))
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out
