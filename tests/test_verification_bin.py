import pickle
import pickletools

import numpy as np
import pytest

from conftest import last_json, run_cli
from recface_lib.data.verification_bin import read_bin, read_carray, write_bin, write_carray
from recface_lib.errors import FormatError, UnsafePickleError
from recface_lib.io_utils import decode_image, encode_image


def _imgs(n, seed=0, size=16):
    rng = np.random.default_rng(seed)
    return [encode_image(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), ".png") for _ in range(n)]


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


def test_crafted_pickle_runs_nothing(tmp_path):
    sentinel = tmp_path / "pwned"
    bad = tmp_path / "evil.bin"
    bad.write_bytes(pickle.dumps(([_Evil(sentinel)], [True])))
    # sanity: the plain pickle module WOULD run it (so this test can fail)
    assert b"system" in bad.read_bytes()
    with pytest.raises(UnsafePickleError, match=r"evil\.bin: refusing to load global (posix|os)\.system"):
        read_bin(bad)
    assert not sentinel.exists()
    proc = run_cli("bin-info", str(bad), "--json", check=False)
    assert proc.returncode == 1 and "refusing to load global" in proc.stderr
    assert not sentinel.exists()


def test_roundtrip_and_insightface_compatible(tmp_path):
    imgs, same = _imgs(8), [True, False, True, False]
    path = write_bin(tmp_path / "s.bin", imgs, same)
    ps = read_bin(path)
    assert ps.images == imgs and ps.issame == same and ps.num_pairs == 4
    # insightface loads bins exactly like this
    with open(path, "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    assert bins == imgs and issame == same
    assert ps.decode(3).shape == (16, 16, 3)


def test_python2_style_protocol2_bin_loads(tmp_path):
    imgs, same = _imgs(4), [True, False]
    p = tmp_path / "p2.bin"
    p.write_bytes(pickle.dumps((imgs, same), protocol=2))  # bytes go through _codecs.encode
    assert any(op.name == "GLOBAL" for op, _, _ in pickletools.genops(p.read_bytes()))
    assert read_bin(p).images == imgs


def test_truncated_and_malformed_bins(tmp_path):
    path = write_bin(tmp_path / "s.bin", _imgs(4), [True, False])
    t = tmp_path / "trunc.bin"
    t.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(FormatError, match=r"trunc\.bin: not a readable pickle"):
        read_bin(t)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps((_imgs(3), [True, False])))
    with pytest.raises(FormatError, match=r"odd\.bin: 3 images for 2 pairs"):
        read_bin(odd)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty file"):
        read_bin(empty)


def test_bin_info_and_bin2jpg_cli(tmp_path):
    imgs = _imgs(6, size=20)
    write_bin(tmp_path / "s.bin", imgs, [True, True, False])
    info = last_json(run_cli("bin-info", str(tmp_path / "s.bin"), "--json"))
    assert (info["pairs"], info["positives"], info["negatives"], info["image_sizes"]) == (3, 2, 1, {"20x20": 6})
    out = last_json(run_cli("bin2jpg", "--bin", str(tmp_path / "s.bin"), "--output", str(tmp_path / "dump"), "--json"))
    assert out["pairs"] == 3
    assert (tmp_path / "dump" / "diff" / "00002_b.png").read_bytes() == imgs[5]
    assert (tmp_path / "dump" / "pairs.csv").read_text().splitlines()[1] == "0,1,same/00000_a.png,same/00000_b.png"


def test_bcolz_carray_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 255, (6, 12, 12, 3), dtype=np.uint8)
    write_carray(tmp_path, "tiny", imgs, [True, False, True])
    back, issame = read_carray(tmp_path, "tiny")
    assert np.array_equal(back, imgs) and issame.tolist() == [True, False, True]
    s = last_json(run_cli("carray2bin", "--carray", str(tmp_path / "tiny"), "--output", str(tmp_path / "t.bin"), "--json"))
    assert s["pairs"] == 3
    assert np.array_equal(decode_image(read_bin(tmp_path / "t.bin").images[4]), imgs[4])
    with pytest.raises(FormatError, match="missing issame list"):
        (tmp_path / "tiny_list.npy").unlink()
        read_carray(tmp_path, "tiny")
