"""Training at scale (#16): gradient accumulation, the weights' moving average (EMA), and the new
heads inside the trainer, with kill/resume."""
import numpy as np
import pytest

from conftest import h5_weights, killed_after_checkpoint, max_diff, runs_differ


def _dense_fit(batch, accumulate, steps, ema=0.0, seed=0):
    """A bias-free dense model (no batch norm: equal updates are exactly comparable) trained with
    make_optimizer; returns (weights after every optimizer call, the optimizer, the variable)."""
    import keras

    from recface_lib.train.optim import make_optimizer

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.normal(size=(64, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
    opt = make_optimizer("sgd", 0.1, 1e-3, momentum=0.9, ema=ema, accumulate=accumulate)
    model.compile(optimizer=opt, loss="mse")
    hist = []
    for i in range(steps):
        xb, yb = x[(i * batch) % 64:(i * batch) % 64 + batch], y[(i * batch) % 64:(i * batch) % 64 + batch]
        model.train_on_batch(xb, yb)
        hist.append(model.weights[0].numpy().astype(np.float64).copy())
    return hist, opt, model.weights[0]


def test_accumulation_equals_the_big_batch():
    """4 updates of batch 16 == 8 micro-batches of 8 accumulated in pairs (the lr, momentum and
    weight decay mean the same per effective step)."""
    big, _, _ = _dense_fit(16, 1, 4)
    acc, _, _ = _dense_fit(8, 2, 8)
    np.testing.assert_allclose(acc[1::2], big, atol=1e-6)
    np.testing.assert_array_equal(acc[0], acc[0])  # the first micro-batch did not update...
    assert not np.allclose(acc[1], _dense_fit(8, 1, 1)[0][0])  # ...a plain step of 8 would differ


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_is_the_average_of_the_weights(accumulate):
    """The kept average against a loop over the live weights (Keras averages at every optimizer
    call with momentum ema^(1/N); the calls before the first update copy the weights)."""
    from recface_lib.train.optim import ema_values

    m = 0.8
    steps = 6 * accumulate
    hist, opt, var = _dense_fit(8, accumulate, steps, ema=m)
    mm = m ** (1.0 / accumulate)
    avg = None
    for i, w in enumerate(hist):
        avg = w.copy() if i < accumulate else mm * avg + (1 - mm) * w
    got = np.asarray(ema_values(opt, [var])[0], np.float64)
    np.testing.assert_allclose(got, avg, atol=1e-6)
    assert np.abs(got - hist[-1]).max() > 1e-4  # the average is not the live weights


def _train(ds, out, **kw):
    from recface_lib.train.trainer import train

    cfg = {"dataset": str(ds), "output": str(out), "input_size": 32, "embd_shape": 32, "batch_size": 8,
           "backbone": "TestMobileFaceNet", "shuffle_buffer": 64, "tensorboard": False, "steps_per_epoch": 4, "deterministic": True,
           "checkpoint_every": 2, "plan": [[1, 0.05], [1, 0.01]], **kw}
    return train(cfg, show_progress=False)


def test_accumulated_lr_follows_the_plan_in_micro_batches():
    from recface_lib.train.plan import PlanSchedule, parse_plan, plan_lr_schedule

    p = PlanSchedule(parse_plan([[1, 0.1], {"epochs": 1, "lr": 0.05, "decay": "cosine", "lr_end": 0.001}]), 8)
    sched = plan_lr_schedule(p, 2)
    for u in range(8):
        assert float(sched(u)) == pytest.approx(p.lr_at(2 * u + 1), rel=1e-5)


@pytest.mark.parametrize("head", ["CurricularFace", "MagFace"])
def test_new_heads_train(ds, tmp_path, head):
    res = _train(ds, tmp_path / "run", head=head, plan=[[1, 0.05]])
    assert res["global_step"] == 4 and np.isfinite(res["loss"])
    from recface_lib.models.build import head_name
    import json
    assert json.loads((tmp_path / "run" / "model.json").read_text())["head"] == head_name(head)


def test_ema_accumulation_and_subcenter_head_resume_exactly(ds, tmp_path):
    kw = {"head": "SubCenterArcFace", "ema": 0.9, "accumulate": 2}
    full = _train(ds, tmp_path / "full", **kw)
    assert full["effective_batch"] == 16 and np.isfinite(full["loss"])
    avg, live = (h5_weights(tmp_path / "full" / "final" / n) for n in ("backbone.weights.h5", "live.weights.h5"))
    assert max_diff(avg, live) > 1e-4  # final/ holds the average, live.weights.h5 the last weights
    with killed_after_checkpoint(6):
        _train(ds, tmp_path / "cut", **kw)
    res = _train(ds, tmp_path / "cut", **kw)
    assert res["resumed_from"].endswith("ckpt-000000006") and res["global_step"] == 8
    for n in ("backbone.weights.h5", "live.weights.h5"):
        d = runs_differ(tmp_path / "full", tmp_path / "cut", n)
        assert d < 1e-5, f"{n}: resumed run differs by {d}"


def test_facenet_recipe_parts_train_softmax_adam_and_a_schedule_file(ds, tmp_path):
    """facenet's classifier parts in the trainer (#23): the Softmax head, Adam with epsilon 0.1 and
    slim's L2, a schedule file as the plan (its stages in the summary, its rate in the history)."""
    import json

    f = tmp_path / "schedule.txt"
    f.write_text("# facenet style\n0: 0.01\n\n2: 0.001\n3: -1\n")
    res = _train(ds, tmp_path / "run", head="Softmax", optimizer="adam", epsilon=0.1, plan=str(f))
    assert res["global_step"] == 8 and np.isfinite(res["loss"])
    assert res["plan"]["schedule_file"] == str(f) and res["plan"]["stages"] == [[1, 0.01], [1, 0.001]]
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    lr = [float(r.split(",")[rows[0].split(",").index("lr")]) for r in rows[1:]]
    assert lr == [0.01, 0.001]
    assert json.loads((tmp_path / "run" / "model.json").read_text())["head"] == "Softmax"
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["summary"]["plan"]["stages"] == [[1, 0.01], [1, 0.001]]


def test_two_builds_train_as_one_dataset(friends_dir, tmp_path):
    """facenet's --data_dir a:b (#23): two build outputs as one dataset; the second part's labels are
    shifted past the first's classes (every record's label, counted), class and sample counts add
    up, each part is recorded in model.json; parts with different preprocessing are refused."""
    import collections
    import json
    import shutil

    from recface_lib.build import build
    from recface_lib.data.input_pipeline import make_dataset
    from recface_lib.data.tfrecord import load_metadata
    from recface_lib.errors import ConfigError

    people = sorted((friends_dir / "train").iterdir())
    parts = []
    for k, group in enumerate((people[:3], people[3:5])):
        src = tmp_path / f"src{k}"
        src.mkdir()
        for person in group:  # symlinks: the photos stay in ../shared
            (src / person.name).symlink_to(person, target_is_directory=True)
        build({"input": str(src), "output": str(tmp_path / f"part{k}"), "shards": 2}, show_progress=False)
        parts.append(str(tmp_path / f"part{k}"))

    def labels(path):
        return [int(y) for _, ys in make_dataset(path, 16, training=False, image_size=32) for y in ys.numpy()]

    a, b, both = labels(parts[0]), labels(parts[1]), labels(parts)
    assert collections.Counter(both) == collections.Counter(a) + collections.Counter(x + 3 for x in b)
    # each part's share of the training stream: its size by default (40 of 100 from the second),
    # else its weight (1 : 3); seeded, 1,600 labels each (measured: see the figures printed)
    def second_share(weights):
        ds = make_dataset(parts, 16, training=True, image_size=32, deterministic=True, part_weights=weights)
        ys = np.concatenate([y.numpy() for _, y in ds.take(100)])
        return float(np.mean(ys >= 3))
    plain, weighted = second_share(None), second_share([1, 3])
    print(f"second part's share of the stream: {plain:.3f} by size, {weighted:.3f} with weights 1:3")
    assert abs(plain - 0.40) < 0.02 and abs(weighted - 0.75) < 0.04
    meta = load_metadata(parts)
    assert meta["num_classes"] == 5 and meta["num_samples"] == len(a) + len(b) == 100
    assert meta["class_names"] == [p.name for p in people[:5]]
    res = _train(parts[0], tmp_path / "run", dataset=parts, plan=[[1, 0.05]], steps_per_epoch=3, checkpoint_every=0,
                 dataset_weights=[1, 3])
    assert res["global_step"] == 3 and res["num_classes"] == 5
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    assert spec["dataset"] == parts and [p["label_offset"] for p in spec["datasets"]] == [0, 3]
    assert [p["num_samples"] for p in spec["datasets"]] == [60, 40] and all(len(p["key"]) == 16 for p in spec["datasets"])
    other = tmp_path / "other"
    shutil.copytree(parts[1], other)
    m = json.loads((other / "metadata.json").read_text())
    m["preprocessing"] = {"size": 96, "detector": "dlib_hog"}
    (other / "metadata.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"dataset: .*part0 and .*other were made with different preprocessing"):
        _train(parts[0], tmp_path / "run2", dataset=[parts[0], str(other)])
