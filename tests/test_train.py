"""The training engine on real photos (lfw_friends16, tiny steps): kill and resume, NaN guard,
validation + best weights, copy_to resume, transfer learning with a frozen backbone, and the
GPU-only code paths (mixed precision, XLA, a 2-replica MirroredStrategy) exercised on CPU."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import h5_weights, last_json, max_diff, run_cli

# TestMobileFaceNet: the default network's layer kinds at a fifth of its trace time (models/backbones/
# mobilefacenet.py); the GPU-paths test keeps the default network for mixed precision
TINY = ["--set", "input_size=32", "--set", "embd_shape=32", "--set", "batch_size=16", "--set", "shuffle_buffer=64",
        "--set", "tensorboard=false", "--set", "backbone=TestMobileFaceNet"]


def train_args(ds, out, *extra):
    return ["train", "--dataset", str(ds), "--output", str(out), *TINY, *extra, "--json"]


def test_kill_and_resume_gives_the_same_weights(ds, tmp_path):
    plan = ["--set", "plan=[[1, 0.05, false, 2], {epochs: 1, lr: 0.01, decay: cosine, weight_decay: 1.0e-4}]",
            "--set", "steps_per_epoch=6", "--set", "checkpoint_every=2", "--set", "deterministic=true",
            "--set", "head=ArcFace"]
    ref = last_json(run_cli(*train_args(ds, tmp_path / "ref", *plan)))
    assert ref["global_step"] == 12 and ref["resumed_from"] is None

    run = tmp_path / "killed"
    exe = Path(sys.executable).with_name("recface")
    proc = subprocess.Popen([str(exe), *train_args(ds, run, *plan)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "RECFACE_NO_PROGRESS": "1"})
    target = run / "checkpoints" / "ckpt-000000008"  # mid-stage-2, between segment ends
    t0 = time.time()
    while not target.is_dir() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*"))
    assert done and done[-1] >= "ckpt-000000008"
    res = last_json(run_cli(*train_args(ds, run, *plan)))
    assert res["resumed_from"].endswith(done[-1])
    lost = 12 - int(done[-1][5:])
    assert lost <= 12 - 8  # at most the steps since the last checkpoint are redone
    diff = max_diff(h5_weights(tmp_path / "ref" / "final" / "backbone.weights.h5"),
                    h5_weights(run / "final" / "backbone.weights.h5"))
    assert diff < 1e-5, f"resumed run differs from the uninterrupted one by {diff}"
    hist = (run / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 3  # 2 segments in stage 1, 1 in stage 2, none duplicated by the resume
    assert (run / "curves.png").stat().st_size > 5000
    # a complete plan is not retrained
    again = last_json(run_cli(*train_args(ds, run, *plan)))
    assert again["global_step"] == 12 and again["resumed_from"].endswith("ckpt-000000012")


def test_nonsense_learning_rates_are_refused_before_training(ds, tmp_path):
    """A plan learning rate of .nan (or 1e35) used to pass validation and end `ok: true` with NaN
    weights; the NaN guard itself is tested in test_reliability.py (never a poisoned checkpoint)."""
    for lr, needle in ((".nan", "plan[1].lr: must be a finite number"), ("1.0e+35", "plan[1].lr: must be in [0, 10.0]")):
        proc = run_cli(*train_args(ds, tmp_path / "nan", "--set", f"plan=[[1, 0.01], [1, {lr}]]"), check=False)
        assert proc.returncode == 1 and needle in last_json(proc)["error"]
    assert not (tmp_path / "nan" / "checkpoints").exists()


def test_validation_best_copy_to_and_transfer(ds, tmp_path):
    val = ds / "test.bin"
    assert val.is_file()
    drive = tmp_path / "drive"
    run = tmp_path / "run"
    common = ["--set", f"val_sets=[{val}]", "--set", "steps_per_epoch=4", "--set", f"copy_to={drive}",
              "--set", "head=AdaFace"]
    r1 = last_json(run_cli(*train_args(ds, run, "--set", "plan=[[1, 0.05, true, 2]]", *common)))
    assert set(r1["best"]) == {"test"} and 0.0 <= r1["best"]["test"]["accuracy"] <= 1.0
    assert (run / "best" / "test.weights.h5").is_file()
    assert "val_test" in (run / "history.csv").read_text().splitlines()[0]
    # the mean of the last (up to 10) validations, facenet's wiki's figure to compare settings by
    import csv

    import pytest
    accs = [float(r["val_test"]) for r in csv.DictReader((run / "history.csv").read_text().splitlines())]
    assert len(accs) == 2 and r1["validation_last10"]["test"] == {"mean": pytest.approx(sum(accs) / 2), "of": 2}
    assert sorted(p.name for p in drive.glob("ckpt-*"))[-1] == "ckpt-000000004"
    # #24: the threshold travels: model.json holds, for the final weights and for each best, the
    # mean of the folds' best thresholds; evaluating the final weights again gives the same one,
    # and export takes the threshold of the weights it exports
    from recface_lib.embedders.model import load_run, read_run_spec, weights_threshold
    from recface_lib.train.callbacks import PairSetValidator
    spec = read_run_spec(run)
    fin, best = spec["verification_thresholds"]["final"]["test"], spec["verification_thresholds"]["test"]["test"]
    again = PairSetValidator(str(val), 32, True)(load_run(run))
    assert fin["cosine"] == pytest.approx(again.threshold, abs=1e-6) and fin["accuracy"] == pytest.approx(again.accuracy)
    assert fin["global_step"] == 4 and fin["l2"] == pytest.approx(np.sqrt(2 - 2 * fin["cosine"]))
    assert best["cosine"] == r1["best"]["test"]["threshold"] and best["global_step"] == r1["best"]["test"]["global_step"]
    assert weights_threshold(spec, "final") == fin["cosine"] and weights_threshold(spec, "test") == best["cosine"]
    assert weights_threshold({}, "final") is None

    # the local runtime is lost: the plan is extended and resumes from the Drive copy
    import shutil
    shutil.rmtree(run / "checkpoints")
    r2 = last_json(run_cli(*train_args(ds, run, "--set", "plan=[[1, 0.05, true, 2], [0.5, 0.01]]", *common)))
    assert r2["resumed_from"] == str(drive / "ckpt-000000004") and r2["global_step"] == 6

    # transfer learning: new classes, backbone frozen in the first stage, then fine-tuned
    tl = tmp_path / "transfer"
    r3 = last_json(run_cli(*train_args(ds, tl, "--set", f"pretrained={run}", "--set", "head=CosFace",
                                       "--set", "plan=[{epochs: 1, lr: 0.05, freeze_backbone: true}]",
                                       "--set", "steps_per_epoch=3")))
    assert r3["global_step"] == 3
    before = h5_weights(run / "final" / "backbone.weights.h5")
    after = h5_weights(tl / "final" / "backbone.weights.h5")
    assert max_diff(before, after) == 0.0, "a frozen backbone must not change"
    r4 = last_json(run_cli(*train_args(ds, tmp_path / "tune", "--set", f"pretrained={run}",
                                       "--set", "plan=[[1, 0.05]]", "--set", "steps_per_epoch=2")))
    assert r4["global_step"] == 2
    assert max_diff(before, h5_weights(tmp_path / "tune" / "final" / "backbone.weights.h5")) > 0


def test_gpu_paths_on_cpu_mirrored_bfloat16_and_xla(ds, tmp_path):
    one = ["--set", "plan=[[1, 0.01]]", "--set", "steps_per_epoch=2", "--set", "cpu_replicas=2"]
    mirror = train_args(ds, tmp_path / "mirror", *one, "--set", "precision=mixed_bfloat16",
                        "--set", "backbone=MobileFaceNetV2", "--set", "head=AdaCos")
    # Partial FC over two replicas: each samples for its half of the batch, the row-sparse
    # gradients are summed across replicas and the sampled centres updated once
    pfc = train_args(ds, tmp_path / "pfc", *one, "--set", "sample_rate=0.25")
    # #24: a triplet loss with random draws on P x K batches, each replica given whole identities
    # (P 8 = 4 per replica), in mixed precision; and the replicas' draws are seeded apart
    trip = train_args(ds, tmp_path / "trip", *one, "--set", "precision=mixed_bfloat16", "--set", "triplet_weight=1",
                      "--set", "triplet_loss=margin_filter", "--set", "sampler=pk", "--set", "sampler_params={k: 2}")
    seeds = ("import json, tensorflow as tf\nfrom recface_lib.train.terms.triplet import draw_seed\n"
             "st = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])\n"
             "v = st.experimental_local_results(st.run(lambda: draw_seed(3, tf.constant(5, tf.int64))))\n"
             "print(json.dumps({'seeds': [x.numpy().tolist() for x in v]}))\n")
    # logical CPUs exist only before TensorFlow starts: the runs in one fresh process, through the
    # function the entry point calls (one TensorFlow start instead of three)
    code = ("import sys\nfrom recface_lib.cli import main\n"
            f"rc = max(main(a) or 0 for a in {[mirror, pfc, trip]!r})\n{seeds}sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "RECFACE_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r, p, t = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith('{"ok"')]
    assert r["replicas"] == 2 and r["precision"] == "mixed_bfloat16" and np.isfinite(r["loss"])
    assert p["replicas"] == 2 and p["global_step"] == 2 and np.isfinite(p["loss"])
    assert t["replicas"] == 2 and t["global_step"] == 2 and np.isfinite(t["loss"])
    seeds = next(json.loads(ln)["seeds"] for ln in proc.stdout.splitlines() if ln.startswith('{"seeds"'))
    assert seeds == [[3, 5 * 1024], [3, 5 * 1024 + 1]]
    assert json.loads((tmp_path / "pfc" / "manifest.json").read_text())["parameters"]["sample_rate"] == 0.25
    # XLA in this process, after an earlier deterministic run left op determinism on (under which
    # Keras quietly compiles without XLA): the summary reports the step Keras compiled
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    r = last_json(run_cli(*train_args(ds, tmp_path / "xla", "--set", "plan=[[1, 0.01]]", "--set", "steps_per_epoch=2",
                                      "--set", "jit_compile=true", "--set", "head=SphereFace")))
    assert r["jit_compile"] is True and r["global_step"] == 2 and np.isfinite(r["loss"])
    bad = run_cli(*train_args(ds, tmp_path / "both", "--set", "jit_compile=true", "--set", "deterministic=true"),
                  check=False)
    assert bad.returncode == 1 and "jit_compile with deterministic" in last_json(bad)["error"]
    w = h5_weights(tmp_path / "mirror" / "final" / "backbone.weights.h5")
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in w.values())  # variables stay float32


def test_bad_parameters_fail_cleanly(ds, tmp_path):
    proc = run_cli(*train_args(ds, tmp_path / "bad", "--set", "backbone=ResNet35"), check=False)
    assert proc.returncode == 1 and "backbone: 'ResNet35' is not one of" in last_json(proc)["error"]
    proc = run_cli("train", "--dataset", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"), "--json", check=False)
    assert proc.returncode == 1 and "nowhere" in last_json(proc)["error"]


def test_resume_across_head_aliases_and_head_params(ds, tmp_path):
    """The resume fingerprint holds the head's canonical name: a run started as the guide's
    `ArcFaceHead` resumes as `ArcFace`; head-specific parameters travel as one mapping."""
    run = tmp_path / "alias"
    common = ["--set", "steps_per_epoch=2", "--set", "head_params={easy_margin: true}"]
    r1 = last_json(run_cli(*train_args(ds, run, "--set", "head=ArcFaceHead", "--set", "plan=[[1, 0.01]]", *common)))
    assert r1["global_step"] == 2
    r2 = last_json(run_cli(*train_args(ds, run, "--set", "head=ArcFace", "--set", "plan=[[1, 0.01], [1, 0.001]]",
                                       *common)))
    assert r2["resumed_from"] and r2["global_step"] == 4
    spec = json.loads((run / "model.json").read_text())
    assert spec["head"] == "ArcFace" and spec["head_params"] == {"easy_margin": True}
    assert spec["preprocessing"] is None  # raw photos, no contract: such a model cannot be exported
    proc = run_cli("export", "--run", str(run), "--output", str(tmp_path / "x.zip"), "--check-images",
                   str(ds / "test"), "--json", check=False)
    assert proc.returncode == 1 and "no preprocessing contract" in last_json(proc)["error"]
    assert not (tmp_path / "x.zip").exists()
