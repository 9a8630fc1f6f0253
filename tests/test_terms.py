"""The objective's terms (#23): facenet's center loss and prelogits norm loss against NumPy, the
center loss on facenet's own toy problem, inside the trainer (kill and resume keep the centres;
the divergence rule stops a run in one line), and the registry the trainer builds from."""
import json

import numpy as np
import pytest

from conftest import h5_weights, killed_after_checkpoint, max_diff


def _center_reference(centers, x, y, alfa):
    """facenet's center_loss, loop by loop in float64: the loss with the centres before the update,
    then c_y -= (1 - alfa)(c_y - x) per sample (repeated labels add up); the gradient of the loss
    w.r.t. the features."""
    batch = centers[y]
    loss = np.mean((x - batch) ** 2)
    grad = 2.0 * (x - batch) / x.size
    new = centers.copy()
    for i, c in enumerate(y):
        new[c] -= (1 - alfa) * (batch[i] - x[i])
    return loss, new, grad


def test_center_loss_equals_numpy_step_by_step():
    import tensorflow as tf

    from recface_lib.train.terms.center import center_update

    rng = np.random.default_rng(3)
    C, D, B, alfa = 6, 5, 12, 0.7
    c_ref = np.zeros((C, D))
    c = tf.constant(np.zeros((C, D), np.float32))
    for step in range(5):
        x = rng.normal(size=(B, D))
        y = rng.integers(0, C, B)
        y[:3] = y[0]  # a label repeated three times in the batch
        xt = tf.constant(x.astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss, c = center_update(c, xt, tf.constant(y.astype(np.int32)), alfa)
        grad = tape.gradient(loss, xt)
        want_loss, c_ref, want_grad = _center_reference(c_ref, x, y, alfa)
        assert float(loss) == pytest.approx(want_loss, rel=1e-5), step
        np.testing.assert_allclose(np.asarray(c), c_ref, atol=1e-5, err_msg=f"centres, step {step}")
        np.testing.assert_allclose(np.asarray(grad), want_grad, atol=1e-6, err_msg=f"gradient, step {step}")
    assert np.abs(c_ref).max() > 0.1  # the centres moved


def test_center_loss_passes_facenets_toy_check():
    """facenet's test_center_loss: 16 classes on a 2-d grid, features at their class centre, alfa
    0.5, batches of 16 random labels, 100 steps: the centres are found and the loss is 0."""
    import tensorflow as tf

    from recface_lib.train.terms.center import center_update

    label_to_center = np.array([[-3, -3], [-3, -1], [-3, 1], [-3, 3], [-1, -3], [-1, -1], [-1, 1], [-1, 3],
                                [1, -3], [1, -1], [1, 1], [1, 3], [3, -3], [3, -1], [3, 1], [3, 3]], np.float32)
    np.random.seed(seed=666)
    c = tf.zeros((16, 2))
    for _ in range(100):
        lbls = np.random.randint(low=0, high=16, size=(16,))
        loss, c = center_update(c, tf.constant(label_to_center[lbls]), tf.constant(lbls.astype(np.int32)), 0.5)
    np.testing.assert_almost_equal(np.asarray(c), label_to_center, decimal=5)
    np.testing.assert_almost_equal(float(loss), 0.0, decimal=5)


def test_prelogits_norm_equals_numpy():
    from types import SimpleNamespace

    from recface_lib.train.terms.prelogits_norm import PrelogitsNormTerm

    rng = np.random.default_rng(4)
    x = rng.normal(size=(9, 7)) * 3
    for p in (1.0, 2.0, 1.5):
        run = SimpleNamespace(cfg=SimpleNamespace(prelogits_norm_p=p), meta={})
        term = PrelogitsNormTerm(run)
        term.build(None)
        got = float(term.loss(x.astype(np.float32), None, None, {}, True))
        want = np.mean(np.sum((np.abs(x) + 1e-4) ** p, axis=1) ** (1 / p))  # tf.norm(|x| + eps, ord=p)
        assert got == pytest.approx(want, rel=1e-5), p


def test_registry_and_plan_stage_weights():
    from recface_lib.errors import ConfigError
    from recface_lib.train.plan import parse_plan
    from recface_lib.train.terms import TERMS, WEIGHT_FIELDS

    assert list(TERMS) == ["distill", "margin", "center", "prelogits_norm", "triplet"]
    assert WEIGHT_FIELDS == ("distill_weight", "head_weight", "center_loss_factor", "prelogits_norm_loss_factor",
                             "triplet_weight")
    st = parse_plan([[1, 0.1], {"epochs": 1, "lr": 0.01, "center_loss_factor": 0.0}])
    assert st[0].weights == {} and st[1].weights == {"center_loss_factor": 0.0}
    with pytest.raises(ConfigError, match=r"plan\[0\]: unknown key\(s\) 'center_weight'; valid: .*center_loss_factor"):
        parse_plan([{"epochs": 1, "lr": 0.1, "center_weight": 1}])


def _train(ds, out, **kw):
    from recface_lib.train.trainer import train

    cfg = {"dataset": str(ds), "output": str(out), "input_size": 32, "embd_shape": 16, "batch_size": 8,
           "backbone": "TestMobileFaceNet", "shuffle_buffer": 64, "tensorboard": False, "steps_per_epoch": 4,
           "deterministic": True, "checkpoint_every": 2, "head": "Softmax", "optimizer": "adam", "epsilon": 0.1,
           "center_loss_factor": 0.5, "center_loss_alfa": 0.9, "prelogits_norm_loss_factor": 5e-3,
           "plan": [[1, 0.01], {"epochs": 1, "lr": 0.001, "center_loss_factor": 0.1}], **kw}
    return train(cfg, show_progress=False)


def _centres(run):
    from recface_lib.train.checkpoint import find_latest

    w = h5_weights(find_latest(run / "checkpoints") / "model.weights.h5")
    return {k: v for k, v in w.items() if "center_loss" in k}


def test_softmax_center_loss_run_resumes_with_the_same_centres(ds, tmp_path):
    """facenet's objective in the trainer: Softmax + center loss + prelogits norm; a run killed after
    its step-6 checkpoint and resumed ends with the uninterrupted run's centres and weights; the
    centres are not trainable (the optimizer never holds them) and moved from zero."""
    full = _train(ds, tmp_path / "full")
    assert full["global_step"] == 8 and np.isfinite(full["loss"])
    rows = (tmp_path / "full" / "history.csv").read_text().splitlines()
    assert "center_loss" in rows[0] and "prelogits_norm" in rows[0]
    with killed_after_checkpoint(6):
        _train(ds, tmp_path / "cut")
    res = _train(ds, tmp_path / "cut")
    assert res["resumed_from"] and res["global_step"] == 8
    a, b = _centres(tmp_path / "full"), _centres(tmp_path / "cut")
    assert a and max_diff(a, b) < 1e-6
    assert max(float(np.abs(v).max()) for v in a.values()) > 1e-3
    from conftest import runs_differ
    assert runs_differ(tmp_path / "full", tmp_path / "cut") < 1e-5


def test_center_loss_divergence_stops_the_run_in_one_line(friends_dir, tmp_path):
    """Two classes in batches of 16: some class appears >= 8 times in every batch, past alfa 0.6's
    limit of 2 / (1 - 0.6) = 5; the run stops at its first step with the rule, not a NaN later."""
    from recface_lib.build import build
    from recface_lib.train.trainer import TrainingError

    two = tmp_path / "two"
    two.mkdir()
    for person in sorted((friends_dir / "train").iterdir())[:2]:  # symlinks: the photos stay in ../shared
        (two / person.name).symlink_to(person, target_is_directory=True)
    build({"input": str(two), "output": str(tmp_path / "ds"), "shards": 1}, show_progress=False)
    with pytest.raises(TrainingError, match=r"a class appears (\d+) times in one batch; past 2 / \(1 - center_loss_alfa\) "
                                            r"= 5 its centre update overshoots") as e:
        _train(tmp_path / "ds", tmp_path / "run", batch_size=16, center_loss_alfa=0.6)
    assert "\n" not in str(e.value) and "at step 0" in str(e.value)


def _triplet(ds, out, **kw):
    return _train(ds, out, **{"head": "ArcFace", "center_loss_factor": 0.0, "prelogits_norm_loss_factor": 0.0,
                              "triplet_weight": 1.0, "triplet_loss": "batch_hard", "sampler": "pk",
                              "sampler_params": {"k": 2}, "plan": [[1, 0.01], [1, 0.001]], **kw})


def test_triplet_run_on_pk_batches_resumes_the_same_sequence(ds, tmp_path):
    """#24: facenet's triplet selection alone (the margin head weighs head_weight 0, so it is not built)
    on P x K batches (P 4, K 2): the active fraction, the valid pairs and the mean distances are
    logged, and a run killed after its step-6 checkpoint and resumed ends with the uninterrupted
    run's weights: the sampler continues its sequence from the step, and the loss's random
    negatives are drawn from the step's seed, not from a generator's state that a restart loses."""
    import csv

    full = _triplet(ds, tmp_path / "full", triplet_loss="facenet")
    assert full["global_step"] == 8 and np.isfinite(full["loss"])
    with open(tmp_path / "full" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "triplet_active" in rows[0] and 0 <= float(rows[0]["triplet_active"]) <= 1
    assert rows[0]["accuracy"] == "nan" and "loss_triplet" not in rows[0]  # head_weight 0: no head, one term
    assert json.loads((tmp_path / "full" / "model.json").read_text())["head"] is None  # and model.json says so
    assert float(rows[0]["triplet_valid"]) == 4  # one (anchor, positive) pair per identity of a P x K batch
    assert 0 <= float(rows[0]["triplet_d_ap"]) < float(rows[0]["triplet_d_an"]) + 1 and float(rows[0]["triplet_d_an"]) > 0
    with killed_after_checkpoint(6):
        _triplet(ds, tmp_path / "cut", triplet_loss="facenet")
    res = _triplet(ds, tmp_path / "cut", triplet_loss="facenet")
    assert res["resumed_from"] and res["global_step"] == 8
    from conftest import runs_differ
    assert runs_differ(tmp_path / "full", tmp_path / "cut") < 1e-5
    # a P x K batch larger than the data allows: one line, before the model is built
    from recface_lib.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^sampler pk: .*friends16 has 16 classes with any images .*fewer than the "
                                          r"P = 32 identities a batch of 64 needs$"):
        _triplet(ds, tmp_path / "big", batch_size=64)


def test_triplet_collapse_guard_stops_the_run_in_one_line(ds, tmp_path):
    """The collapse guard, made to fire: a spread threshold above any possible spread (2.0) for 3 steps
    stops the run at step 3 with one line naming the rule and the step-2 checkpoint, not a model of
    one point 2,000 steps later."""
    from recface_lib.train.trainer import TrainingError

    with pytest.raises(TrainingError) as e:
        _triplet(ds, tmp_path / "run", collapse_spread=2.0, collapse_steps=3)
    msg = str(e.value)
    assert "\n" not in msg and "at step 2: triplet: the embeddings collapsed to a point (spread " in msg
    assert "for 3 steps in a row" in msg and msg.endswith("ckpt-000000002")
