"""The facenet_lfw scenario (#23) at test size: its own YAMLs with a smaller budget (people with >= 30
LFW photos outside fold 10, 4 photos each; a 20-pair sample of fold 10; a test backbone for 4 steps),
run as `recface pipeline --scenario facenet_lfw`: the softmax + center loss run, its ArcFace variant
(variants.yaml) on the shared data, both scored with facenet's protocol, one compare table; a rerun
skips everything but compare; a bad variants.yaml is one line. The full-size figures are in the
README (its run takes ~40 minutes on 2 cores)."""
import json
import shutil

import pytest
import yaml

from conftest import REPO, last_json, run_cli


def _fold10_sample(lfw_dir, path, n=10):
    """pairs.txt of one fold: fold 10's first n same and first n different pairs."""
    lines = (lfw_dir / "pairs.txt").read_text().splitlines()[1:]
    fold = lines[9 * 600:10 * 600]
    path.write_text("\n".join([f"1\t{n}"] + fold[:n] + fold[300:300 + n]) + "\n")


@pytest.fixture(scope="module")
def facenet_run(lfw_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("facenet")
    params = work / "params" / "facenet_lfw"
    shutil.copytree(REPO / "papermill_params" / "facenet_lfw", params)
    _fold10_sample(lfw_dir, work / "pairs_sample.txt")
    small = {"convert": {"pairs": str(work / "pairs_sample.txt"), "folds": [1]},
             "align": {"min_images": 30, "max_images": 4, "workers": 1},
             "build": {"shards": 2},
             "train": {"backbone": "TestMobileFaceNet", "embd_shape": 32, "batch_size": 16, "steps_per_epoch": 2,
                       "plan": [[2, 0.05, False, 1]], "validation_split": 0.25, "validation_every": 1,
                       "val_batch_size": 32, "checkpoint_every": 0, "tensorboard": False, "shuffle_buffer": 64}}
    for stage, over in small.items():
        p = params / f"{stage}.yaml"
        p.write_text(yaml.safe_dump({**yaml.safe_load(p.read_text()), **over}))
    proc = run_cli("pipeline", "--scenario", "facenet_lfw", "--params-dir", str(work / "params"), "--json", cwd=work)
    return work, last_json(proc)


def test_facenet_lfw_trains_both_objectives_and_compares_them(facenet_run):
    work, res = facenet_run
    runs = work / "runs"
    assert [(s["stage"], s["status"]) for s in res["stages"]] == [
        (s, "ran") for s in ("convert", "align", "build", "train", "evaluate", "compare")]
    assert res["variants"] == [{"name": "arcface", "folder": "arcface", "stages": {"train": "ran", "evaluate": "ran"},
                                "overrides": {"train.head": "ArcFace", "train.margin": 0.3, "train.scale": 32.0,
                                              "train.center_loss_factor": 0.0, "train.prelogits_norm_loss_factor": 0.0}}]
    main, variant = runs / "facenet_lfw" / "train", runs / "facenet_lfw" / "variants" / "arcface" / "train"
    spec_main, spec_var = (json.loads((d / "model.json").read_text()) for d in (main, variant))
    assert (spec_main["head"], spec_var["head"]) == ("Softmax", "ArcFace")
    assert spec_main["dataset"] == spec_var["dataset"] == "runs/facenet_lfw/tfrecords"  # the data is shared
    assert spec_main["preprocessing"]["method"] == "margin" and spec_main["preprocessing"]["margin"] == 16
    tr = json.loads((runs / "facenet_lfw" / "train.summary.json").read_text())
    classes = tr["num_classes"]
    assert tr["heldout"]["images"] == classes and tr["heldout"]["trained_images"] == 3 * classes  # 4 photos: 3 + 1
    assert 0 <= tr["heldout"]["accuracy"] <= 1 and tr["heldout"]["xent"] > 0
    ev = json.loads((runs / "facenet_lfw" / "evaluate.summary.json").read_text())
    assert {r.get("protocol") for r in ev["rows"]} == {"facenet"}
    comp = json.loads((runs / "facenet_lfw_compare" / "compare.json").read_text())
    assert [r["run"] for r in comp["rows"]] == ["facenet_lfw", "arcface"]
    assert {"train.head", "train.center_loss_factor", "train.prelogits_norm_loss_factor"} <= set(comp["differing"])
    assert not [k for k in comp["differing"] if k.startswith("compare.")]  # not the comparison's own parameters
    assert isinstance(comp["rows"][0]["held-out accuracy"], float)
    assert all(isinstance(r.get("lfw_fold10 accuracy"), float) for r in comp["rows"])
    assert "| facenet_lfw |" in (runs / "facenet_lfw_compare" / "compare.md").read_text()


def test_facenet_lfw_rerun_skips_all_but_compare(facenet_run):
    work, _ = facenet_run
    res = last_json(run_cli("pipeline", "--scenario", "facenet_lfw", "--params-dir", str(work / "params"), "--json",
                            cwd=work))
    assert [s["status"] for s in res["stages"]] == ["skipped"] * 5 + ["ran"]
    assert res["variants"][0]["stages"] == {"train": "skipped", "evaluate": "skipped"}


def test_bad_variants_file_is_one_line(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(REPO / "papermill_params" / "facenet_lfw", params / "fl")
    (params / "fl" / "variants.yaml").write_text("arcface:\n  train.hed: ArcFace\n")
    proc = run_cli("pipeline", "--scenario", "fl", "--params-dir", str(params), "--json", check=False, cwd=tmp_path)
    err = last_json(proc)["error"]
    assert proc.returncode == 1 and "\n" not in err
    assert "variants.yaml: arcface: train.hed: stage train has no field 'hed'; valid: dataset, dataset_weights" in err
    (params / "fl" / "variants.yaml").write_text("arcface:\n  compare.output: x\n")
    err = last_json(run_cli("pipeline", "--scenario", "fl", "--params-dir", str(params), "--json", check=False,
                            cwd=tmp_path))["error"]
    assert "'compare' is not a stage of scenario fl that a variant can change: convert, align" in err
