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


# -- .bin files as other tools wrote them -----------------------------------------------------------
def _py2_pickle_protocol2(images: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's cPickle.dump((list_of_str, list_of_bool), f, protocol=2) writes: str as
    BINSTRING/SHORT_BINSTRING (Python 3's pickle never emits these for bytes), memo puts, bools
    as NEWTRUE/NEWFALSE."""
    import struct

    memo = 1
    out = [b"\x80\x02", b"]", b"q\x00", b"("]
    for im in images:
        out.append((b"U" + bytes([len(im)])) if len(im) < 256 else (b"T" + struct.pack("<I", len(im))))
        out.append(im)
        out.append(b"q" + bytes([memo]))
        memo += 1
    out += [b"e", b"]", b"q" + bytes([memo]), b"("]
    out += [b"\x88" if s else b"\x89" for s in issame]
    out += [b"e", b"\x86", b"q" + bytes([memo + 1]), b"."]
    return b"".join(out)


def _py2_pickle_protocol0(images: list[bytes], issame: list[bool]) -> bytes:
    """Python 2's text protocol 0: S'...' string reprs, I01/I00 bools."""
    out = [b"((lp0\n"]
    for i, im in enumerate(images):
        out.append(b"S" + repr(im)[1:].encode("ascii") + b"\n" + f"p{i + 1}\na".encode())
    out.append(f"(lp{len(images) + 1}\n".encode())
    out += [b"I01\na" if s else b"I00\na" for s in issame]
    out.append(b"tp999\n.")
    return b"".join(out)


def test_bins_written_by_other_tools_read_the_same_images(tmp_path):
    imgs, same = _imgs(8, seed=3, size=24), [True, False, True, False]
    ref = read_bin(write_bin(tmp_path / "bytes.bin", imgs, same))
    variants = {}
    arrays = [np.frombuffer(b, np.uint8).reshape(-1, 1) for b in imgs]  # insightface's test data: (N, 1)
    for proto in range(0, 6):
        variants[f"numpy_N1_p{proto}"] = pickle.dumps((arrays, np.array(same)), protocol=proto)
        variants[f"numpy_flat_p{proto}"] = pickle.dumps(([a.ravel() for a in arrays], [np.bool_(s) for s in same]),
                                                        protocol=proto)
        variants[f"bytearray_p{proto}"] = pickle.dumps(([bytearray(b) for b in imgs], same), protocol=proto)
    # the module path numpy 1 wrote (numpy 2 reads both)
    p2 = variants["numpy_N1_p2"]
    other = (p2.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if b"numpy._core" in p2
             else p2.replace(b"numpy.core.multiarray", b"numpy._core.multiarray"))
    assert other != p2
    variants["numpy_other_module_path"] = other
    variants["python2_protocol2"] = _py2_pickle_protocol2(imgs, same)
    variants["python2_protocol0"] = _py2_pickle_protocol0(imgs, same)
    assert any(op.name == "BINSTRING" for op, _, _ in pickletools.genops(variants["python2_protocol2"])) or \
        any(op.name == "SHORT_BINSTRING" for op, _, _ in pickletools.genops(variants["python2_protocol2"]))
    for name, data in variants.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(data)
        # insightface's load_bin reads them like this
        bins, issame = pickle.loads(data, encoding="bytes")
        assert len(bins) == 8
        ps = read_bin(p)
        assert ps.images == ref.images and ps.issame == ref.issame, name


class _Sentinel:
    """Pickles to a call of ``fn(path)`` that would create ``path``."""

    def __init__(self, fn, path):
        self.fn, self.path = fn, path

    def __reduce__(self):
        return (self.fn, (str(self.path),))


def test_numpy_based_attacks_are_refused_and_run_nothing(tmp_path):
    import os

    sentinel = tmp_path / "pwned"
    attacks = {
        # a numpy function that is not array reconstruction (writes a file when called)
        "numpy_save": pickle.dumps(([_Sentinel(np.save, sentinel)], [True])),
        "numpy_fromfile": pickle.dumps(([_Sentinel(np.fromfile, "/etc/hostname")], [True])),
        # array reconstruction asked to build a subclass that opens a file
        "memmap_subtype": pickle.dumps(([np.memmap(tmp_path / "mm", dtype=np.uint8, mode="w+", shape=(4,))], [True]),
                                       protocol=2),
        # an object array: its elements would be arbitrary objects
        "object_array": pickle.dumps(([np.array([b"x", 1], dtype=object)], [True]), protocol=2),
        # a plain os.system smuggled next to real numpy arrays
        "system_beside_numpy": pickle.dumps(([np.zeros(3, np.uint8), _Sentinel(os.system, f"touch {sentinel}")],
                                             [True])),
    }
    for name, data in attacks.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(data)
        with pytest.raises(UnsafePickleError, match=f"{name}.bin: refusing"):
            read_bin(p)
        assert not sentinel.exists(), name
    proc = run_cli("bin-info", str(tmp_path / "numpy_save.bin"), "--json", check=False)
    assert proc.returncode == 1 and "refusing to load global numpy.save" in last_json(proc)["error"]
    assert not sentinel.exists()


def test_written_files_honour_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = write_bin(tmp_path / "m.bin", _imgs(2), [True])
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o077)
        q = write_bin(tmp_path / "n.bin", _imgs(2), [True])
        assert stat.S_IMODE(q.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_pair_set_embeds_each_distinct_image_once_and_scores_the_same(tmp_path):
    """LFW's .bin stores an image once per pair it is in: scoring embeds each distinct image once
    (bytes- or array-equal), with the same result as embedding every stored copy."""
    from recface_lib.protocol.pair_sets import load_pair_source, score_pair_set
    from recface_lib.protocol.verification import evaluate_embeddings, flip_sum

    rng = np.random.default_rng(3)
    base = _imgs(30, seed=5)
    refs = rng.integers(0, 30, 80)  # 40 pairs over 30 images: copies within and across pairs
    issame = [bool(refs[2 * i] % 3 == refs[2 * i + 1] % 3) for i in range(40)]
    write_bin(tmp_path / "dup.bin", [base[k] for k in refs], issame)

    def vec(item):  # a fixed "embedding" per image content (and another for its mirror)
        a = decode_image(item).astype(np.float64)
        return np.array([a.mean(), a[..., 0].mean(), a[..., 1].std(), (a[:8] - a[8:]).mean()]) + 1e-3

    calls = []

    def embed(items):
        calls.append(len(items))
        e = np.stack([vec(i) for i in items])
        return e, e[:, ::-1].copy(), {}
    src = load_pair_source(tmp_path / "dup.bin")
    assert len(src.items) == len(set(refs.tolist())) < 80 and calls == []
    got, _ = score_pair_set(src, embed, flips=(False, True))
    assert calls == [len(set(refs.tolist()))]
    every = np.stack([vec(base[k]) for k in refs])  # the plain loop over every stored copy
    for fl, emb in ((False, every), (True, flip_sum(every, every[:, ::-1].copy()))):
        ref = evaluate_embeddings(emb[0::2], emb[1::2], issame)
        assert got[fl].accuracy == ref.accuracy and got[fl].auc == pytest.approx(ref.auc, abs=1e-12)
    # arrays (bcolz sets) are compared by content too
    from recface_lib.protocol.pair_sets import distinct_items
    arrs = [decode_image(base[k]) for k in refs[:10]]
    items, index, first = distinct_items(arrs)
    assert len(items) == len(set(refs[:10].tolist())) and all((items[index[i]] == arrs[i]).all() for i in range(10))
    assert all(index[f] == j and not (index[:f] == j).any() for j, f in enumerate(first))  # each one's first copy
    # an undecodable image is named by its number in the file, not among the distinct ones
    write_bin(tmp_path / "bad.bin", [base[0], base[1], base[0], b"not an image"], [True, False])
    from recface_lib.train.callbacks import PairSetValidator
    with pytest.raises(Exception, match=r"bad\.bin image 3"):
        PairSetValidator(str(tmp_path / "bad.bin"), 16)
