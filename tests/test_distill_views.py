"""Consistent teaching (#26): the teacher embeds seeded augmented views of every stored face
(``teach views``) and training replays exactly those views, each with its own target.

One session-scoped set-up: 40 LFW people outside fold 10, 2 photos each, aligned by YuNet at 112 px
(SFace's template size: the teacher embeds the stored faces), built, and taught by SFace with 4 views
(flip, rotation up to 40 degrees) for training and 2 other views (another seed) to check
on. Two tests that can fail: every training element is one of the teacher's views with that view's
target (to rounding), and a student trained on matched targets beats the same student, same seed,
trained with each view given another view's target, on views neither saw."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import photos_outside_fold10
from recface_lib.errors import ConfigError

AUG = {"random_rotate": 40}  # views that differ much: view-specific targets are then worth learning


@pytest.fixture(scope="session")
def views_data(lfw_dir, tmp_path_factory):
    from recface_lib.align.pipeline import align
    from recface_lib.build import build
    from recface_lib.teach import teach

    root = tmp_path_factory.mktemp("views")
    src = root / "photos"
    photos_outside_fold10(lfw_dir, src, slice(200, 240))
    align({"input": str(src), "output": str(root / "aligned"), "size": 112, "detector": "yunet",
           "on_failure": "drop", "workers": 1}, show_progress=False)
    build({"input": str(root / "aligned"), "output": str(root / "tfr"), "shards": 2}, show_progress=False)
    common = {"dataset": str(root / "tfr"), "teacher": "sface", "view_augmentation": AUG, "workers": 2}
    rep = teach({**common, "output": str(root / "teacher"), "views": 4}, show_progress=False)
    teach({**common, "output": str(root / "check"), "views": 2, "view_seed": 7}, show_progress=False)
    return {"root": root, "teach": rep}


def _views(root, folder):
    from recface_lib.data.tfrecord import load_metadata
    from recface_lib.teach import load_teacher

    meta = load_metadata(root / "tfr")
    return load_teacher(root / folder, meta)[0], meta


def test_teach_views_are_recorded(views_data):
    root, rep = views_data["root"], views_data["teach"]
    t, meta = _views(root, "teacher")
    assert rep["images"] == "aligned" and rep["found"] == {"aligned": 4 * meta["num_samples"]}
    assert t.views.shape == (meta["num_samples"], 4, 128) and t.seed == 0
    assert t.augmentation.random_rotate == 40 and not t.augmentation.train_crop and t.augmentation.flip
    v = t.views.astype(np.float64)
    same = (v[:, 0] * v[:, 1]).sum(-1).mean()
    other = (v[:, 0] * np.roll(v[:, 1], 1, axis=0)).sum(-1).mean()
    assert 0.4 < same < 0.98 and other < 0.3  # the views differ, and still are the same face


def test_training_replays_the_teachers_views(views_data):
    """Each training element's image is one of the views the teacher embedded (the same pixels, to
    the teacher's uint8 rounding) and its target is that very view's embedding."""
    import tensorflow as tf

    from recface_lib.data.input_pipeline import make_dataset, teacher_views

    root = views_data["root"]
    t, meta = _views(root, "teacher")
    made = np.stack([im for si in range(len(meta["shards"])) for im in teacher_views(meta, si, (4, 0, t.augmentation))])
    made = made.reshape(len(t.views), 4, 112, 112, 3).astype(np.float32) / 255.0
    flat = made.reshape(-1, 112 * 112 * 3)
    for size in (112, 48):
        ds = make_dataset(root / "tfr", 16, training=True, image_size=size, normalization="0:1", teacher=t,
                          deterministic=True, seed=3)
        ref = flat if size == 112 else tf.image.resize(made.reshape(-1, 112, 112, 3), [size, size]).numpy().reshape(len(flat), -1)
        seen = set()
        for x, _, target in ds.take(4).as_numpy_iterator():
            for img, tgt in zip(x.reshape(len(x), -1), target):
                d = np.abs(ref - img).mean(1)
                match = [divmod(int(k), 4) for k in np.flatnonzero(d < 1.0 / 255)]  # two views may coincide
                assert match, (size, d.min())
                hit = [(r, v) for r, v in match if np.array_equal(tgt, t.views[r, v].astype(np.float32))]
                assert hit, (size, match)  # the target is the embedding of that very view
                seen.add(hit[0][1])
        assert seen == {0, 1, 2, 3}  # every view is drawn


def test_matched_views_beat_mismatched_targets(views_data, tmp_path):
    """The same student, seed and steps, trained (a) on matched targets and (b) with each view given
    the target of another view of the same face: (a) matches the teacher better on views neither saw
    (measured: cosine 0.548 vs 0.420 with seed 1, 0.526 vs 0.393 with seed 2: margins 0.128 and
    0.133; asked: 0.06). At rotations up to 15 degrees the margin was 0.006 on these people: small
    views differ too little for 120 steps of a 48 px student to learn their differences."""
    from recface_lib.data.input_pipeline import make_dataset
    from recface_lib.embedders.model import load_run
    from recface_lib.train.trainer import train

    root = views_data["root"]
    mis = tmp_path / "teacher_mis"
    shutil.copytree(root / "teacher", mis)
    for f in mis.glob("*.npz"):
        z = dict(np.load(f))
        z["views"] = np.roll(z["views"], -1, axis=1)  # view v gets view v+1's target
        np.savez(f, **z)
    check, _ = _views(root, "check")
    score = {}
    for name, teacher in (("matched", root / "teacher"), ("mismatched", mis)):
        out = tmp_path / name
        train({"dataset": str(root / "tfr"), "output": str(out), "teacher": str(teacher), "input_size": 48,
               "embd_shape": 128, "batch_size": 32, "steps_per_epoch": 40, "plan": [[3, 0.005, False, 1]],
               "optimizer": "adamw", "weight_decay": 0.05, "tensorboard": False, "shuffle_buffer": 512,
               "checkpoint_every": 0, "seed": 1, "deterministic": True, "distill_center": False}, show_progress=False)
        emb = load_run(out)
        cos = []
        for x, _, tgt in make_dataset(root / "tfr", 64, training=False, image_size=48, teacher=check,
                                      repeat=False, deterministic=True, seed=5).as_numpy_iterator():
            e = np.array(emb.backend(x), np.float64)
            cos.append((e / np.linalg.norm(e, axis=1, keepdims=True) * tgt).sum(1))
        score[name] = float(np.concatenate(cos).mean())
    assert score["matched"] > score["mismatched"] + 0.06, score


def test_views_refusals(views_data, tmp_path):
    from recface_lib.teach import TeachConfig, teach
    from recface_lib.train.trainer import train

    root = views_data["root"]
    with pytest.raises(ConfigError, match="view_augmentation: makes the views"):
        TeachConfig.from_dict({"dataset": "d", "output": "o", "view_augmentation": {"flip": False}}).validate()
    with pytest.raises(ConfigError, match="views are made from the stored faces"):
        teach({"dataset": str(root / "tfr"), "teacher": "dlib_resnet", "images": "original", "views": 2,
               "output": str(tmp_path / "t")}, show_progress=False)
    with pytest.raises(ConfigError, match="they are the augmentation"):
        train({"dataset": str(root / "tfr"), "output": str(tmp_path / "r"), "teacher": str(root / "teacher"),
               "input_size": 48, "augmentation": {"color_jitter": 0.2}}, show_progress=False)
