"""The enrolment gallery (issue 15): enrol / identify / remove round trip with a real exported
bundle on friends16 photos, the gallery's files, and a vectorised search checked against a loop."""
from __future__ import annotations

import json

import numpy as np
import pytest

from recface_lib.errors import ConfigError, FormatError
from recface_lib.gallery import Gallery, gallery_paths

from conftest import last_json, run_cli


def test_search_equals_a_plain_loop_and_edits_keep_groups(tmp_path):
    rng = np.random.default_rng(0)
    g = Gallery(16, "sha256:x")
    people = {f"p{i}": rng.normal(size=(int(rng.integers(1, 5)), 16)) for i in range(7)}
    for name, v in people.items():
        g.add(name, v / np.linalg.norm(v, axis=1, keepdims=True), [f"{name}/{k}.jpg" for k in range(len(v))])
    g.add("p2", people["p2"][:1] / np.linalg.norm(people["p2"][:1]), ["p2/again.jpg"])  # a later photo of p2
    assert g.remove("p4") == len(people["p4"])
    q = rng.normal(size=(50, 16)).astype(np.float32)
    idx, score = g.search(q)
    for j in range(len(q)):  # the reference: every person's best cosine, in plain Python
        best = max(((max(float(q[j] @ v) for v, lab in zip(g.vectors, g.labels) if lab == p), p)
                    for p in range(len(g.names))), key=lambda t: t[0])
        assert idx[j] == best[1] and abs(score[j] - best[0]) < 1e-5
    g.save(tmp_path / "b.zip")
    h = Gallery.load(tmp_path / "b.zip", 16, "sha256:x")
    assert h.names == g.names and np.array_equal(h.vectors, g.vectors) and h.sources == g.sources
    with pytest.raises(FormatError, match="enrolled with another model"):
        Gallery.load(tmp_path / "b.zip", 16, "sha256:other")
    with pytest.raises(ConfigError, match="'nobody' is not enrolled"):
        g.remove("nobody")


def test_enroll_identify_remove_round_trip(trained, friends_dir, tmp_path):
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(trained["bundle"].read_bytes())
    people = sorted(p.name for p in (friends_dir / "train").iterdir() if p.is_dir())[:2]
    photos = {p: sorted((friends_dir / "train" / p).iterdir())[:3] for p in people}
    for p in people:  # this tiny run was not validated on pairs: the threshold is given once, then kept
        res = last_json(run_cli("enroll", "--bundle", str(bundle), "--person", p, *map(str, photos[p]),
                                *(["--threshold", "0.5"] if p == people[0] else []), "--json"))
    assert res["people"] == {p: 3 for p in people} and res["threshold"] == 0.5
    npz, js = gallery_paths(bundle)
    assert npz.is_file() and json.loads(js.read_text())["names"] == people
    probe = str(photos[people[1]][0])  # an enrolled photo names its person (cosine 1 with itself)
    face = last_json(run_cli("identify", "--bundle", str(bundle), probe, "--json"))["images"][probe][0]
    assert face["name"] == people[1] and face["score"] > 0.999
    res = last_json(run_cli("enroll", "--bundle", str(bundle), "--remove", people[1], "--json"))
    assert res["people"] == {people[0]: 3} and res["photos"] == 3
    face = last_json(run_cli("identify", "--bundle", str(bundle), probe, "--json"))["images"][probe][0]
    assert face["name"] != people[1] and face["candidate"] == people[0]
    bad = run_cli("enroll", "--bundle", str(bundle), "--person", "x", "--json", check=False)
    assert bad.returncode == 1 and "give --person NAME with photos" in last_json(bad)["error"]
