"""Issue 13: nothing stale, nothing poisoned, nothing overwritten, one error contract. Each test
reproduces a failure found by probing (reruns trusting the output folder, same-stem collisions,
outputs replacing inputs, decompression bombs, tracebacks instead of a JSON error line) and
checks the fix."""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from recface_lib import cli
from recface_lib.build import build
from recface_lib.convert import bin2jpg, pairs2bin, rec2jpg
from recface_lib.data.recordio import write_insightface_rec
from recface_lib.data.verification_bin import write_bin
from recface_lib.errors import ConfigError, FormatError, ImageDecodeError
from recface_lib.io_utils import decode_image, encode_image
from recface_lib.manifest import manifest_path, read_manifest

from conftest import run_cli


def _jpeg(seed: int, size=(24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_image(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), ".jpg")


def _rec(path: Path, classes: int, per: int, seed: int) -> Path:
    return write_insightface_rec(path, [[_jpeg(seed * 1000 + c * 10 + i) for i in range(per)] for c in range(classes)])


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _folder(root: Path, people: dict[str, int], seed: int, size=(32, 32)) -> Path:
    for k, (name, n) in enumerate(people.items()):
        for i in range(n):
            p = root / name / f"{name}_{i + 1:04d}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_jpeg(seed * 1000 + k * 50 + i, size))
    return root


# -- 1. reruns keyed on content --------------------------------------------------------------------
def test_rec2jpg_rerun_from_another_rec_is_refused_and_force_starts_fresh(tmp_path):
    a, b = _rec(tmp_path / "a.rec", 3, 3, 0), _rec(tmp_path / "b.rec", 2, 2, 1)
    out = tmp_path / "out"
    rec2jpg(a, out, show_progress=False)
    first = _files(out)
    with pytest.raises(ConfigError, match=r"made differently: input rec: .*a\.rec -> .*b\.rec"):
        rec2jpg(b, out, show_progress=False)
    assert _files(out) == first  # nothing of b mixed in
    again = rec2jpg(a, out, show_progress=False)  # the same input resumes
    assert again["classes_skipped"] == 3 and _files(out) == first
    res = rec2jpg(b, out, show_progress=False, force=True)
    rec2jpg(b, tmp_path / "fresh", show_progress=False)
    assert res["classes_written"] == 2 and _files(out) == _files(tmp_path / "fresh")


def test_bin2jpg_rerun_from_another_bin_is_refused(tmp_path):
    write_bin(tmp_path / "a.bin", [_jpeg(i) for i in range(4)], [True, False])
    write_bin(tmp_path / "b.bin", [_jpeg(10 + i) for i in range(4)], [False, True])
    bin2jpg(tmp_path / "a.bin", tmp_path / "out", show_progress=False)
    first = _files(tmp_path / "out")
    with pytest.raises(ConfigError, match="input bin"):
        bin2jpg(tmp_path / "b.bin", tmp_path / "out", show_progress=False)
    assert _files(tmp_path / "out") == first
    # same path, new content: refused too (content, not the path, is the key)
    shutil.copy(tmp_path / "b.bin", tmp_path / "a.bin")
    with pytest.raises(ConfigError, match="same path, content changed"):
        bin2jpg(tmp_path / "a.bin", tmp_path / "out", show_progress=False)


def test_build_rerun_with_another_seed_or_input(tmp_path):
    a = _folder(tmp_path / "A", {"p1": 4, "p2": 4, "p3": 4}, 0)
    b = _folder(tmp_path / "B", {"q1": 4, "q2": 4}, 1)
    out = tmp_path / "ds"
    cfg = {"input": str(a), "output": str(out), "shards": 2, "test_samples": 1}
    build(cfg, show_progress=False)
    meta = (out / "metadata.json").read_bytes()
    shard_times = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    with pytest.raises(ConfigError, match="seed: 0 -> 1"):
        build({**cfg, "seed": 1}, show_progress=False)
    assert (out / "metadata.json").read_bytes() == meta
    build(cfg, show_progress=False)  # same input and parameters: finished shards are kept
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")} == shard_times
    with pytest.raises(ConfigError, match="input input"):
        build({**cfg, "input": str(b)}, show_progress=False)
    build({**cfg, "input": str(b), "force": True}, show_progress=False)
    assert sorted(p.name for p in (out / "test").iterdir()) == ["q1", "q2"]  # no stale class folders
    m = json.loads((out / "metadata.json").read_text())
    assert m["class_names"] == ["q1", "q2"] and m["num_samples"] == 6
    sides = [json.loads(p.read_text()) for p in out.glob(".train-*.json")]
    assert sides and all(s["key"] == sides[0]["key"] for s in sides)  # shards carry their run's key


def test_output_not_made_by_recface_is_refused_then_moved_aside(tmp_path):
    rec = _rec(tmp_path / "a.rec", 2, 2, 0)
    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="no recface manifest"):
        rec2jpg(rec, out, show_progress=False)
    res = rec2jpg(rec, out, show_progress=False, force=True)
    aside = list(tmp_path.glob("out.old-*"))
    assert res["classes"] == 2 and len(aside) == 1 and (aside[0] / "mine" / "notes.txt").read_text() == "precious"


