"""Seeded corruption fuzz (issue 13): 200 random corruptions (truncate, flip bytes, zero a range)
of a ``.rec``, a ``.bin``, a TFRecord shard and a bundle each. Every one must end in a clean
recface error (a ``RecfaceError`` naming the file) or a correct result: never another exception,
a hang, or a silently wrong output.

"Correct" per format: RecordIO and ``.bin`` pickles carry no checksum over image bytes, so a
corruption inside an image payload is carried over verbatim (the structure - identities, files,
pairs, labels - must still equal the original's and the differing bytes must lie within the
corrupted bytes); TFRecord and zip have CRCs, so any change there must be an error."""
from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from recface_lib.errors import RecfaceError
from recface_lib.io_utils import encode_image

N = 200


def _jpeg(seed: int, size=(24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_image(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), ".jpg")


def corrupt(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    """(corrupted bytes, number of bytes changed or removed)."""
    kind = rng.choice(("truncate", "flip", "zero"))
    if kind == "truncate":
        cut = rng.randrange(0, len(data))
        return data[:cut], len(data) - cut
    b = bytearray(data)
    if kind == "flip":
        n = rng.randint(1, 8)
        for _ in range(n):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), n
    start = rng.randrange(len(b))
    end = min(len(b), start + rng.randint(1, 64))
    b[start:end] = bytes(end - start)
    return bytes(b), end - start


class Deadline:
    """Each case must finish in ``seconds`` (a hang fails the test instead of blocking CI)."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def fire(*_):
            raise TimeoutError(f"no result within {self.seconds} s (a hang)")
        self.old = signal.signal(signal.SIGALRM, fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def fuzz(original: Path, run, check, tmp: Path, seed: int, named=lambda p, k: p.stem) -> dict:
    """Run ``run(path, k)`` on N corrupted copies; ``check(result, changed)`` judges a success."""
    rng = random.Random(seed)
    data = original.read_bytes()
    outcome = {"errors": 0, "correct": 0}
    for k in range(N):
        bad, changed = corrupt(data, rng)
        while bad == data:  # zeroing bytes that were already zero changes nothing: not a corruption
            bad, changed = corrupt(data, rng)
        p = tmp / f"case{k}{original.suffix}"
        p.write_bytes(bad)
        with Deadline(20):
            try:
                res = run(p, k)
            except RecfaceError as e:
                assert named(p, k) in str(e), f"case {k}: the error does not name the file: {e}"
                outcome["errors"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - that is what this test is for
                raise AssertionError(f"case {k}: {type(e).__name__} instead of a clean error: {e}") from e
        check(res, changed, k)
        outcome["correct"] += 1
        p.unlink()
    assert outcome["errors"] > 0
    return outcome


def test_fuzz_rec(tmp_path):
    from recface_lib.convert import rec2jpg
    from recface_lib.data.recordio import write_insightface_rec

    orig = write_insightface_rec(tmp_path / "o.rec", [[_jpeg(c * 10 + i) for i in range(3)] for c in range(4)])
    idx = tmp_path / "o.idx"
    ref = rec2jpg(orig, tmp_path / "ref", show_progress=False)
    ref_files = {p.relative_to(tmp_path / "ref").as_posix(): p.read_bytes()
                 for p in (tmp_path / "ref").rglob("*.jpg")}

    def run(p, k):
        shutil.copy(idx, p.with_suffix(".idx"))
        return rec2jpg(p, tmp_path / f"out{k}", show_progress=False), tmp_path / f"out{k}"

    def check(res, changed, k):
        r, out = res
        files = {q.relative_to(out).as_posix(): q.read_bytes() for q in out.rglob("*.jpg")}
        assert r["classes"] == ref["classes"] and sorted(files) == sorted(ref_files), f"case {k}: structure changed"
        diff = sum(sum(a != b for a, b in zip(files[n], ref_files[n])) + abs(len(files[n]) - len(ref_files[n]))
                   for n in files)
        assert diff <= changed, f"case {k}: {diff} bytes differ, only {changed} were corrupted"
        shutil.rmtree(out)

    fuzz(orig, run, check, tmp_path, seed=13)


def test_fuzz_bin(tmp_path):
    from recface_lib.data.verification_bin import read_bin, write_bin

    imgs = [_jpeg(i) for i in range(12)]
    issame = [True, False, True, False, True, False]
    orig = write_bin(tmp_path / "o.bin", imgs, issame)

    def check(ps, changed, k):
        assert [bool(x) for x in ps.issame] == issame and len(ps.images) == len(imgs), f"case {k}: pairs changed"
        diff = sum(sum(a != b for a, b in zip(x, y)) + abs(len(x) - len(y)) for x, y in zip(ps.images, imgs))
        assert diff <= changed, f"case {k}: {diff} image bytes differ, only {changed} were corrupted"

    fuzz(orig, lambda p, k: read_bin(p), check, tmp_path, seed=14)


@pytest.mark.tf
def test_fuzz_tfrecord_shard(tmp_path):
    import tensorflow as tf

    from recface_lib.build import build
    from recface_lib.data.input_pipeline import make_dataset
    from recface_lib.data.tfrecord import data_error, load_metadata

    faces = tmp_path / "faces"
    for c in range(3):
        for i in range(4):
            (faces / f"p{c}").mkdir(parents=True, exist_ok=True)
            (faces / f"p{c}" / f"{i}.jpg").write_bytes(_jpeg(c * 10 + i, (16, 16)))
    build({"input": str(faces), "output": str(tmp_path / "ds"), "shards": 1, "assume_aligned": 16}, show_progress=False)
    shard = next((tmp_path / "ds").glob("train-*.tfrecord"))
    ref_meta = json.loads((tmp_path / "ds" / "metadata.json").read_text())

    def read_all(ds_dir):
        try:  # what training does: read through tf.data; a TensorFlow error becomes one naming the shard
            return [(x.numpy(), y.numpy()) for x, y in make_dataset(ds_dir, 4, training=False, image_size=16)]
        except tf.errors.OpError as e:
            raise data_error(load_metadata(ds_dir), e) from None

    reference = read_all(tmp_path / "ds")

    def run(p, k):
        d = tmp_path / f"ds{k}"
        d.mkdir()
        (d / "metadata.json").write_text(json.dumps(ref_meta))
        shutil.move(p, d / shard.name)
        p.write_bytes(b"")  # fuzz() unlinks it
        return read_all(d)

    def check(batches, changed, k):
        assert len(batches) == len(reference) and all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(batches, reference)), \
            f"case {k}: a corrupted shard read without an error"

    t0 = time.time()
    out = fuzz(shard, run, check, tmp_path, seed=15, named=lambda p, k: f"ds{k}")
    assert out["correct"] == 0, "every change to a CRC-protected shard must be an error"
    assert time.time() - t0 < 300


def test_fuzz_bundle(tmp_path):
    from recface_lib.bundle import open_bundle, write_bundle

    rng = np.random.default_rng(0)
    (tmp_path / "model.onnx").write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    (tmp_path / "classifier.json").write_text(json.dumps({"kind": "centroid", "names": ["a", "b"]}))
    np.savez(tmp_path / "classifier.npz", X=rng.normal(size=(4, 8)).astype(np.float32), y=np.array([0, 0, 1, 1]))
    spec = {"format_version": 2, "embd_shape": 8, "preprocessing": {"size": 64}}
    orig = write_bundle(tmp_path / "o.zip", spec, {k: tmp_path / k for k in ("model.onnx", "classifier.json",
                                                                             "classifier.npz")})
    ref_spec, ref_files = open_bundle(orig)

    def check(res, changed, k):
        s, files = res
        assert s == ref_spec and files == ref_files, f"case {k}: a corrupted bundle read as different content"

    fuzz(orig, lambda p, k: open_bundle(p, need=("model.onnx",)), check, tmp_path, seed=16)
