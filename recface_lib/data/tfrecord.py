"""Sharded TFRecords (stage 3, build) and the tf.data input pipeline that reads them.

Example keys (DESIGN.md): ``image`` (encoded JPEG/PNG bytes, or with ``binary_img: false`` the
image path as bytes), ``label`` (int64). ``metadata.json`` beside the shards records num_samples,
num_classes, class names in label order, every shard's name, record count and byte size, image
size, colour order, source and parameters; readers check the shards against it, so a truncated
shard is reported by name before training starts.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Sequence

import google_crc32c
import numpy as np

from ..errors import FormatError

# -- writing (no TensorFlow needed: the TFRecord framing and tf.train.Example are small) -----------
def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint((num << 3) | wire) + payload


def _ld(num: int, data: bytes) -> bytes:
    return _field(num, 2, _varint(len(data)) + data)


def example_bytes(features: dict[str, bytes | int | Sequence[int]]) -> bytes:
    """Serialise a tf.train.Example with bytes and int64 features (sorted keys: deterministic)."""
    entries = b""
    for key in sorted(features):
        v = features[key]
        if isinstance(v, (bytes, bytearray)):
            feat = _ld(1, _ld(1, bytes(v)))  # Feature.bytes_list = BytesList{value}
        else:
            vals = [int(v)] if isinstance(v, (int, np.integer)) else [int(x) for x in v]
            packed = b"".join(_varint(x & 0xFFFFFFFFFFFFFFFF) for x in vals)
            feat = _ld(3, _ld(1, packed))  # Feature.int64_list = Int64List{packed value}
        entries += _ld(1, _ld(1, key.encode()) + _ld(2, feat))  # map entry {key, value}
    return _ld(1, entries)  # Example.features = Features{feature map}


class ShardWriter:
    """Write TFRecord framing: len (u64), masked crc(len) (u32), data, masked crc(data) (u32)."""

    def __init__(self, f):
        self.f = f
        self.count = 0

    def write(self, record: bytes) -> None:
        n = struct.pack("<Q", len(record))
        self.f.write(n + struct.pack("<I", _masked_crc(n)) + record + struct.pack("<I", _masked_crc(record)))
        self.count += 1


def record_spans(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Each record's (offset of its data, length), by walking the shard's framing (headers only);
    a clear error at a truncated record."""
    p = Path(path)
    size = p.stat().st_size
    spans, off = [], 0
    with open(p, "rb") as f:
        while off < size:
            head = f.read(12)
            n = len(spans)
            if len(head) < 12:
                raise FormatError(f"{p}: truncated record {n} at offset {off}: header needs 12 bytes, {len(head)} left")
            (length,) = struct.unpack("<Q", head[:8])
            if off + 12 + length + 4 > size:
                raise FormatError(f"{p}: truncated record {n} at offset {off}: needs {length + 16} bytes, {size - off} left")
            f.seek(length + 4, 1)
            spans.append((off + 12, length))
            off += 16 + length
    return spans


def scan_shard(path: str | os.PathLike) -> int:
    """Count the records of a shard by walking its framing; a clear error at a truncated record."""
    return len(record_spans(path))