def test_killed_run_resumes_cleans_temporaries_and_honours_umask(tmp_path):
    rec = _rec(tmp_path / "a.rec", 3, 2, 0)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        rec2jpg(rec, out, show_progress=False)
        m = read_manifest(out)
        m["counts"] = {"status": "running"}  # as left by a SIGKILL: running manifest, partial output
        manifest_path(out).write_text(json.dumps(m))
        shutil.rmtree(out / "2")
        (out / ".2.partial").mkdir()
        (out / "0" / ".0.jpg.tmp-x1y2").write_bytes(b"half")
        res = rec2jpg(rec, out, show_progress=False)
        assert res["classes_written"] == 1 and res["classes_skipped"] == 2
        assert not list(out.rglob(".*.partial")) and not list(out.rglob(".*tmp-*"))
        for p in (manifest_path(out), out / "2" / "0.jpg"):
            assert p.stat().st_mode & 0o777 == 0o644, p
    finally:
        os.umask(old)


# -- 2. same-stem files ------------------------------------------------------------------------------
@pytest.mark.detect
def test_same_stem_files_do_not_collide(tmp_path):
    from recface_lib.align.pipeline import align

    root = tmp_path / "in"
    (root / "P").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for ext in (".jpg", ".png"):
        (root / "P" / f"a{ext}").write_bytes(encode_image(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), ext))
    (root / "P" / "b.jpg").write_bytes(_jpeg(5, (48, 48)))
    rep = align({"input": str(root), "output": str(tmp_path / "out"), "detector": "dlib_hog", "on_failure": "keep",
                 "size": 32}, show_progress=False)
    on_disk = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert rep["written"] == 3 and on_disk == ["P/a.jpg.jpg", "P/a.png.jpg", "P/b.jpg"]
    assert sorted(r["output"] for r in rep["renamed"]) == ["P/a.jpg.jpg", "P/a.png.jpg"]


# -- 4. outputs never replace inputs ---------------------------------------------------------------
def test_outputs_never_replace_inputs(tmp_path):
    imgs = _folder(tmp_path / "lfw", {"A": 2, "B": 1}, 0)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1 1\nA 1 2\nA 1 B 1\n")
    before = pairs.read_bytes(), (imgs / "A" / "A_0001.jpg").read_bytes()
    with pytest.raises(ConfigError, match="is the input pairs"):
        pairs2bin(imgs, pairs, pairs, show_progress=False)
    link = tmp_path / "link.bin"
    link.symlink_to(pairs)
    with pytest.raises(ConfigError, match="is the input pairs"):  # symlinks resolved
        pairs2bin(imgs, pairs, link, show_progress=False)
    with pytest.raises(ConfigError, match="is the input images|lies inside the input images"):
        pairs2bin(imgs, pairs, imgs / "A" / "A_0001.jpg", show_progress=False)
    assert (pairs.read_bytes(), (imgs / "A" / "A_0001.jpg").read_bytes()) == before
    res = pairs2bin(imgs, pairs, tmp_path / "ok.bin", show_progress=False)
    assert res["pairs"] == 2
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "backbone.weights.h5").write_bytes(b"weights")
    p = run_cli("export", "--run", str(run), "--output", str(run / "final" / "backbone.weights.h5"),
                "--check-images", str(imgs), "--json", check=False)
    assert p.returncode == 1 and "lies inside the input run folder" in json.loads(p.stdout.splitlines()[-1])["error"]
    p = run_cli("export", "--run", str(run), "--output", str(run), "--check-images", str(imgs), "--json", check=False)
    assert "is the input run" in json.loads(p.stdout.splitlines()[-1])["error"]
    assert (run / "final" / "backbone.weights.h5").read_bytes() == b"weights"


