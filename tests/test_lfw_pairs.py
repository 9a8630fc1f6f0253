import pytest

from conftest import last_json, run_cli
from recface_lib.data.lfw_pairs import read_pairs, write_pairs
from recface_lib.data.verification_bin import read_bin
from recface_lib.errors import FormatError
from recface_lib.io_utils import decode_image


def test_read_real_lfw_pairs(lfw_dir):
    pairs = read_pairs(lfw_dir / "pairs.txt", lfw_dir / "lfw-deepfunneled")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert sorted({p.fold for p in pairs}) == list(range(1, 11))
    # each fold: 300 same pairs then 300 different pairs
    assert [p.same for p in pairs[:600]] == [True] * 300 + [False] * 300
    assert len({q for p in pairs for q in (p.path1, p.path2)}) == 7701


def test_pairs2bin_real_lfw(lfw_dir, tmp_path):
    out = tmp_path / "lfw.bin"
    s = last_json(run_cli("pairs2bin", "--images", str(lfw_dir / "lfw-deepfunneled"), "--pairs",
                          str(lfw_dir / "pairs.txt"), "--output", str(out), "--json"))
    assert (s["pairs"], s["images"], s["positives"], s["distinct_images"]) == (6000, 12000, 3000, 7701)
    ps = read_bin(out)
    assert ps.num_pairs == 6000 and len(ps.images) == 12000 and sum(ps.issame) == 3000
    first = read_pairs(lfw_dir / "pairs.txt", lfw_dir / "lfw-deepfunneled")[0]
    assert ps.images[0] == first.path1.read_bytes()  # raw bytes, not re-encoded
    assert decode_image(ps.images[0]).shape == (250, 250, 3)
    info = last_json(run_cli("bin-info", str(out), "--json"))
    assert info["image_sizes"] == {"250x250": 12000}


def test_pairs2bin_fold_and_size(lfw_dir, tmp_path):
    out = tmp_path / "f10.bin"
    s = last_json(run_cli("pairs2bin", "--images", str(lfw_dir / "lfw-deepfunneled"), "--pairs",
                          str(lfw_dir / "pairs.txt"), "--output", str(out), "--folds", "10", "--size", "112", "--json"))
    assert (s["pairs"], s["positives"]) == (600, 300)
    assert decode_image(read_bin(out).images[7]).shape == (112, 112, 3)


def _tiny_lfw(tmp_path, lfw_dir):
    root = tmp_path / "imgs"
    for name, n in (("A", 2), ("B", 1)):
        (root / name).mkdir(parents=True)
        src = sorted((lfw_dir / "lfw-deepfunneled" / "Aaron_Peirsol").glob("*.jpg"))
        for i in range(n):
            (root / name / f"{name}_{i + 1:04d}.jpg").write_bytes(src[i].read_bytes())
    return root


def test_bad_pairs_files(tmp_path, lfw_dir):
    root = _tiny_lfw(tmp_path, lfw_dir)
    pf = tmp_path / "pairs.txt"
    pf.write_text("1\t1\nA\t1\t2\nA\t1\tB\n")
    with pytest.raises(FormatError, match=r"pairs\.txt: line 3: image numbers must be integers"):
        read_pairs(pf, root)
    pf.write_text("1\t1\nA\t1\t2\nA\t1\tB\t1\textra\n")
    with pytest.raises(FormatError, match=r"pairs\.txt: line 3: expected 3 fields \(same person\) or 4 \(different\), got 5"):
        read_pairs(pf, root)
    pf.write_text("1\t1\nA\t1\t3\nA\t1\tB\t1\n")
    with pytest.raises(FormatError, match=r"line 2: referenced image .*A_0003\.jpg does not exist"):
        read_pairs(pf, root)
    pf.write_text("1\t1\nA\t1\tx\nA\t1\tB\t1\n")
    with pytest.raises(FormatError, match="line 2: image numbers must be integers"):
        read_pairs(pf, root)
    write_pairs(pf, [([("A", 1, 2)], [("A", 1, "B", 1)])])
    assert len(read_pairs(pf, root)) == 2
    (root / "B" / "B_0001.jpg").write_bytes(b"\xff\xd8\xffgarbage")
    proc = run_cli("pairs2bin", "--images", str(root), "--pairs", str(pf), "--output", str(tmp_path / "x.bin"), check=False)
    assert proc.returncode == 1 and "B_0001.jpg (pairs line 3): cannot decode image" in proc.stderr
    assert not (tmp_path / "x.bin").exists()
