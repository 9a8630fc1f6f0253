"""Distillation (#15): the teach stage, a student trained on a teacher's embeddings, unlabelled data,
and the quantised exports' parity gate, on real LFW photos.

One session-scoped set-up: 160 LFW people outside fold 10, 2 photos each (LFW's usual shape: many
people, few photos), aligned at 48 px, built, embedded by dlib's ResNet (the teacher, on the
original photos). A student trained only on the teacher's embeddings and a model of the same size
trained from scratch with ArcFace on the labels (same steps, same photos, same optimiser and
learning rate, same seed, deterministic) are scored on all 600 real fold-10 pairs: people neither
ever saw."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import killed_after_checkpoint, photos_outside_fold10, runs_differ
from recface_lib.errors import ConfigError, FormatError

STEPS = 150


@pytest.fixture(scope="session")
def distill_data(lfw_dir, tmp_path_factory):
    from recface_lib.align.pipeline import align
    from recface_lib.build import build
    from recface_lib.teach import teach

    root = tmp_path_factory.mktemp("distill")
    src = root / "photos"
    people = photos_outside_fold10(lfw_dir, src, slice(0, 160))
    align({"input": str(src), "output": str(root / "aligned"), "size": 48, "on_failure": "drop", "workers": 2},
          show_progress=False)
    build({"input": str(root / "aligned"), "output": str(root / "tfr"), "shards": 2}, show_progress=False)
    rep = teach({"dataset": str(root / "tfr"), "output": str(root / "teacher"), "workers": 2}, show_progress=False)
    return {"root": root, "people": people, "teach": rep}


def _train(data, out, **kw):
    from recface_lib.train.trainer import train

    cfg = {"dataset": str(data["root"] / "tfr"), "output": str(out), "input_size": 48, "embd_shape": 128,
           "batch_size": 32, "steps_per_epoch": STEPS // 3, "plan": [[3, 0.005, False, 1]], "optimizer": "adamw",
           "weight_decay": 0.05, "augmentation": {"train_crop": False}, "tensorboard": False, "shuffle_buffer": 512,
           "checkpoint_every": 0, "seed": 1, **kw}
    return train(cfg, show_progress=False)


@pytest.fixture(scope="session")
def distilled(distill_data):
    root = distill_data["root"]
    return {"student": _train(distill_data, root / "student", teacher=str(root / "teacher"), deterministic=True),
            "scratch": _train(distill_data, root / "scratch", head="ArcFace", margin=0.3, scale=32.0, deterministic=True)}


@pytest.fixture(scope="session")
def fold10_pairs(fold10):
    """All 600 pairs of LFW fold 10 (300 same, 300 different) as a .bin of the original photos."""
    return Path(fold10["bin"])


@pytest.fixture(scope="session")
def fold10_aligned(distilled, fold10):
    """The same pairs aligned as the students' contract says (both models share it), as a .bin of
    PNG crops: scoring and the export's parity pass then skip detection. The suite's shared fold 10
    crops (conftest.fold10) are those of the align stage at 48 px: the same alignment, checked."""
    from recface_lib.embedders.model import load_run

    contract = load_run(distilled["student"]["output"]).contract
    assert {k: v for k, v in contract.items() if k not in ("input_size", "normalization")} == fold10["contract"]
    return Path(fold10["aligned"])


def test_teach_records_the_teacher_on_original_photos(distill_data):
    rep, root = distill_data["teach"], distill_data["root"]
    assert rep["images"] == "original" and rep["dim"] == 128 and rep["teacher_id"] == "dlib_resnet"
    meta = json.loads((root / "tfr" / "metadata.json").read_text())
    assert rep["records"] == meta["num_samples"] > 200
    assert rep["found"].get("fallback", 0) <= 3  # dlib's own chain found the faces on the originals
    from recface_lib.teach import load_teacher
    from recface_lib.data.tfrecord import load_metadata
    (e, ef), info = load_teacher(root / "teacher", load_metadata(root / "tfr"))
    assert e.shape == ef.shape == (meta["num_samples"], 128)
    norms = np.linalg.norm(e.astype(np.float64), axis=1)
    assert np.allclose(norms, 1, atol=1e-2)
    # a face and its mirror agree far more than two different records do
    same = (e.astype(np.float64) * ef).sum(1)
    other = (e.astype(np.float64) * np.roll(ef, 1, axis=0)).sum(1)
    assert np.median(same) > 0.9 > np.median(other)


def test_teach_rerun_resumes_and_other_data_is_refused(distill_data, tmp_path):
    from recface_lib.build import build
    from recface_lib.teach import teach

    root = distill_data["root"]
    again = teach({"dataset": str(root / "tfr"), "output": str(root / "teacher"), "workers": 1}, show_progress=False)
    assert again["resumed"] and again["found"] == {}  # every shard kept: nothing embedded again
    build({"input": str(root / "aligned"), "output": str(tmp_path / "tfr_other"), "shards": 2, "seed": 5},
          show_progress=False)
    with pytest.raises(ConfigError, match="other data"):
        _train(distill_data, tmp_path / "run", dataset=str(tmp_path / "tfr_other"), teacher=str(root / "teacher"))
    with pytest.raises(ConfigError, match="exists and was made differently"):
        teach({"dataset": str(tmp_path / "tfr_other"), "output": str(root / "teacher")}, show_progress=False)


def test_distilled_student_beats_from_scratch_on_unseen_people(distilled, fold10_aligned):
    from recface_lib.data.verification_bin import read_bin
    from recface_lib.embedders.model import load_run
    from recface_lib.io_utils import load_item
    from recface_lib.protocol.verification import evaluate_embeddings

    s, f = distilled["student"], distilled["scratch"]
    assert s["global_step"] == f["global_step"] == STEPS
    spec = json.loads((Path(s["output"]) / "model.json").read_text())
    assert spec["distilled_from"]["teacher"] == "dlib_resnet" and spec["embd_shape"] == 128
    from recface_lib.protocol.pair_sets import distinct_items

    ps = read_bin(fold10_aligned)
    images, index, _ = distinct_items(ps.images)
    crops = [load_item(b) for b in images]
    acc = {}
    for name, run in (("student", s["output"]), ("scratch", f["output"])):
        e = load_run(run).embed(crops, flip=True)[index]
        acc[name] = evaluate_embeddings(e[0::2], e[1::2], ps.issame).accuracy
    # The student learns the teacher: its mean cosine to the teacher's embeddings rises (0.21, 0.55,
    # 0.72 over the three segments here) and it verifies unseen people.
    cos = [float(r.split(",")[-1]) for r in (Path(s["output"]) / "history.csv").read_text().splitlines()[1:]]
    assert cos[-1] > 0.5 and cos[-1] > cos[0] + 0.2, cos
    # Unseen people, 600 pairs (one pair is 0.17 points; the binomial spread at 70% is 1.9 points).
    # Measured: student 64.7-72.3%, scratch 64.7-68.7% over seeds (1-3), environments and versions
    # (a 4-point swing from summation order alone). 0.65 here once lost to that swing (64.67% with
    # seed 1 outside pytest): the bound is 0.60, 2.4 spreads under the lowest figure, far from
    # chance (0.50).
    assert acc["student"] > 0.60, acc
    # Against the same-size model trained on the labels, the lead at this toy size is within that
    # noise (student minus scratch: 0.0 to +5.5 points measured). The test asks only that
    # distillation is not worse beyond it; the benefit is measured on the distill scenario (README).
    assert acc["student"] > acc["scratch"] - 0.03, acc


def test_unlabelled_folder_trains_only_by_distillation(distill_data, distilled, tmp_path):
    """Any embedder teaches: here the from-scratch run (same alignment: it sees the aligned faces)."""
    from recface_lib.build import build
    from recface_lib.teach import teach

    root = distill_data["root"]
    build({"input": str(root / "aligned"), "output": str(tmp_path / "tfr"), "shards": 1, "unlabelled": True},
          show_progress=False)
    meta = json.loads((tmp_path / "tfr" / "metadata.json").read_text())
    assert meta["labelled"] is False and meta["num_classes"] == 1
    with pytest.raises(ConfigError, match="unlabelled"):
        build({"input": str(root / "aligned"), "output": str(tmp_path / "tfr2"), "unlabelled": True, "test_samples": 1})
    rep = teach({"dataset": str(tmp_path / "tfr"), "teacher": distilled["scratch"]["output"],
                 "output": str(tmp_path / "teacher"), "workers": 1}, show_progress=False)
    assert rep["images"] == "aligned" and rep["dim"] == 128 and rep["teacher_id"].startswith("sha256:")
    from recface_lib.embedders.factory import model_contract
    from recface_lib.embedders.model import load_run
    assert model_contract(distilled["scratch"]["output"]) == load_run(distilled["scratch"]["output"]).contract
    common = {"dataset": str(tmp_path / "tfr"), "steps_per_epoch": 3, "plan": [[1, 0.002]], "backbone": "TestMobileFaceNet"}
    with pytest.raises(ConfigError, match="trains only by distillation"):
        _train(distill_data, tmp_path / "a", **common)
    with pytest.raises(ConfigError, match="head_weight must be 0"):
        _train(distill_data, tmp_path / "b", teacher=str(tmp_path / "teacher"), head_weight=0.5, **common)
    r = _train(distill_data, tmp_path / "c", teacher=str(tmp_path / "teacher"), embd_shape=64, **common)
    spec = json.loads((tmp_path / "c" / "model.json").read_text())
    assert spec["distilled_from"]["teacher_id"] == rep["teacher_id"] and spec["num_classes"] == 1
    assert r["global_step"] == 3  # 64-d student, 128-d teacher: through the learned projection
    hist = (tmp_path / "c" / "history.csv").read_text()
    assert "cosine" in hist.splitlines()[0]


def test_plan_stage_loss_weights_and_resume(distill_data, tmp_path):
    """A stage may switch the margin head on (head_weight); a killed run resumes to the same weights."""
    root = distill_data["root"]
    kw = {"teacher": str(root / "teacher"), "steps_per_epoch": 4, "deterministic": True, "checkpoint_every": 2,
          "backbone": "TestMobileFaceNet",
          "plan": [[1, 0.002], {"epochs": 1, "lr": 0.001, "head_weight": 0.5}]}
    full = _train(distill_data, tmp_path / "full", **kw)
    assert full["global_step"] == 8 and full["accuracy"] is not None
    with killed_after_checkpoint(6):
        _train(distill_data, tmp_path / "cut", **kw)
    res = _train(distill_data, tmp_path / "cut", **kw)
    assert res["resumed_from"] and res["global_step"] == 8
    assert runs_differ(tmp_path / "full", tmp_path / "cut") < 1e-5


def test_quantised_exports_parity_table_and_gate(distilled, fold10_pairs, fold10_aligned, tmp_path, monkeypatch):
    from recface_lib.export import export
    from recface_lib.inference import FaceRecognizer

    run = distilled["student"]["output"]
    aligned = Path(run).parents[0] / "aligned"
    out = tmp_path / "student.zip"
    # a weak 48-px model (about 70%): one pair is 0.17 points; measured int8 drops of 0-4.3 points over
    # retrainings of this student, so the gate allows 6 here (a broken conversion, below, falls far more)
    res = export(run, out, aligned, formats=("keras", "onnx", "tflite", "tflite_fp16", "tflite_int8"),
                 pair_set=str(fold10_aligned), representative_count=256, max_accuracy_drop=6.0)
    with zipfile.ZipFile(out) as z:
        meta = json.loads(z.read("recface.json"))
        assert {"model_fp16.tflite", "model_int8.tflite", "model.onnx"} <= set(z.namelist())
    table = meta["parity"]["table"]
    assert set(table) == {"keras", "onnx", "tflite", "tflite_fp16", "tflite_int8"}
    for name, row in table.items():
        assert row["accuracy"] > 0.55 and row["tar_at_far_1e-3"] is not None
        if name != "keras":
            assert row["passed"] and row["accuracy_drop_points"] <= 6.0
    assert table["tflite_int8"]["median_cosine"] > 0.95
    assert table["onnx"]["batch_1_vs_n_max_abs"] < 1e-4
    assert meta["formats"]["tflite_int8"]["tensors"]["input"]["dtype"] == "int8"
    assert meta["formats"]["tflite_fp16"]["tensors"]["input"]["dtype"] == "float32"
    assert Path(res["table"]).read_text().count("| pass |") == 4
    from recface_lib.embedders.factory import model_contract  # read without loading a model
    assert model_contract(str(out)) == meta["preprocessing"] and model_contract("dlib_resnet") is None
    # every TFLite format runs in FaceRecognizer (the LiteRT interpreter) and agrees with ONNX
    photo = Path(fold10_pairs).parent / "probe.jpg"
    from recface_lib.data.verification_bin import read_bin
    photo.write_bytes(read_bin(fold10_pairs).images[0])
    ref = FaceRecognizer.from_bundle(out, "onnx").embed(photo)
    # float formats as before (> 0.97); int8 on one photo measured 0.955 in a full suite run of a0f0357
    # and above 0.97 alone (the student's numerics move with the run): its fold-10 median (> 0.95) is
    # asserted above; here the one photo must clearly come out as the same face
    for b, least in (("tflite", 0.97), ("tflite_fp16", 0.97), ("tflite_int8", 0.9)):
        assert float(FaceRecognizer.from_bundle(out, b).embed(photo) @ ref) > least, b

    # a broken conversion (its outputs belong to other faces) loses accuracy: refused, no bundle written.
    # (A blank-image int8 calibration is no reliable break: on this model it lost 0-2.5 points.)
    from recface_lib.embedders import model as em
    good = em.TfliteBackend.__call__
    monkeypatch.setattr(em.TfliteBackend, "__call__", lambda self, x: np.roll(good(self, x), 1, axis=0))
    with pytest.raises(FormatError, match="tflite_int8: accuracy"):
        export(run, tmp_path / "broken.zip", aligned, formats=("tflite_int8",), pair_set=str(fold10_aligned),
               representative_count=64, max_accuracy_drop=6.0)
    assert not (tmp_path / "broken.zip").exists()
    monkeypatch.undo()
    from recface_lib.quantize import gate  # keep_failing keeps it, with the warning recorded
    table = {"keras": {"accuracy": 0.70}, "tflite_int8": {"accuracy": 0.55}}
    assert gate(table, 1.0, keep_failing=True) and table["tflite_int8"]["kept_with_warning"]
    with pytest.raises(ConfigError, match="pair set"):
        export(run, tmp_path / "nopairs.zip", aligned, formats=("tflite_int8",))