# -- 5. bounded resources -----------------------------------------------------------------------------
def _png_bomb(path: Path, w: int, h: int) -> Path:
    """A real, decodable grey PNG of w x h black pixels (a few hundred KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_pixel_limit_from_the_header(tmp_path, monkeypatch):
    bomb = _png_bomb(tmp_path / "bomb.png", 8000, 8000)  # 64 MP > 50 MP
    with pytest.raises(ImageDecodeError, match=r"bomb\.png: image of 8000 x 8000 pixels \(64 MP\) exceeds the limit of 50 MP"):
        decode_image(bomb.read_bytes(), str(bomb))
    monkeypatch.setenv("RECFACE_MAX_MEGAPIXELS", "70")
    assert decode_image(bomb.read_bytes()).shape == (8000, 8000, 3)


@pytest.mark.detect
def test_decompression_bomb_under_a_memory_cap(tmp_path):
    """20000 x 20000 pixels (1.2 GB decoded as RGB) in a 2.5 GB address-space cap: the align verb
    ends with the clean error naming the file, not a kill."""
    root = tmp_path / "in" / "P"
    root.mkdir(parents=True)
    _png_bomb(root / "bomb.png", 20000, 20000)
    exe = Path(sys.executable).with_name("recface")
    p = subprocess.run(["prlimit", "--as=2500000000", str(exe), "align", "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out"), "--detector", "dlib_hog", "--json"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "RECFACE_NO_PROGRESS": "1"})
    assert p.returncode == 1, p.stderr[-2000:]
    err = json.loads(p.stdout.splitlines()[-1])["error"]
    assert "bomb.png" in err and "20000 x 20000" in err and "Traceback" not in p.stderr


def test_bundle_members_are_size_limited(tmp_path, monkeypatch):
    from recface_lib import bundle

    (tmp_path / "model.onnx").write_bytes(b"\0" * (3 << 20))
    (tmp_path / "evil.bin").write_bytes(b"\0" * (3 << 20))
    with zipfile.ZipFile(tmp_path / "b.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("recface.json", json.dumps({"format_version": 2}))
        z.write(tmp_path / "evil.bin", "evil.bin")
    spec, files = bundle.open_bundle(tmp_path / "b.zip")
    assert spec == {"format_version": 2} and files == {}  # unknown members are never read
    with zipfile.ZipFile(tmp_path / "b.zip", "a", zipfile.ZIP_DEFLATED) as z:
        z.write(tmp_path / "model.onnx", "model.onnx")
    monkeypatch.setitem(bundle.MEMBER_LIMITS, "model.onnx", 1 << 20)
    with pytest.raises(FormatError, match="member model.onnx inflates to 3145728 bytes.*zip bomb"):
        bundle.open_bundle(tmp_path / "b.zip")


# -- 6. one error contract ---------------------------------------------------------------------------
def _main_json(capsys, *argv) -> tuple[int, dict, str]:
    rc = cli.main([*argv, "--json", "--no-progress"])
    out, err = capsys.readouterr()
    last = out.strip().splitlines()[-1]
    return rc, json.loads(last, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}")), err


def test_every_failure_is_one_line_and_a_json_error(tmp_path, capsys, monkeypatch):
    from recface_lib import convert

    write_bin(tmp_path / "a.bin", [_jpeg(i) for i in range(4)], [True, False])
    (tmp_path / "file.txt").write_text("x")
    cases = [
        # a folder where a file is: FileExistsError from mkdir
        (("bin2jpg", "--bin", str(tmp_path / "a.bin"), "--output", str(tmp_path / "file.txt" / "out")), "file.txt"),
        (("train", "--dataset", "d", "--output", "o", "--set", "plan=[1,"), "cannot read '[1,'"),
        (("train", "--dataset", "d", "--output", "o", "--set", "plan=[[1, .nan]]"), "plan[0].lr: must be a finite number"),
        (("align", "--input", "x", "--output", "y", "--min-prob", "5"), "min_prob: must be in [0.0, 1.0], got 5.0"),
        (("build", "--input", "x", "--output", "y", "--size-of-shard", "1"), "unrecognized arguments"),
    ]
    for argv, needle in cases:
        rc, js, err = _main_json(capsys, *argv)
        assert rc in (1, 2) and js["ok"] is False and needle in js["error"], (argv, js)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for exc, needle in ((OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out")), "No space left"),
                        (MemoryError(), "out of memory"), (ValueError("bad value"), "ValueError: bad value")):
        def boom(*a, _e=exc, **k):
            raise _e
        monkeypatch.setattr(convert, "read_bin", boom)
        rc, js, err = _main_json(capsys, "bin2jpg", "--bin", str(tmp_path / "a.bin"), "--output", str(tmp_path / f"o{rc}"),
                                 "--force")
        assert rc == 1 and needle in js["error"] and "Traceback" not in err, js
    # a bug still shows its traceback (on stderr) and, with --json, ends in the JSON line
    monkeypatch.setattr(convert, "read_bin", lambda *a, **k: 1 / 0)
    rc, js, err = _main_json(capsys, "bin2jpg", "--bin", str(tmp_path / "a.bin"), "--output", str(tmp_path / "o9"))
    assert rc == 1 and "internal error (ZeroDivisionError" in js["error"] and "Traceback" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["bin2jpg", "--bin", str(tmp_path / "a.bin"), "--output", str(tmp_path / "o10"), "--no-progress"])


def test_json_lines_are_strict():
    s = cli.strict_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0), "d": Path("x")})
    assert json.dumps(s, allow_nan=False) == '{"a": null, "b": [null, 1.5], "c": 2.0, "d": "x"}'


def test_onnxruntime_error_is_one_line(tmp_path, capsys):
    from recface_lib.bundle import write_bundle
    from recface_lib.manifest import CONTRACT_KEYS, MODEL_CONTRACT_KEYS, template_at

    contract = {k: None for k in CONTRACT_KEYS + MODEL_CONTRACT_KEYS}
    contract.update(detector="mtcnn", method="landmarks", size=64, template=template_at(64), input_size=64,
                    normalization="-1:1", landmark_model="mtcnn")
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model at all")
    write_bundle(tmp_path / "b.zip", {"preprocessing": contract, "embd_shape": 8, "input_size": 64,
                                      "normalization": "-1:1"}, {"model.onnx": tmp_path / "model.onnx"})
    img = tmp_path / "x.jpg"
    img.write_bytes(_jpeg(1, (64, 64)))
    rc, js, err = _main_json(capsys, "identify", "--bundle", str(tmp_path / "b.zip"), str(img))
    assert rc == 1 and js["ok"] is False and "Traceback" not in err and len(err.strip().splitlines()) == 1, (js, err)


# -- 7. classifier tied to its model's weights ----------------------------------------------------------
def test_model_identity_is_the_weights_content(tmp_path):
    from recface_lib.embedders import model_identity

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "backbone.weights.h5").write_bytes(b"weights v1")
    ident = model_identity(str(run))
    shutil.copytree(run, tmp_path / "elsewhere")
    assert model_identity(str(tmp_path / "elsewhere")) == ident  # a copied run keeps its identity
    (run / "final" / "backbone.weights.h5").write_bytes(b"weights v2")  # retrained
    assert model_identity(str(run)) != ident and model_identity("dlib_resnet") == "dlib_resnet"


# -- 3. a NaN guard that guards; TensorFlow data errors named by shard ---------------------------------
@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    _folder(root / "faces", {f"p{k}": 8 for k in range(4)}, 3, (32, 32))
    build({"input": str(root / "faces"), "output": str(root / "ds"), "shards": 2, "assume_aligned": 32},
          show_progress=False)
    return root / "ds"


def _train_cfg(ds, out, **kw):
    from recface_lib.train.config import TrainConfig

    return TrainConfig.from_dict({"dataset": str(ds), "output": str(out), "input_size": 32, "embd_shape": 16,
                                  "backbone": "TestMobileFaceNet", "batch_size": 8, "steps_per_epoch": 4, "plan": [[2, 0.01]], "checkpoint_every": 2,
                                  "tensorboard": False, "deterministic": True, "shuffle_buffer": 8, **kw})


@pytest.mark.tf
@pytest.mark.parametrize("poisoned", ["weights", "optimizer"])
def test_nan_guard_never_writes_a_poisoned_checkpoint(tiny_ds, tmp_path, poisoned):
    """What a diverging learning rate does, made exact: after step 3 a backbone kernel (then the
    loss of step 4 is NaN) or a momentum slot (then the loss stays finite but step 4's update
    poisons the weights, which only the checkpoint's check sees) becomes NaN. The run stops at
    step 4 naming ckpt 2, the newest finite one; nothing non-finite is ever written; resuming works."""
    import keras

    from recface_lib.train.checkpoint import find_latest, load_checkpoint
    from recface_lib.train.trainer import TrainingError, TrainRun, nonfinite

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if run.global_step == 3:
                if poisoned == "weights":
                    w = run.backbone.trainable_weights[0]
                else:
                    w = max((v for v in run.model.optimizer.variables if "kernel" in v.path), key=lambda v: v.shape[-1])
                w.assign(np.full(w.shape, np.nan, "float32"))

    run = TrainRun(_train_cfg(tiny_ds, tmp_path / "run"), show_progress=False).build()
    run.extra_callbacks.append(Poison())
    what = "the loss became NaN/Inf" if poisoned == "weights" else "non-finite weights or optimizer variables"
    with pytest.raises(TrainingError, match=rf"{what} at step 4 \(stage 1 of the plan, lr 0.01\).*"
                                            r"Newest finite checkpoint: .*ckpt-000000002"):
        run.fit()
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*"))
    assert [c.name for c in ckpts] == ["ckpt-000000002"] and find_latest(tmp_path / "run" / "checkpoints") == ckpts[0]
    fresh = TrainRun(_train_cfg(tiny_ds, tmp_path / "run2"), show_progress=False).build()
    load_checkpoint(ckpts[0], fresh.model, fresh.model.optimizer)
    assert nonfinite(fresh.model.weights) + nonfinite(fresh.model.optimizer.variables) == 0
    # resuming from the checkpoint named in the message works
    res = TrainRun(_train_cfg(tiny_ds, tmp_path / "run"), show_progress=False).build()
    assert res.resumed_from == str(ckpts[0])
    res.fit()
    assert res.global_step == 8 and nonfinite(res.model.weights) == 0


@pytest.mark.tf
def test_resume_refused_when_the_model_or_input_changes(tiny_ds, tmp_path):
    from recface_lib.train.trainer import train

    train(_train_cfg(tiny_ds, tmp_path / "run", plan=[[1, 0.01]]), show_progress=False)
    for change, needle in (({"normalization": "0:1"}, "normalization: '-1:1' -> '0:1'"),
                           ({"dropout": 0.2}, "dropout: 0.0 -> 0.2"), ({"batch_size": 4}, "batch_size: 8 -> 4"),
                           ({"plan": [[1, 0.02]]}, "plan: the stages already trained differ")):
        with pytest.raises(ConfigError, match=r"made with other data or parameters.*" + __import__("re").escape(needle)):
            train(_train_cfg(tiny_ds, tmp_path / "run", **{"plan": [[1, 0.01]], **change}), show_progress=False)
    # a plan may be extended, and resume: false starts fresh (nothing of the old run kept)
    res = train(_train_cfg(tiny_ds, tmp_path / "run", plan=[[1, 0.01], [1, 0.001]]), show_progress=False)
    assert res["resumed_from"] and res["global_step"] == 8
    res = train(_train_cfg(tiny_ds, tmp_path / "run", plan=[[1, 0.05]], resume=False), show_progress=False)
    assert res["resumed_from"] is None and res["global_step"] == 4


@pytest.mark.tf
def test_tensorflow_data_errors_name_the_shard(tiny_ds, tmp_path, capsys):
    ds = tmp_path / "ds"
    shutil.copytree(tiny_ds, ds)
    shard = sorted(ds.glob("train-*.tfrecord"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the CRC can tell
    shard.write_bytes(bytes(data))
    rc, js, err = _main_json(capsys, "train", "--dataset", str(ds), "--output", str(tmp_path / "r"),
                             "--set", "input_size=32", "--set", "embd_shape=16", "--set", "batch_size=8",
                             "--set", "steps_per_epoch=4", "--set", "plan=[[1, 0.01]]", "--set", "tensorboard=false")
    assert rc == 1 and shard.name in js["error"] and "CRC" in js["error"] and "Traceback" not in err, (js, err)
    # labels outside metadata.json's classes (shards of another build)
    ds2 = tmp_path / "ds2"
    shutil.copytree(tiny_ds, ds2)
    meta = json.loads((ds2 / "metadata.json").read_text())
    meta["num_classes"], meta["class_names"] = 2, meta["class_names"][:2]
    (ds2 / "metadata.json").write_text(json.dumps(meta))
    rc, js, err = _main_json(capsys, "train", "--dataset", str(ds2), "--output", str(tmp_path / "r2"),
                             "--set", "input_size=32", "--set", "embd_shape=16", "--set", "batch_size=8",
                             "--set", "steps_per_epoch=4", "--set", "plan=[[1, 0.01]]", "--set", "tensorboard=false")
    assert rc == 1 and "outside the 2 classes" in js["error"] and ".tfrecord: record" in js["error"], js


def test_export_refuses_a_classifier_of_other_weights(tmp_path):
    """A retrained run (same path, new weights) must not accept the stale classifier; checked
    before any format is converted."""
    from recface_lib.export import check_classifier

    clf = tmp_path / "clf"
    clf.mkdir()
    (clf / "classifier.npz").write_bytes(b"")
    (clf / "classifier.json").write_text(json.dumps({"embedder": "runs/x", "embedder_id": "sha256:aaa", "dim": 128}))
    assert check_classifier(clf, "sha256:aaa", 128, tmp_path, "final")["embedder"] == "runs/x"
    with pytest.raises(ConfigError, match=r"weights sha256:aaa\); this model's final weights are sha256:bbb"):
        check_classifier(clf, "sha256:bbb", 128, tmp_path, "final")


def test_empty_rec_and_nonsense_values_are_errors(tmp_path, capsys):
    empty = write_insightface_rec(tmp_path / "e.rec", [])
    with pytest.raises(FormatError, match=r"e\.rec: no images in the file"):
        rec2jpg(empty, tmp_path / "out", show_progress=False)
    for argv, needle in ((("train", "--dataset", "d", "--output", "o", "--checkpoint-every", "-1"), "checkpoint_every: must be >= 0"),
                         (("train", "--dataset", "d", "--output", "o", "--input-size", "7"), "input_size: must be in [32, 1024]"),
                         (("train", "--dataset", "d", "--output", "o", "--set", "scale=.inf"), "scale: must be a finite number"),
                         (("train", "--dataset", "d", "--output", "o", "--set", "head_params={easy_margin: .nan}"),
                          "head_params.easy_margin: must be a finite number")):
        rc, js, _ = _main_json(capsys, *argv)
        assert rc == 1 and needle in js["error"], js


@pytest.mark.detect
def test_align_bin_rerun_from_another_bin_is_refused(tmp_path):
    from recface_lib.align.pipeline import align

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_bin(tmp_path / f"{name}.bin", [encode_image(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), ".jpg")
                                             for _ in range(4)], [True, False])
    cfg = {"input": str(tmp_path / "a.bin"), "output": str(tmp_path / "out.bin"), "detector": "dlib_hog",
           "on_failure": "keep", "size": 32}
    align(cfg, show_progress=False)
    first = (tmp_path / "out.bin").read_bytes()
    assert "skipped" in align(cfg, show_progress=False)  # same input and parameters: nothing to do
    with pytest.raises(ConfigError, match=r"input input: .*a\.bin -> .*b\.bin"):
        align({**cfg, "input": str(tmp_path / "b.bin")}, show_progress=False)
    assert (tmp_path / "out.bin").read_bytes() == first
    align({**cfg, "input": str(tmp_path / "b.bin"), "force": True}, show_progress=False)
    assert (tmp_path / "out.bin").read_bytes() != first


def test_rec2jpg_refuses_a_truncated_jpeg_payload(tmp_path):
    good = [_jpeg(i) for i in range(3)]
    rec = write_insightface_rec(tmp_path / "t.rec", [good[:2], [good[2][:-40]]])  # cut inside the last image
    with pytest.raises(FormatError, match=r"t\.rec record 3: truncated JPG payload"):
        rec2jpg(rec, tmp_path / "out", show_progress=False)


def test_stale_checkpoint_temporaries_are_cleaned(tmp_path):
    from recface_lib.manifest import clean_stale

    ck = tmp_path / "checkpoints"
    (ck / ".tmp-ckpt-000000004-ab12cd34").mkdir(parents=True)  # a save killed half-way
    (ck / ".tmp-ckpt-000000004-ab12cd34" / "model.weights.h5").write_bytes(b"half")
    (ck / "ckpt-000000002").mkdir()
    (ck / ".latest.json.tmp-zz").write_text("{")
    assert clean_stale(ck) == 2 and sorted(p.name for p in ck.iterdir()) == ["ckpt-000000002"]
