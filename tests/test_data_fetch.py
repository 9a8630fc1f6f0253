"""`recface data lfw` offline (--from the shared copy): checked, atomic, friends16 derived by its
stated rule (the same 16 people and files as the shared split), and the scenarios' error when the
data folder is empty names the command."""
import hashlib
import json
import tarfile

import pytest

from conftest import DATA, last_json, run_cli


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, lfw_dir):
    out = tmp_path_factory.mktemp("data")
    r = last_json(run_cli("data", "lfw", "--from", str(lfw_dir), "--output", str(out), "--json"))
    return out, r


def test_data_lfw_from_a_local_copy(fetched, lfw_dir, friends_dir):
    out, r = fetched
    assert r["ok"] and (r["images"], r["people"]) == (13233, 5749) and r["source"] == f"from {lfw_dir}"
    assert (out / "lfw" / "pairs.txt").read_bytes() == (lfw_dir / "pairs.txt").read_bytes()
    assert not [p for p in (out / "lfw").iterdir() if p.name.startswith(".")]  # no staging left behind
    f = r["friends16"]
    assert f["status"] == "derived" and (f["people"], f["others"]) == (16, 150)
    # the 16 people and their train/test files are the shared split's (same rule), byte for byte
    for split in ("train", "test"):
        ours = sorted(p.relative_to(out / "lfw_friends16").as_posix() for p in (out / "lfw_friends16" / split).rglob("*.jpg"))
        theirs = sorted(p.relative_to(friends_dir).as_posix() for p in (friends_dir / split).rglob("*.jpg"))
        assert ours == theirs and len(ours) == 16 * (20 if split == "train" else 10)
    some = ours[0]
    assert (out / "lfw_friends16" / some).read_bytes() == (friends_dir / some).read_bytes()
    # others: one image each of people with exactly one image, 100 + 50, nobody twice
    rows = [ln.split(",") for ln in (out / "lfw_friends16" / "manifest.csv").read_text().splitlines()[1:]]
    others = [r_ for r_ in rows if r_[0].startswith("others_")]
    names = [r_[1] for r_ in others]
    assert len(set(names)) == 150 and sum(r_[0] == "others_train" for r_ in others) == 100
    assert all(len(list((lfw_dir / "lfw-deepfunneled" / n).glob("*.jpg"))) == 1 for n in names[:20])
    again = last_json(run_cli("data", "lfw", "--from", str(lfw_dir), "--output", str(out), "--json"))
    assert again["source"] == "already there" and again["friends16"]["status"] == "already there"


def test_data_lfw_refuses_what_is_not_lfw(tmp_path, lfw_dir):
    """An archive that is not the published one, or a pairs.txt with one byte changed: one line each
    naming the file and its MD5; nothing is left in the data folder."""
    arc = tmp_path / "lfw-deepfunneled.tgz"
    with tarfile.open(arc, "w:gz") as t:
        t.add(lfw_dir / "lfw-deepfunneled" / "Aaron_Eckhart", arcname="lfw-deepfunneled/Aaron_Eckhart")
    (tmp_path / "pairs.txt").write_bytes((lfw_dir / "pairs.txt").read_bytes())
    p = run_cli("data", "lfw", "--from", str(arc), "--output", str(tmp_path / "d1"), "--json", check=False)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    md5 = hashlib.md5(arc.read_bytes()).hexdigest()
    assert p.returncode != 0 and len(err) == 1 and err[0].endswith(f"{arc}: MD5 {md5} is not the published "
                                                                   "68331da3eb755a505a502b5aacb3c201 of lfw-deepfunneled.tgz")
    assert json.loads(p.stdout.splitlines()[-1])["ok"] is False
    assert not (tmp_path / "d1" / "lfw" / "lfw-deepfunneled").exists()
    bad = tmp_path / "pairs_bad.txt"
    data = bytearray((lfw_dir / "pairs.txt").read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")
    bad.write_bytes(bytes(data))
    p = run_cli("data", "lfw", "--from", str(lfw_dir), "--pairs", str(bad), "--output", str(tmp_path / "d2"), check=False)
    assert p.returncode != 0 and f"{bad}: MD5 " in p.stderr and "View-2 pairs.txt" in p.stderr
    assert not (tmp_path / "d2" / "lfw" / "lfw-deepfunneled").exists()


def test_a_scenario_without_its_data_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RECFACE_DATA", str(tmp_path / "empty"))
    p = run_cli("pipeline", "--scenario", "tiny", "--runs", str(tmp_path / "runs"), "--json", check=False)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode != 0 and len(err) == 1, p.stderr
    assert str(tmp_path / "empty") in err[0] and "recface data lfw" in err[0]
    assert json.loads(p.stdout.splitlines()[-1])["ok"] is False
    assert DATA.is_dir()  # the real data untouched by the variable's change
