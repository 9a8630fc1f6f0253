"""The triplet scenario (#24) at test size: its own YAMLs with a smaller budget (people with >= 30
LFW photos outside fold 10, 4 photos each; a 20-pair sample of fold 10; a test backbone for 2
steps of P x K batches, P 4 x K 2), run as `recface pipeline --scenario triplet`: the batch-hard
run and its three variants (semi-hard, ArcFace, softmax + center loss) on the shared data, each
scored on the fold-10 sample, one compare table of the four. The full-size figures are in the
README (the sweep takes ~50 minutes on 2 cores)."""
import json
import shutil

import pytest
import yaml

from conftest import REPO, last_json, run_cli


@pytest.fixture(scope="module")
def triplet_run(lfw_dir, tmp_path_factory):
    from test_facenet_scenario import _fold10_sample

    work = tmp_path_factory.mktemp("triplet")
    params = work / "params" / "triplet"
    shutil.copytree(REPO / "papermill_params" / "triplet", params)
    _fold10_sample(lfw_dir, work / "pairs_sample.txt")
    small = {"convert": {"pairs": str(work / "pairs_sample.txt"), "folds": [1]},
             "align": {"min_images": 30, "max_images": 4, "workers": 1},
             "build": {"shards": 2},
             "train": {"backbone": "TestMobileFaceNet", "embd_shape": 32, "batch_size": 8, "steps_per_epoch": 2,
                       "sampler_params": {"k": 2}, "plan": [[1, 0.05, False, 1]], "val_batch_size": 32,
                       "checkpoint_every": 0, "tensorboard": False, "shuffle_buffer": 64}}
    for stage, over in small.items():
        p = params / f"{stage}.yaml"
        p.write_text(yaml.safe_dump({**yaml.safe_load(p.read_text()), **over}))
    proc = run_cli("pipeline", "--scenario", "triplet", "--params-dir", str(work / "params"), "--json", cwd=work)
    return work, last_json(proc)


def test_triplet_scenario_trains_the_sweep_and_compares_it(triplet_run):
    work, res = triplet_run
    runs = work / "runs" / "triplet"
    assert [(s["stage"], s["status"]) for s in res["stages"]] == [
        (s, "ran") for s in ("convert", "align", "build", "train", "evaluate", "compare")]
    assert [v["name"] for v in res["variants"]] == ["semi_hard", "arcface", "softmax_center"]
    assert all(v["stages"] == {"train": "ran", "evaluate": "ran"} for v in res["variants"])
    cfgs = {name: json.loads((d / "train" / "train_config.json").read_text())
            for name, d in [("batch_hard", runs)] + [(n, runs / "variants" / n) for n in ("semi_hard", "arcface",
                                                                                              "softmax_center")]}
    assert [(c["triplet_weight"], c["triplet_loss"], c["sampler"]) for c in cfgs.values()][:2] == [
        (1.0, "batch_hard", "pk"), (1.0, "semi_hard", "pk")]
    assert [(c["triplet_weight"], c["head"], c["sampler"]) for c in cfgs.values()][2:] == [
        (0.0, "ArcFace", "shuffle"), (0.0, "Softmax", "shuffle")]
    assert cfgs["batch_hard"]["normalization"] == "glint360k_mean_std"
    spec = json.loads((runs / "train" / "model.json").read_text())
    # the contract carries the normalisation's values, and the threshold of the final weights is recorded
    assert spec["preprocessing"]["normalization_values"] == {"mean": [0.6071, 0.4609, 0.3944],
                                                             "std": [0.2457, 0.2175, 0.2129]}
    assert -1 <= spec["verification_thresholds"]["final"]["lfw_fold10"]["cosine"] <= 1
    with open(runs / "train" / "history.csv") as f:
        head = f.readline().strip().split(",")
    assert {"triplet_active", "triplet_valid", "triplet_d_ap", "triplet_d_an", "embedding_spread"} <= set(head)
    comp = json.loads((work / "runs" / "triplet_compare" / "compare.json").read_text())
    assert [r["run"] for r in comp["rows"]] == ["triplet", "semi_hard", "arcface", "softmax_center"]
    assert {"train.triplet_loss", "train.head", "train.sampler"} <= set(comp["differing"])
    assert all(isinstance(r.get("lfw_fold10 accuracy"), float) for r in comp["rows"])
