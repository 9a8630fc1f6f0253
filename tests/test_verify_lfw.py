"""The dlib_resnet reference embedder through our verify stage on one real LFW fold (the full
6,000-pair figure is in the README: benchmarks/lfw_dlib_reference.py)."""
import numpy as np

from conftest import last_json, run_cli


def test_dlib_resnet_lfw_fold10(lfw_dir, tmp_path):
    s = last_json(run_cli("verify", "--pairs", str(lfw_dir / "pairs.txt"), "--folds", "10", "--flip",
                          "--workers", "2", "--plots", str(tmp_path), "--json"))
    assert s["ok"] and s["num_pairs"] == 600 and s["distinct_images"] == 785
    assert s["fold_scheme"] == "stratified"  # one LFW fold: 300 same then 300 different pairs
    assert s["accuracy"] >= 0.988, s
    assert s["val_far"]["1e-03"]["tar"] > 0.95
    assert s["auc"] > 0.995
    assert sum(s["detections"].values()) == 785 and s["detections"].get("fallback", 0) <= 2
    assert s["mean_angle_same"] < s["mean_angle_diff"]
    for name in ("roc_lfw.png", "hist_lfw.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_verify_bad_inputs(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x80\x04garbage")
    p = run_cli("verify", "--pairs", str(tmp_path / "x.bin"), check=False)
    assert p.returncode == 1 and "x.bin: not a readable pickle" in p.stderr
    from recface_lib.data.verification_bin import write_bin
    from recface_lib.io_utils import encode_image
    img = encode_image(np.zeros((20, 20, 3), np.uint8))
    write_bin(tmp_path / "ok.bin", [img] * 20, [True, False] * 5)
    p = run_cli("verify", "--pairs", str(tmp_path / "ok.bin"), "--embedder", "nope", check=False)
    assert p.returncode == 1 and "embedder: 'nope' is not dlib_resnet, a training run folder or a bundle .zip" in p.stderr
