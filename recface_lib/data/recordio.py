"""MXNet RecordIO (``.rec`` + ``.idx``) as used by InsightFace datasets, without mxnet.

Layout of one record on disk::

    uint32 magic (0xced7230a) | uint32 lrec | payload (padded to 4 bytes)

``lrec >> 29`` is the continuation flag (0 whole, 1 first, 2 middle, 3 last part) and the low 29 bits
the part length. The dmlc writer splits a payload wherever the magic word appears at a 4-byte
aligned position and drops it; the reader puts it back between parts.

The payload of an image record starts with an ``IRHeader`` (``<IfQQ``: flag, label, id, id2); when
``flag > 0`` it is followed by ``flag`` float32 labels (a vector label), then the encoded image.
In InsightFace datasets record 0 has a vector label ``[a, b]``: image records are ``1..a-1`` and
identity records ``a..b-1``, whose labels give each identity's image range ``[start, end)``.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import FormatError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """An image record's payload: IRHeader (+ vector label) + image bytes."""
    label = header.label
    if isinstance(label, (tuple, list, np.ndarray)):
        vec = np.asarray(label, dtype="<f4")
        return _HEADER.pack(len(vec), 0.0, header.id, header.id2) + vec.tobytes() + payload
    return _HEADER.pack(0, float(label), header.id, header.id2) + payload


