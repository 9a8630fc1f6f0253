"""facenet's held-out validation (#23): the per-class split against a transcription of facenet's
``split_dataset(mode='SPLIT_IMAGES')``, held-out records never trained on, the held-out
cross-entropy and accuracy against NumPy on the same records, the curves, and bad input."""
import math

import numpy as np
import pytest

from recface_lib.errors import ConfigError
from recface_lib.data.samplers import record_labels
from recface_lib.train.heldout import split_heldout


def _facenet_split_counts(n: int, ratio: float, min_nrof_images_per_class: int = 0):
    """facenet/src/facenet.py split_dataset, SPLIT_IMAGES branch, for one class of n images: its
    (train, validation) image counts, or None where facenet drops the class."""
    split = int(math.floor(n * (1 - ratio)))
    if split == n:
        split = n - 1
    if split >= min_nrof_images_per_class and n - split >= 1:
        return split, n - split
    return None


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 0.5, 0.7])
def test_split_follows_facenets_rule_and_keeps_one_image_per_class(ratio):
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 60, size=200)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    held = split_heldout(labels, ratio, seed=7)
    checked = 0
    for c, n in enumerate(sizes):
        mine = int(held[labels == c].sum())
        train, val = _facenet_split_counts(int(n), ratio)
        if train >= 1:  # where facenet trains on the class, the counts are its own
            assert (n - mine, mine) == (train, val), (c, n)
            checked += 1
        else:  # facenet would train on none of its images: here one stays in training
            assert n - mine == 1, (c, n)
    assert checked > 150
    assert np.array_equal(held, split_heldout(labels, ratio, seed=7))  # seeded
    assert not np.array_equal(held, split_heldout(labels, ratio, seed=8))  # the seed chooses the images
    assert not split_heldout(labels, 0.0).any()


def test_heldout_records_are_never_trained_and_their_figures_equal_numpy(ds, tmp_path):
    """A Softmax run with 25% of each class held out: the training stream never yields a held-out
    record, every held-out record is scored, the run's held-out cross-entropy and accuracy equal
    NumPy's on the backbone's embeddings and the head's weights, the figures are in the history at
    every second segment and at the last, and drawn in curves.png."""
    import csv

    import tensorflow as tf

    from recface_lib.data.input_pipeline import make_dataset
    from recface_lib.data.tfrecord import load_metadata
    from recface_lib.train.config import TrainConfig
    from recface_lib.train.trainer import TrainRun

    cfg = TrainConfig.from_dict({
        "dataset": str(ds), "output": str(tmp_path / "run"), "backbone": "TestMobileFaceNet", "input_size": 32,
        "embd_shape": 16, "batch_size": 8, "head": "Softmax", "optimizer": "adam", "epsilon": 0.1,
        "center_loss_factor": 0.1, "center_loss_alfa": 0.9, "steps_per_epoch": 3, "plan": [[3, 0.01]],
        "validation_split": 0.25, "validation_every": 2, "deterministic": True, "shuffle_buffer": 32,
        "tensorboard": False, "checkpoint_every": 0, "val_batch_size": 7})
    meta = load_metadata(ds)
    labels = record_labels(meta)
    held = split_heldout(labels, 0.25, seed=0)
    counts = np.bincount(labels)
    assert np.array_equal(np.bincount(labels[held], minlength=len(counts)), counts - np.floor(counts * 0.75).astype(int))

    # the held-out and kept records split the data; the (repeating) training stream yields kept ones only
    from recface_lib.data.input_pipeline import Augmentation

    def images(keep, training, batches=None):
        ds_ = make_dataset(ds, 8, training=training, image_size=32, keep=keep, deterministic=True, shuffle_buffer=32,
                           augment=Augmentation.from_dict({"flip": False, "train_crop": False}))
        return [x.numpy() for x, _ in (ds_.take(batches) if batches else ds_)]

    def keys(batches):
        return [x[i].tobytes() for x in batches for i in range(len(x))]
    every, kept, out = keys(images(None, False)), keys(images(~held, False)), keys(images(held, False))
    assert len(kept) == int((~held).sum()) and len(out) == int(held.sum()) and sorted(kept + out) == sorted(every)
    assert not set(kept) & set(out)
    streamed = keys(images(~held, True, batches=2 * len(kept) // 8))
    assert set(streamed) == set(kept)

    run = TrainRun(cfg, show_progress=False).build().fit()
    res = run.finish()
    assert res["heldout"]["images"] == int(held.sum()) == 16 * 4 and res["heldout"]["trained_images"] == 16 * 12
    # NumPy: embeddings of the held-out records, the Softmax head's kernel and bias
    x_held, y_held = zip(*[(x.numpy(), y.numpy()) for x, y in make_dataset(ds, 8, training=False, image_size=32,
                                                                            keep=held)])
    emb = run.backbone.predict(np.concatenate(x_held), verbose=0).astype(np.float64)
    y = np.concatenate(y_held)
    head = next(t for t in run.terms if t.name == "margin").head
    w, b = [v.numpy().astype(np.float64) for v in head.weights]
    logits = emb @ w + b
    logits -= logits.max(1, keepdims=True)
    xent = float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]))
    acc = float(np.mean(logits.argmax(1) == y))
    assert res["heldout"]["xent"] == pytest.approx(xent, rel=1e-4)
    assert res["heldout"]["accuracy"] == pytest.approx(acc, abs=1e-9)
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [bool(r["heldout_xent"]) for r in rows] == [False, True, True]  # every 2nd segment end, and the last
    assert tf.io.gfile.exists(str(tmp_path / "run" / "curves.png"))


def test_heldout_and_weights_bad_input(ds, tmp_path):
    from recface_lib.train.config import TrainConfig

    base = {"dataset": str(ds), "output": str(tmp_path / "r")}
    with pytest.raises(ConfigError, match=r"validation_split: the held-out cross-entropy scores every class centre"):
        TrainConfig.from_dict({**base, "validation_split": 0.1, "sample_rate": 0.5})
    with pytest.raises(ConfigError, match=r"validation_split: must be in \[0\.0, 0\.9\], got 1\.5"):
        TrainConfig.from_dict({**base, "validation_split": 1.5})
    with pytest.raises(ConfigError, match=r"dataset_weights: 2 weights for 1 datasets"):
        TrainConfig.from_dict({**base, "dataset_weights": [1, 2]})
    with pytest.raises(ConfigError, match=r"dataset_weights: \[1, -2\]: positive numbers expected"):
        TrainConfig.from_dict({**base, "dataset": [str(ds), str(ds)], "dataset_weights": [1, -2]})
