import struct

import numpy as np
import pytest

from conftest import last_json, run_cli
from recface_lib.convert import rec2jpg
from recface_lib.data.recordio import (MAGIC, IRHeader, RecordIOReader, RecordIOWriter, label_of,
                                       unpack_record, write_insightface_rec)
from recface_lib.errors import FormatError
from recface_lib.io_utils import encode_image

MAGIC_BYTES = struct.pack("<I", MAGIC)


def _jpeg(seed: int, size=(24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_image(rng.integers(0, 255, (*size, 3), dtype=np.uint8), ".jpg")


@pytest.fixture
def small_rec(tmp_path):
    classes = [[_jpeg(10 * c + i) for i in range(c + 2)] for c in range(4)]
    rec = write_insightface_rec(tmp_path / "train.rec", classes)
    return rec, classes


def test_roundtrip_record_for_record(tmp_path):
    payloads = [b"", b"abc", b"x" * 1001, MAGIC_BYTES, b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES,
                MAGIC_BYTES * 3 + b"tail", bytes(range(256)) * 7]
    with RecordIOWriter(tmp_path / "t.rec") as w:
        for k, p in enumerate(payloads):
            w.write(k, p)
    with RecordIOReader(tmp_path / "t.rec") as r:
        assert r.keys == list(range(len(payloads)))
        for k, p in enumerate(payloads):
            assert r.read_idx(k) == p
        # sequential scan gives the same payloads in order
        assert [p for _, p in r] == payloads
    with RecordIOReader(tmp_path / "t.rec", use_idx=False) as r:
        assert r.index is None
        assert [p for _, p in r] == payloads


def test_irheader_scalar_and_vector_labels(tmp_path):
    with RecordIOWriter(tmp_path / "h.rec") as w:
        w.write_image(0, IRHeader(0, 7.0, 11, 0), b"IMG")
        w.write_image(1, IRHeader(3, (1.0, 2.5, 3.0), 12, 5), b"IMG2")
    with RecordIOReader(tmp_path / "h.rec") as r:
        h0, i0 = r.read_image(0)
        h1, i1 = r.read_image(1)
    assert (h0.flag, h0.label, h0.id, i0) == (0, 7.0, 11, b"IMG")
    assert (h1.flag, h1.label, h1.id, h1.id2, i1) == (3, (1.0, 2.5, 3.0), 12, 5, b"IMG2")
    assert label_of(h1) == 1


def test_insightface_layout_and_rec2jpg(small_rec, tmp_path):
    rec, classes = small_rec
    with RecordIOReader(rec) as r:
        ranges = r.identity_ranges()
    assert len(ranges) == 4
    assert [e - s for s, e in ranges.values()] == [len(c) for c in classes]
    out = tmp_path / "jpg"
    s = rec2jpg(rec, out, show_progress=False)
    assert s["classes"] == 4 and s["images_written"] == sum(map(len, classes))
    for c, imgs in enumerate(classes):
        files = sorted((out / str(c)).iterdir(), key=lambda p: int(p.stem))
        assert [f.read_bytes() for f in files] == imgs  # raw bytes, not re-encoded
    # a rerun skips finished identities and writes nothing
    s2 = rec2jpg(rec, out, show_progress=False)
    assert s2["images_written"] == 0 and s2["classes_skipped"] == 4


def test_rec2jpg_resumes_after_interruption(small_rec, tmp_path):
    rec, classes = small_rec
    out = tmp_path / "jpg"
    rec2jpg(rec, out, limit_classes=2, show_progress=False)
    (out / ".2.partial").mkdir()  # a crash mid-identity leaves a hidden partial folder
    (out / ".2.partial" / "0.jpg").write_bytes(b"half")
    s = rec2jpg(rec, out, show_progress=False)
    assert s["classes_skipped"] == 2 and s["classes_written"] == 2
    assert (out / "2" / "0.jpg").read_bytes() == classes[2][0]
    assert not (out / ".2.partial").exists()


def test_rec2jpg_sequential_without_idx(small_rec, tmp_path):
    rec, classes = small_rec
    rec.with_suffix(".idx").unlink()
    s = rec2jpg(rec, tmp_path / "seq", show_progress=False)
    assert s["images_written"] == sum(map(len, classes))
    assert (tmp_path / "seq" / "3" / "4.jpg").read_bytes() == classes[3][4]


def test_truncated_rec_names_file_and_offset(small_rec, tmp_path):
    rec, _ = small_rec
    data = rec.read_bytes()
    bad = tmp_path / "trunc.rec"
    bad.write_bytes(data[: len(data) // 2 + 3])
    with RecordIOReader(bad, use_idx=False) as r:
        with pytest.raises(FormatError, match=r"trunc\.rec: truncated at offset \d+"):
            list(r)


def test_idx_past_eof(small_rec, tmp_path):
    rec, _ = small_rec
    bad = tmp_path / "short.rec"
    bad.write_bytes(rec.read_bytes()[:200])
    (tmp_path / "short.idx").write_text(rec.with_suffix(".idx").read_text())
    with pytest.raises(FormatError, match=r"short\.idx: line \d+: record \d+ at offset \d+ points past the end"):
        RecordIOReader(bad)


def test_wrong_magic(tmp_path):
    bad = tmp_path / "bad.rec"
    bad.write_bytes(b"\x00" * 64)
    with RecordIOReader(bad, use_idx=False) as r:
        with pytest.raises(FormatError, match=r"bad\.rec: bad magic 0x00000000 at offset 0"):
            list(r)


def test_short_irheader():
    with pytest.raises(FormatError, match="shorter than the 24-byte IRHeader"):
        unpack_record(b"abc", "x.rec record 5")


def test_cli_rec2jpg_json(small_rec, tmp_path):
    rec, classes = small_rec
    proc = run_cli("rec2jpg", "--rec", str(rec), "--output", str(tmp_path / "o"), "--json")
    s = last_json(proc)
    assert s["ok"] and s["images_written"] == sum(map(len, classes))
    bad = run_cli("rec2jpg", "--rec", str(tmp_path / "nope.rec"), "--output", str(tmp_path / "o2"), "--json", check=False)
    assert bad.returncode == 1 and "nope.rec" in bad.stderr and last_json(bad)["ok"] is False
