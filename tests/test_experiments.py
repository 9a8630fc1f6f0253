"""Experiments you can compare (issue 14): a 2 x 2 sweep of the tiny scenario, killed after its
first variant and rerun (only the missing variants run), then one comparison table and the
overlay figures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recface_lib.errors import ConfigError
from recface_lib.experiments import parse_grid
from recface_lib.pipeline import _rewrite

from conftest import last_json


def _sweep_cmd():
    exe = Path(sys.executable).with_name("recface")
    return [str(exe), "sweep", "--scenario", "tiny", "--grid", "train.head=ArcFace,CosFace", "train.margin=0.3,0.5",
            "--to", "evaluate", "--json"]


@pytest.mark.slow  # the kill waits for the sweep's own record of a finished variant: no timing to share the machine with
def test_sweep_resumes_and_compares(tmp_path, friends_dir):
    env = {**os.environ, "RECFACE_NO_PROGRESS": "1"}
    sweep = tmp_path / "runs" / "tiny" / "sweeps" / "train.head_train.margin"
    first = sweep / "sweep.json"  # written when a variant is finished

    def finished():
        try:
            return len(json.loads(first.read_text())["variants"])
        except (OSError, ValueError, KeyError):
            return 0

    proc = subprocess.Popen(_sweep_cmd(), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    t0 = time.time()
    while not finished():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() - t0 < 600, "the first variant did not finish in 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its notebook kernel and all
    proc.wait()
    done = json.loads((sweep / "sweep.json").read_text())
    assert [v["name"] for v in done["variants"]][:1] == ["head-ArcFace_margin-0.3"]
    n_done = len(done["variants"])  # 1, or 2 if the second variant finished before the kill landed
    again = subprocess.run(_sweep_cmd(), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    res = last_json(again)
    assert res["variants"] == 4 and res["ran"] == 4 - n_done  # finished variants are not run again
    variants = json.loads((sweep / "sweep.json").read_text())["variants"]
    assert set(variants[0]["stages"].values()) == {"skipped"}
    comp = json.loads((sweep.parent / f"{sweep.name}_compare" / "compare.json").read_text())
    assert len(comp["rows"]) == 4 and comp["differing"] == ["train.head", "train.margin"]
    assert {(r["train.head"], r["train.margin"]) for r in comp["rows"]} == {
        ("ArcFace", 0.3), ("ArcFace", 0.5), ("CosFace", 0.3), ("CosFace", 0.5)}
    for r in comp["rows"]:
        assert 0.0 <= r["test accuracy"] <= 1.0 and 0.0 <= r["val test (best)"] <= 1.0 and r["steps"] == 2
    assert sorted(Path(p).name for p in res["plots"]) == ["compare_curves.png", "compare_roc_test.png"]
    assert all((tmp_path / p).is_file() for p in res["plots"])
    md = (tmp_path / res["table"]).read_text()
    assert md.count("\n| head-") == 4
    # each variant trained in its own folder, from the shared build
    trains = sorted(p.parent.name for p in sweep.glob("*/train/model.json"))
    assert len(trains) == 4
    assert json.loads((sweep / "head-CosFace_margin-0.5" / "params.json").read_text())["train"]["dataset"] == \
        "runs/tiny/tfrecords"


def test_grid_and_path_rewriting():
    assert parse_grid(["train.margin=0.3,0.5", "train.head=CosFace"]) == [("train", "margin", [0.3, 0.5]),
                                                                         ("train", "head", ["CosFace"])]
    with pytest.raises(ConfigError, match="has no field 'marign'"):
        parse_grid(["train.marign=0.3"])
    with pytest.raises(ConfigError, match="expected STAGE.FIELD=V1,V2"):
        parse_grid(["margin=0.3"])
    moved = {"runs/t/train": "runs/t/sweeps/g/v/train", "runs/t/classify": "runs/t/sweeps/g/v/classify"}
    assert _rewrite({"run": "runs/t/train", "classifier": "runs/t/classify/classifier", "models": ["runs/t/train", "x"],
                     "other": "runs/t/training"}, moved) == {
        "run": "runs/t/sweeps/g/v/train", "classifier": "runs/t/sweeps/g/v/classify/classifier",
        "models": ["runs/t/sweeps/g/v/train", "x"], "other": "runs/t/training"}


def test_runs_record_version_and_commit(tmp_path):
    from recface_lib import __version__
    from recface_lib.manifest import read_manifest, write_manifest

    write_manifest(tmp_path / "out", "train", {}, {})
    m = read_manifest(tmp_path / "out")
    assert m["recface_version"] == __version__
    assert m["git_commit"] is None or len(m["git_commit"]) == 40  # None for an installed wheel