def read_records(path: str | os.PathLike):
    """Yield the raw serialized records of a shard, checking both CRCs (Python: checks and tests)."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        i = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise FormatError(f"{p}: truncated record {i}")
            if struct.unpack("<I", head[8:])[0] != _masked_crc(head[:8]):
                raise FormatError(f"{p}: record {i} at offset {f.tell() - 12}: length CRC mismatch (corrupt shard)")
            (length,) = struct.unpack("<Q", head[:8])
            if f.tell() + length + 4 > size:
                raise FormatError(f"{p}: truncated record {i}: needs {length + 16} bytes")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise FormatError(f"{p}: truncated record {i}")
            if struct.unpack("<I", tail)[0] != _masked_crc(data):
                raise FormatError(f"{p}: record {i}: CRC mismatch (corrupt shard)")
            yield data
            i += 1


def parse_example(record: bytes) -> dict[str, bytes | list[int]]:
    """Minimal tf.train.Example parser for the keys we write (bytes and int64 lists)."""
    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            key, i = _read_varint(buf, i)
            num, wire = key >> 3, key & 7
            if wire == 2:
                ln, i = _read_varint(buf, i)
                yield num, buf[i:i + ln]
                i += ln
            elif wire == 0:
                v, i = _read_varint(buf, i)
                yield num, v
            else:
                raise FormatError(f"unsupported protobuf wire type {wire}")

    out: dict = {}
    for num, feats in fields(record):
        for _, entry in fields(feats):
            k = v = None
            for n2, val in fields(entry):
                if n2 == 1:
                    k = val.decode()
                else:
                    v = val
            for kind, lst in fields(v):
                for _, payload in fields(lst):
                    if kind == 1:
                        out[k] = payload
                    else:
                        vals, j = [], 0
                        while j < len(payload):
                            x, j = _read_varint(payload, j)
                            vals.append(x - (1 << 64) if x >= 1 << 63 else x)
                        out[k] = vals
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


# -- metadata and shard checks ---------------------------------------------------------------------
def load_metadata(path) -> dict:
    """A build output's metadata.json (``_dir`` added), or, for a list of them, their union
    (``union_metadata``)."""
    if isinstance(path, (list, tuple)):
        return union_metadata(path)
    p = Path(path)
    mp = p / "metadata.json" if p.is_dir() else p
    if not mp.is_file():
        raise FormatError(f"{mp}: no metadata.json (build the dataset with `recface build`)")
    try:
        meta = json.loads(mp.read_text())
    except json.JSONDecodeError as e:
        raise FormatError(f"{mp}: not valid JSON ({e})") from e
    for k in ("num_samples", "num_classes", "shards"):
        if k not in meta:
            raise FormatError(f"{mp}: missing key {k!r}")
    meta["_dir"] = str(mp.parent)
    return meta


def union_metadata(paths) -> dict:
    """Several build outputs trained as one dataset (facenet's ``--data_dir a:b``): records are the
    union, each part's labels shifted past the classes of the parts before it (``label_offset``
    on every shard, shard names made absolute), class and sample counts added up, each part's
    path, content key and counts in ``_parts``. Parts must share the preprocessing contract (else
    one line naming both) and be labelled."""
    from ..errors import ConfigError

    if len(paths) == 1:
        return load_metadata(paths[0])
    if not paths:
        raise ConfigError("dataset: an empty list; give a build output, or several")
    parts = [load_metadata(p) for p in paths]
    first = parts[0].get("preprocessing")
    shards, names, parts_info, offset = [], [], [], 0
    for path, m in zip(paths, parts):
        if m.get("preprocessing") != first:
            keys = sorted(k for k in set(first or {}) | set(m.get("preprocessing") or {})
                          if (first or {}).get(k) != (m.get("preprocessing") or {}).get(k))
            raise ConfigError(f"dataset: {paths[0]} and {path} were made with different preprocessing "
                              f"({', '.join(keys) or 'one has none'}): train one model on data aligned the same way")
        if not m.get("labelled", True):
            raise ConfigError(f"dataset: {path} is unlabelled; only labelled build outputs are trained as one")
        d = Path(m["_dir"])
        by_path = m.get("image_storage") == "path"
        shards += [{**sh, "name": str(d / sh["name"]), "label_offset": offset, "by_path": by_path} for sh in m["shards"]]
        n = int(m["num_classes"])
        names += list(m.get("class_names") or [f"{Path(path).name}/{i}" for i in range(n)])
        parts_info.append({"path": str(path), "key": dataset_key(m), "num_classes": n,
                           "num_samples": int(m["num_samples"]), "label_offset": offset})
        offset += n
    sizes = {tuple(m.get("image_size") or ()) for m in parts}
    return {"num_samples": sum(x["num_samples"] for x in parts_info), "num_classes": offset, "shards": shards,
            "class_names": names, "preprocessing": first, "labelled": True,
            "image_size": list(sizes.pop()) if len(sizes) == 1 and () not in sizes else None,
            "_dir": parts[0]["_dir"], "_parts": parts_info}


def dataset_key(meta: dict) -> str:
    """The data's content key (what training checkpoints and teacher embeddings are tied to):
    every shard's name, size and first 64 KiB."""
    import hashlib

    h = hashlib.sha256()
    d = Path(meta["_dir"])
    for sh in meta["shards"]:
        h.update(f"{sh['name']}:{sh['bytes']}".encode())
        p = d / sh["name"]
        if p.is_file():
            with open(p, "rb") as f:
                h.update(f.read(1 << 16))
    return h.hexdigest()[:16]


def data_error(meta: dict, err: Exception) -> FormatError:
    """A TensorFlow error met while reading the training data, as a FormatError naming the shard
    (and record) at fault: the shards are checked record by record (both CRCs, and each label
    against metadata.json's classes) to find it; else the dataset and TensorFlow's first line."""
    d = Path(meta["_dir"])
    first = str(getattr(err, "message", err)).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    n = int(meta.get("num_classes", 0))
    for sh in meta.get("shards", []):
        p = d / sh["name"]
        try:
            for i, rec in enumerate(read_records(p)):
                try:
                    lab = parse_example(rec).get("label", [0])
                except (IndexError, FormatError, UnicodeDecodeError):
                    return FormatError(f"{p}: record {i} is not a valid tf.train.Example")
                if n and not all(0 <= x < n for x in lab):
                    return FormatError(f"{p}: record {i} has label {lab[0]}, outside the {n} classes of "
                                       f"{d / 'metadata.json'} (shards and metadata.json do not belong together)")
        except FormatError as e:
            return e
        except OSError as e:
            return FormatError(f"{p}: cannot read ({e.strerror})")
    return FormatError(f"{d}: the training data could not be read: {first}")


def check_shards(meta: dict) -> list[Path]:
    """Every shard exists with the byte size recorded at build time; else an error naming it."""
    d = Path(meta["_dir"])
    paths = []
    for s in meta["shards"]:
        p = d / s["name"]
        if not p.is_file():
            raise FormatError(f"{p}: shard listed in metadata.json is missing")
        size = p.stat().st_size
        if size != s["bytes"]:
            raise FormatError(f"{p}: shard is {size} bytes, metadata.json recorded {s['bytes']}: truncated or changed")
        paths.append(p)
    return paths
