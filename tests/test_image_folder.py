import pytest

from conftest import last_json, run_cli
from recface_lib.data.image_folder import scan_folder
from recface_lib.errors import FormatError


def test_scan_orl(orl_dir):
    f = scan_folder(orl_dir)
    assert len(f.classes) == 40 and f.num_images == 400
    assert set(f.counts.values()) == {10}
    labels = [lab for _, lab in f.samples()]
    assert labels == sorted(labels) and max(labels) == 39


def test_split_and_select(friends_dir):
    f = scan_folder(friends_dir / "train")
    assert len(f.classes) == 16 and set(f.counts.values()) == {20}
    tr, te = f.split(test_last=5)
    assert set(te.counts.values()) == {5} and set(tr.counts.values()) == {15}
    assert all(te.files[c] == f.files[c][-5:] for c in f.classes)
    tr, te = f.split(test_fraction=0.25)
    assert set(te.counts.values()) == {5}
    _, all_test = f.split(test_fraction=1.0)
    assert all_test.num_images == 320
    sel = f.select(num_classes=4, random_classes=True, seed=3, max_images=7)
    assert len(sel.classes) == 4 and set(sel.counts.values()) == {7}
    assert sel.classes == f.select(num_classes=4, random_classes=True, seed=3).classes
    assert f.select(min_images=21).classes == []


def test_lfw_min_images(lfw_dir):
    s = last_json(run_cli("scan", str(lfw_dir / "lfw-deepfunneled"), "--min-images", "10", "--json"))
    assert s["classes"] == 158 and s["min_per_class"] >= 10


def test_bad_root(tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(FormatError, match="1 images lie directly in it"):
        scan_folder(tmp_path)
    with pytest.raises(FormatError, match="not a directory"):
        scan_folder(tmp_path / "nope")