def unpack_record(data: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """Split a record payload into its IRHeader and the image bytes."""
    if len(data) < _HEADER.size:
        raise FormatError(f"{where}: payload of {len(data)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id1, id2 = _HEADER.unpack_from(data)
    rest = data[_HEADER.size:]
    if flag > 0:
        need = 4 * flag
        if len(rest) < need:
            raise FormatError(f"{where}: IRHeader announces {flag} float labels but only {len(rest)} bytes follow")
        vec = tuple(float(x) for x in np.frombuffer(rest[:need], dtype="<f4"))
        return IRHeader(flag, vec, id1, id2), rest[need:]
    return IRHeader(flag, label, id1, id2), rest


def _read_exact(f, n: int, path: Path, offset: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise FormatError(f"{path}: truncated at offset {offset}: wanted {n} bytes of {what}, file ends after {len(data)}")
    return data


class RecordIOReader:
    """Random-access (with ``.idx``) or sequential reader of a ``.rec`` file.

    >>> with RecordIOReader("train.rec") as r:      # finds train.idx beside it
    ...     header, img = r.read_image(1)
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None, use_idx: bool = True):
        self.path = Path(rec_path)
        if not self.path.is_file():
            raise FormatError(f"{self.path}: no such .rec file")
        self.size = self.path.stat().st_size
        self._f = open(self.path, "rb")
        self.index: dict[int, int] | None = None
        if use_idx:
            idx = Path(idx_path) if idx_path else self.path.with_suffix(".idx")
            if idx.is_file():
                self.index = self._load_idx(idx)
            elif idx_path:
                raise FormatError(f"{idx}: no such .idx file")

    # -- index -------------------------------------------------------------------------------
    def _load_idx(self, idx: Path) -> dict[int, int]:
        index: dict[int, int] = {}
        with open(idx, "r", encoding="ascii", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
                    raise FormatError(f"{idx}: line {lineno}: expected 'key<TAB>offset', got {line[:60]!r}")
                key, off = int(parts[0]), int(parts[1])
                if off + 8 > self.size:
                    raise FormatError(f"{idx}: line {lineno}: record {key} at offset {off} points past the end of {self.path.name} ({self.size} bytes)")
                index[key] = off
        return index

    @property
    def keys(self) -> list[int]:
        if self.index is None:
            raise FormatError(f"{self.path}: no .idx file, random access unavailable (iterate sequentially)")
        return sorted(self.index)

    # -- raw records -------------------------------------------------------------------------
    def _read_at(self, offset: int) -> tuple[bytes, int]:
        """Read one (possibly multi-part) record starting at ``offset``; return payload, next offset."""
        f = self._f
        f.seek(offset)
        parts: list[bytes] = []
        pos = offset
        while True:
            head = f.read(8)
            if len(head) == 0 and not parts and pos == offset:
                raise EOFError
            if len(head) != 8:
                raise FormatError(f"{self.path}: truncated at offset {pos}: record header needs 8 bytes, file ends after {len(head)}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise FormatError(f"{self.path}: bad magic 0x{magic:08x} at offset {pos} (expected 0x{MAGIC:08x}); not a RecordIO file or corrupt")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            data = _read_exact(f, length, self.path, pos + 8, "record payload")
            pad = (-length) % 4
            if pad:
                f.read(pad)
            pos += 8 + length + pad
            parts.append(data)
            if cflag in (0, 3):
                break
            if cflag not in (1, 2):
                raise FormatError(f"{self.path}: invalid continuation flag {cflag} at offset {pos}")
        return _MAGIC_BYTES.join(parts), pos

    def read_idx(self, key: int) -> bytes:
        if self.index is None:
            raise FormatError(f"{self.path}: no .idx file, cannot read record {key} by key")
        if key not in self.index:
            raise FormatError(f"{self.path}: record {key} is not in the .idx file")
        try:
            return self._read_at(self.index[key])[0]
        except EOFError:
            raise FormatError(f"{self.path}: record {key} at offset {self.index[key]} lies at the end of the file") from None

    def read_image(self, key: int) -> tuple[IRHeader, bytes]:
        return unpack_record(self.read_idx(key), f"{self.path} record {key}")

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Sequential scan: (offset, payload) for every record, no .idx needed."""
        offset = 0
        while offset < self.size:
            try:
                payload, nxt = self._read_at(offset)
            except EOFError:
                return
            yield offset, payload
            offset = nxt

    # -- InsightFace layout ------------------------------------------------------------------
    def identity_ranges(self) -> dict[int, tuple[int, int]] | None:
        """``{class: (first_record, end_record)}`` from record 0 and the identity records, or None
        when the file has no such header (plain image-only RecordIO)."""
        if self.index is None or 0 not in self.index:
            return None
        header, _ = self.read_image(0)
        if header.flag <= 0 or not isinstance(header.label, tuple) or len(header.label) < 2:
            return None
        if not all(float(x).is_integer() for x in header.label[:2]):
            raise FormatError(f"{self.path}: record 0 declares identity records {header.label[:2]!r}: not whole numbers (damaged header)")
        a, b = int(header.label[0]), int(header.label[1])
        last = max(self.index)
        if not 0 < a <= b or last != b - 1:
            raise FormatError(f"{self.path}: record 0 declares identity records {a}..{b - 1}, but the index ends at key "
                              f"{last}: the header or the .idx is damaged")
        ranges: dict[int, tuple[int, int]] = {}
        for cls, key in enumerate(range(a, b)):
            h, _ = self.read_image(key)
            if (not isinstance(h.label, tuple) or len(h.label) < 2
                    or not all(float(x).is_integer() for x in h.label[:2])):
                raise FormatError(f"{self.path}: identity record {key} has label {h.label!r}, expected an image range [start, end)")
            ranges[cls] = (int(h.label[0]), int(h.label[1]))
        # the ranges must share out the image records 1..a-1 exactly: no gap, no overlap
        images = sum(1 for k in self.index if 0 < k < a)
        pos = 1
        for cls, (s0, e0) in sorted(ranges.items(), key=lambda kv: kv[1]):
            if s0 != pos or e0 < s0 or e0 > a:
                raise FormatError(f"{self.path}: identity {cls} declares images [{s0}, {e0}), expected to start at {pos} "
                                  f"and end by {a}: identity records damaged")
            pos = e0
        if pos - 1 != images:
            raise FormatError(f"{self.path}: identity ranges cover {pos - 1} image records, the index has {images}")
        return ranges

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "RecordIOReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rec_as_folder(rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
    """A ``.rec/.idx`` as an :class:`~.image_folder.ImageFolder`: class ``000042`` -> items
    ``<key>.rec`` naming its records. Two layouts: InsightFace's (record 0 holds the identity range,
    identity records hold image ranges) and mxnet ``im2rec``'s (no header record; every record's
    header carries its label, the keys are the ``.lst`` indices), read in one sequential pass."""
    from .image_folder import ImageFolder

    rec_path = Path(rec_path)
    with RecordIOReader(rec_path, idx_path) as r:
        if r.index is None:
            raise FormatError(f"{rec_path}: reading a .rec by identity needs its .idx beside it")
        ranges = r.identity_ranges()
        files: dict[str, list[Path]] = {}
        if ranges is not None:
            for c, (a, b) in sorted(ranges.items()):
                files[f"{c:06d}"] = [Path(f"{k}.rec") for k in range(a, b)]
        else:
            key_at = {off: key for key, off in r.index.items()}
            for offset, payload in r:
                key = key_at.get(offset)
                if key is None:
                    continue  # a record the .idx does not list
                header, img = unpack_record(payload, f"{rec_path} record {key}")
                if img:
                    files.setdefault(f"{label_of(header):06d}", []).append(Path(f"{key}.rec"))
    return ImageFolder(rec_path, sorted(files), files)


def read_lst(path: str | os.PathLike) -> dict[int, tuple[float, str]]:
    """An im2rec ``.lst``: ``index<TAB>label[<TAB>label...]<TAB>path`` -> {index: (first label, path)}."""
    p = Path(path)
    out = {}
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise FormatError(f"{p}: cannot read ({e.strerror})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            out[int(parts[0])] = (float(parts[1]), parts[-1])
        except (ValueError, IndexError):
            raise FormatError(f"{p}: line {n}: expected 'index<TAB>label<TAB>path', got {line[:60]!r}") from None
    return out


def label_of(header: IRHeader) -> int:
    """Class label of an image record (the first element of a vector label)."""
    lab = header.label
    return int(lab[0]) if isinstance(lab, tuple) else int(lab)


def _split_payload(payload: bytes) -> list[bytes]:
    """Split at 4-byte aligned occurrences of the magic word (the dmlc writer's rule)."""
    parts, start = [], 0
    i = 0
    n = len(payload)
    while i + 4 <= n:
        if payload[i:i + 4] == _MAGIC_BYTES:
            parts.append(payload[start:i])
            start = i + 4
        i += 4
    parts.append(payload[start:])
    return parts


class RecordIOWriter:
    """Write ``.rec`` + ``.idx`` atomically (temporary names, renamed on close)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.path.with_suffix(".idx")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = self.path.with_name(f".{self.path.name}.tmp-write")
        self._tmp_idx = self.idx_path.with_name(f".{self.idx_path.name}.tmp-write")
        self._f = open(self._tmp_rec, "wb")
        self._idx: list[tuple[int, int]] = []
        self._closed = False

    def write(self, key: int, payload: bytes) -> None:
        self._idx.append((key, self._f.tell()))
        parts = _split_payload(payload)
        for i, part in enumerate(parts):
            if len(parts) == 1:
                cflag = 0
            else:
                cflag = 1 if i == 0 else (3 if i == len(parts) - 1 else 2)
            if len(part) > _LEN_MASK:
                raise ValueError(f"record {key}: part of {len(part)} bytes exceeds RecordIO's 2^29 limit")
            self._f.write(struct.pack("<II", MAGIC, (cflag << 29) | len(part)))
            self._f.write(part)
            self._f.write(b"\0" * ((-len(part)) % 4))

    def write_image(self, key: int, header: IRHeader, image: bytes) -> None:
        self.write(key, pack_record(header, image))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._f.close()
        with open(self._tmp_idx, "w") as f:
            for key, off in self._idx:
                f.write(f"{key}\t{off}\n")
        os.replace(self._tmp_rec, self.path)
        os.replace(self._tmp_idx, self.idx_path)

    def abort(self) -> None:
        self._closed = True
        self._f.close()
        for p in (self._tmp_rec, self._tmp_idx):
            if p.exists():
                p.unlink()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_insightface_rec(rec_path: str | os.PathLike, images_by_class: Sequence[Sequence[bytes]]) -> Path:
    """Write an InsightFace-layout ``.rec/.idx``: record 0 header, image records, identity records.

    ``images_by_class[c]`` are the encoded images of class ``c``. Used to make test fixtures and
    small datasets; the layout is what ``RecordIOReader.identity_ranges`` expects."""
    n_images = sum(len(c) for c in images_by_class)
    first_id = n_images + 1
    with RecordIOWriter(rec_path) as w:
        w.write_image(0, IRHeader(2, (float(first_id), float(first_id + len(images_by_class))), 0, 0), b"")
        key = 1
        ranges = []
        for cls, imgs in enumerate(images_by_class):
            start = key
            for img in imgs:
                w.write_image(key, IRHeader(0, float(cls), key, 0), img)
                key += 1
            ranges.append((start, key))
        for cls, (s, e) in enumerate(ranges):
            w.write_image(first_id + cls, IRHeader(2, (float(s), float(e)), first_id + cls, 0), b"")
    return Path(rec_path)
