"""Build stage: sharded TFRecords + metadata from identity folders (real LFW photos)."""
import hashlib
import shutil

import numpy as np
import pytest

from conftest import REPO, last_json, run_cli
from recface_lib.build import BuildConfig, build, make_pairs
from recface_lib.data.image_folder import scan_folder
from recface_lib.data.tfrecord import check_shards, load_metadata, parse_example, read_records, scan_shard
from recface_lib.data.verification_bin import read_bin
from recface_lib.errors import ConfigError, FormatError


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lfw10_build(lfw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "lfw10"
    rep = build(BuildConfig(input=str(lfw_dir / "lfw-deepfunneled"), output=str(out), min_images=10, shards=4,
                            workers=2, seed=5), show_progress=False)
    return rep, out


def test_counts_bytes_labels_roundtrip(lfw_dir, lfw10_build):
    rep, out = lfw10_build
    folder = scan_folder(lfw_dir / "lfw-deepfunneled").select(min_images=10)
    meta = load_metadata(out)
    assert meta["num_classes"] == len(folder.classes) == 158
    assert meta["num_samples"] == folder.num_images == rep["num_samples"]
    assert meta["class_counts"] == folder.counts
    assert meta["class_names"] == folder.classes and meta["image_size"] == [250, 250]
    assert len(check_shards(meta)) == 4 and sum(s["records"] for s in meta["shards"]) == meta["num_samples"]
    # every record back: the same bytes as the file, with its class label
    by_bytes = {p.read_bytes(): folder.classes.index(c) for c in folder.classes for p in folder.files[c]}
    seen = 0
    for s in meta["shards"]:
        assert scan_shard(out / s["name"]) == s["records"]
        for rec in read_records(out / s["name"]):
            ex = parse_example(rec)
            assert by_bytes[ex["image"]] == ex["label"][0]
            seen += 1
    assert seen == meta["num_samples"]


def test_tf_parses_our_examples(lfw10_build):
    import recface_lib  # noqa: F401
    import tensorflow as tf
    _, out = lfw10_build
    meta = load_metadata(out)
    ds = tf.data.TFRecordDataset([str(out / meta["shards"][0]["name"])]).take(3)
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    first = next(iter(read_records(out / meta["shards"][0]["name"])))
    for i, rec in enumerate(ds):
        ex = tf.io.parse_single_example(rec, spec)
        if i == 0:
            assert ex["image"].numpy() == parse_example(first)["image"]
        assert tf.io.decode_jpeg(ex["image"]).shape == (250, 250, 3)


def test_second_build_byte_identical_and_resume(lfw_dir, lfw10_build, tmp_path):
    _, out = lfw10_build
    again = tmp_path / "again"
    build(BuildConfig(input=str(lfw_dir / "lfw-deepfunneled"), output=str(again), min_images=10, shards=4, seed=5),
          show_progress=False)
    meta = load_metadata(out)
    for s in meta["shards"]:
        assert _sha(out / s["name"]) == _sha(again / s["name"])
    # resume: a deleted shard is rebuilt, the others kept
    victim = again / meta["shards"][2]["name"]
    victim.unlink()
    build(BuildConfig(input=str(lfw_dir / "lfw-deepfunneled"), output=str(again), min_images=10, shards=4, seed=5),
          show_progress=False)
    assert _sha(victim) == _sha(out / meta["shards"][2]["name"])


def test_bad_images_reported_and_truncated_shard(lfw_dir, tmp_path):
    src = tmp_path / "src"
    for person in ("Aaron_Peirsol", "Abdullah_Gul"):
        (src / person).mkdir(parents=True)
        for f in sorted((lfw_dir / "lfw-deepfunneled" / person).glob("*.jpg"))[:4]:
            shutil.copy(f, src / person / f.name)
    good = (src / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes()
    (src / "Aaron_Peirsol" / "corrupt.jpg").write_bytes(good[:20] + b"\x00" * 300)
    (src / "Abdullah_Gul" / "empty.jpg").write_bytes(b"")
    rep = build({"input": str(src), "output": str(tmp_path / "o"), "shards": 2}, show_progress=False)
    assert rep["num_samples"] == 8 and rep["skipped"] == 2
    msgs = {e["path"].split("/")[-1]: e["error"] for e in rep["skipped_items"]}
    assert msgs["empty.jpg"] == "empty file (0 bytes)" and msgs["corrupt.jpg"].startswith("cannot decode image")
    meta = load_metadata(tmp_path / "o")
    shard = tmp_path / "o" / meta["shards"][1]["name"]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(FormatError, match=rf"{shard.name}: shard is \d+ bytes, metadata.json recorded"):
        check_shards(meta)
    with pytest.raises(FormatError, match=rf"{shard.name}: truncated record \d+ at offset"):
        scan_shard(shard)


def test_friends_test_set_720_pairs(friends_dir, tmp_path):
    """The recface guide's friends test: 16 people x 10 images, test_split 1 -> 720 + 720 pairs."""
    rep = build({"input": str(friends_dir / "test"), "output": str(tmp_path / "f16"), "test_split": 1.0,
                 "test_name": "friends_16_test"}, show_progress=False)
    assert rep["num_samples"] == 0 and rep["test_images"] == 160
    assert (rep["test_positives"], rep["test_negatives"]) == (720, 720)
    ps = read_bin(tmp_path / "f16" / "friends_16_test.bin")
    assert ps.num_pairs == 1440 and sum(ps.issame) == 720
    a = make_pairs(scan_folder(tmp_path / "f16" / "friends_16_test"), 100, seed=1)
    assert a == make_pairs(scan_folder(tmp_path / "f16" / "friends_16_test"), 100, seed=1)
    assert len(a[0]) == len(a[1]) == 100 and len(set(a[1])) == 100


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) 'shard_sise'; valid: input, output, shard_size_mb"):
        BuildConfig.from_dict({"shard_sise": 3})
    with pytest.raises(ConfigError, match=r"test_split: expected float, got str '0.1'"):
        BuildConfig.from_dict({"test_split": "0.1"})
    with pytest.raises(ConfigError, match="lies inside the input input folder"):
        build({"input": str(REPO), "output": str(REPO / "x")}, show_progress=False)


def test_make_dataset_deterministic_and_normalised(lfw10_build):
    import recface_lib  # noqa: F401
    import tensorflow as tf
    from recface_lib.data.input_pipeline import Augmentation, make_dataset
    _, out = lfw10_build
    aug = Augmentation.from_dict({"train_crop": True, "color_jitter": 1.0, "random_erasing": 0.5, "low_res": 0.3})
    kw = dict(batch_size=8, image_size=112, augment=aug, deterministic=True, seed=3, shuffle_buffer=64)
    a = [b for b in make_dataset(out, **kw).take(3)]
    b = [b for b in make_dataset(out, **kw).take(3)]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == (8, 112, 112, 3) and ya.dtype == tf.int32
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
    x = a[0][0].numpy()
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    ev = next(iter(make_dataset(out, batch_size=4, training=False, normalization="0:255")))
    assert ev[0].shape == (4, 112, 112, 3) and ev[0].numpy().max() > 100


def test_build_straight_from_rec(lfw_dir, tmp_path):
    """An InsightFace .rec/.idx builds without a JPEG folder: same bytes and labels as the images
    written into it, the test split taken from the end of each identity, and a clear error for a
    .rec whose .idx is missing."""
    from recface_lib.data.recordio import write_insightface_rec

    folder = scan_folder(lfw_dir / "lfw-deepfunneled").select(min_images=20, num_classes=5)
    by_class = [[p.read_bytes() for p in folder.files[c]] for c in folder.classes]
    rec = write_insightface_rec(tmp_path / "train.rec", by_class)
    rep = build(BuildConfig.from_dict({"input": str(rec), "output": str(tmp_path / "out"), "shards": 2,
                                       "test_samples": 3, "test_max_pairs": 20}), show_progress=False)
    meta = load_metadata(tmp_path / "out")
    assert meta["num_classes"] == 5 and meta["class_names"] == [f"{c:06d}" for c in range(5)]
    assert rep["num_samples"] == sum(len(b) - 3 for b in by_class)
    expected = {b: c for c, imgs in enumerate(by_class) for b in imgs[:-3]}
    got = [parse_example(r) for s in meta["shards"] for r in read_records(tmp_path / "out" / s["name"])]
    assert len(got) == len(expected) and all(expected[g["image"]] == g["label"][0] for g in got)
    test_imgs = sorted((tmp_path / "out" / "test").rglob("*.jpg"))
    assert len(test_imgs) == 15 and {p.read_bytes() for p in test_imgs} == {b for imgs in by_class for b in imgs[-3:]}
    assert rep["test_positives"] == 15 and rep["test_negatives"] == 15
    (tmp_path / "train.idx").unlink()
    with pytest.raises(FormatError, match="train.rec: reading a .rec by identity needs its .idx"):
        build(BuildConfig.from_dict({"input": str(rec), "output": str(tmp_path / "out2")}), show_progress=False)


def _write_im2rec(prefix, items, seed=0):
    """A .rec/.idx/.lst as mxnet's tools/im2rec.py writes them: the .lst lists
    ``index<TAB>label<TAB>path`` (shuffled, indices from the original enumeration), and every record
    is ``IRHeader(flag=0, label=float(label), id=index, id2=0)`` + the image bytes in .lst order, with
    no InsightFace header or identity records."""
    import random

    from recface_lib.data.recordio import IRHeader, RecordIOWriter

    lst = [(i, float(label), path) for i, (label, path) in enumerate(items)]
    random.Random(seed).shuffle(lst)
    (prefix.with_suffix(".lst")).write_text("".join(f"{i}\t{lab:f}\t{p}\n" for i, lab, p in lst))
    with RecordIOWriter(prefix.with_suffix(".rec"), prefix.with_suffix(".idx")) as w:
        for i, lab, p in lst:
            w.write_image(i, IRHeader(0, lab, i, 0), (prefix.parent / p).read_bytes())
    return prefix.with_suffix(".rec")


def test_im2rec_rec_converts_builds_and_scans(lfw_dir, tmp_path):
    """mxnet im2rec's layout (no identity header; labels in the record headers; a .lst) through
    rec2jpg, build and scan, labels matching the .lst."""
    import os
    from collections import Counter

    from recface_lib.data.recordio import read_lst

    folder = scan_folder(lfw_dir / "lfw-deepfunneled").select(min_images=20, num_classes=4)
    root = tmp_path / "imgs"
    items = []
    for label, c in enumerate(folder.classes):
        (root / c).mkdir(parents=True)
        for p in folder.files[c][:8]:
            os.symlink(p, root / c / p.name)
            items.append((label, f"imgs/{c}/{p.name}"))
    rec = _write_im2rec(tmp_path / "data", items)
    lst = read_lst(tmp_path / "data.lst")
    want = Counter(int(lab) for lab, _ in lst.values())
    label_of_bytes = {(tmp_path / p).read_bytes(): int(lab) for lab, p in lst.values()}

    conv = last_json(run_cli("rec2jpg", "--rec", str(rec), "--output", str(tmp_path / "jpg"), "--json"))
    assert conv["classes"] == 4 and conv["images_written"] == 32
    for d in (tmp_path / "jpg").iterdir():
        if d.is_dir():
            assert {label_of_bytes[f.read_bytes()] for f in d.iterdir()} == {int(d.name)}

    b = last_json(run_cli("build", "--input", str(rec), "--output", str(tmp_path / "ds"), "--shards", "2",
                          "--assume-aligned", "112", "--json"))
    assert b["num_samples"] == 32 and b["num_classes"] == 4
    meta = load_metadata(tmp_path / "ds")
    assert meta["class_counts"] == {f"{lab:06d}": n for lab, n in want.items()}
    got = [parse_example(r) for s in meta["shards"] for r in read_records(tmp_path / "ds" / s["name"])]
    assert all(label_of_bytes[g["image"]] == int(meta["class_names"][g["label"][0]]) for g in got)

    s = last_json(run_cli("scan", str(rec), "--json"))
    assert (s["classes"], s["images"], s["min_per_class"], s["max_per_class"]) == (4, 32, 8, 8)


def test_facenet_normalisations_and_rotation(lfw10_build):
    """facenet's input scalings (#23), the same in the pipeline (TensorFlow) and in production
    (NumPy, embedders.model.preprocess): fixed standardisation (x - 127.5) / 128 and per-image
    prewhitening as facenet's ``prewhiten`` wrote it; the random rotation turns about the centre and
    keeps deterministic batches deterministic."""
    import tensorflow as tf

    from recface_lib.data.input_pipeline import Augmentation, make_dataset, normalize, rotate_image
    from recface_lib.embedders.model import preprocess

    def facenet_prewhiten(x):  # facenet/src/facenet.py
        mean = np.mean(x)
        std = np.std(x)
        std_adj = np.maximum(std, 1.0 / np.sqrt(x.size))
        return np.multiply(np.subtract(x, mean), 1 / std_adj)

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 20, 20, 3)).astype(np.uint8)
    imgs[2] = 77  # a flat image: facenet's floor 1 / sqrt(size) keeps it finite
    pre = preprocess(list(imgs), 20, "prewhiten")
    for i in range(3):
        want = facenet_prewhiten(imgs[i].astype(np.float64))
        np.testing.assert_allclose(pre[i], want, atol=1e-4)
        tf_one = normalize(tf.constant(imgs[i] / 255.0, tf.float32), "prewhiten").numpy()
        np.testing.assert_allclose(tf_one, want, atol=1e-4)
    np.testing.assert_allclose(preprocess(list(imgs), 20, "fixed_standardization"),
                               (imgs.astype(np.float64) - 127.5) / 128.0, atol=1e-5)
    # glint360k's torchvision Normalize (#24): ToTensor (x / 255), then per RGB channel (x - mean) / std
    mean, std = np.array([0.6071, 0.4609, 0.3944]), np.array([0.2457, 0.2175, 0.2129])
    want = (imgs.astype(np.float64) / 255.0 - mean) / std
    np.testing.assert_allclose(preprocess(list(imgs), 20, "glint360k_mean_std"), want, atol=1e-5)
    np.testing.assert_allclose(normalize(tf.constant(imgs / 255.0, tf.float32), "glint360k_mean_std").numpy(), want,
                               atol=1e-5)
    from recface_lib.train.config import TrainConfig
    from recface_lib.train.trainer import model_contract
    c = model_contract(TrainConfig.from_dict({"dataset": "d", "output": "o", "normalization": "glint360k_mean_std"}),
                       {"preprocessing": {"size": 112}})
    assert c["normalization_values"] == {"mean": list(mean), "std": list(std)}  # the constants travel
    # rotation: 0 degrees is the identity; 90 degrees of a square image is np.rot90 (counter-clockwise on screen)
    img = tf.constant(rng.random((9, 9, 3)), tf.float32)
    np.testing.assert_allclose(rotate_image(img, tf.constant(0.0)).numpy(), img.numpy(), atol=1e-6)
    r90 = rotate_image(img, tf.constant(np.pi / 2, tf.float32)).numpy()
    np.testing.assert_allclose(r90, np.rot90(img.numpy(), 1), atol=1e-5)
    _, out = lfw10_build
    kw = dict(batch_size=4, image_size=64, augment=Augmentation.from_dict({"random_rotate": 10.0}), deterministic=True,
              seed=1, shuffle_buffer=16, normalization="prewhiten")
    a, b = next(iter(make_dataset(out, **kw))), next(iter(make_dataset(out, **kw)))
    assert np.array_equal(a[0].numpy(), b[0].numpy())
    plain = next(iter(make_dataset(out, **{**kw, "augment": Augmentation()})))
    assert not np.allclose(a[0].numpy(), plain[0].numpy())  # it rotated
    x = a[0].numpy().reshape(4, -1)
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-3)  # prewhitened per image
