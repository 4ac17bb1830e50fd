"""Read the records of an offline W&B run (``run-<id>.wandb``): wandb's transaction log, a LevelDB-style log of
protobuf ``Record``s in 32 KiB blocks (header ``:W&B``, magic 0xBEE1, version 1)."""

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")  # crc32c, length, type (1 full, 2 first, 3 middle, 4 last)


def wandb_records(path: Path) -> list:
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data)
    assert (ident, magic, version) [:2] == (b":W&B", 0xBEE1), (ident, magic, version)
    records, pending, offset = [], b"", HEADER.size
    while offset + RECORD_HEADER.size <= len(data):
        left = BLOCK - offset % BLOCK
        if left < RECORD_HEADER.size:
            offset += left
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        if kind == 0 and length == 0:
            break
        pending += data[offset : offset + length]
        offset += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records
