"""`recface watch` (#27) on a video made here from real photos: two friends16 people and an
"Others" stranger pasted at moving positions over a grey background, each for known frame ranges,
and frames with no face; SFace (a reference embedder) with a gallery folder enrolled through the
CLI. Also: hot reload while watching, the tracker and voter's rules, and bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import last_json, run_cli
from recface_lib.errors import ConfigError, FormatError
from recface_lib.watch.scene import face_of_lfw_photo, make_scene

W, H, N = 640, 480, 96
# who is on screen when: (person or "stranger", first frame, last frame, start x, end x, y)
SCRIPT = [("Andre_Agassi", 0, 41, 20, 200, 60), ("Kofi_Annan", 18, 65, 440, 360, 240),
          ("stranger", 48, 83, 60, 220, 250)]
DETECT = 3


@pytest.fixture(scope="session")
def video(friends_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    test = friends_dir / "test"
    faces = {p: face_of_lfw_photo(sorted((test / p).glob("*.jpg"))[0]) for p in ("Andre_Agassi", "Kofi_Annan")}
    faces["stranger"] = face_of_lfw_photo(sorted((friends_dir / "others" / "test").rglob("*.jpg"))[0])
    make_scene(root / "scene.avi", faces, SCRIPT, N, (W, H))
    gallery = root / "gallery"
    for p in ("Andre_Agassi", "Kofi_Annan"):
        photos = sorted((friends_dir / "train" / p).glob("*.jpg"))[:4]
        res = last_json(run_cli("enroll", "--embedder", "sface", "--gallery", str(gallery), "--person", p,
                                *map(str, photos), "--json"))
    assert res["people"] == {"Andre_Agassi": 4, "Kofi_Annan": 4}
    return {"root": root, "video": root / "scene.avi", "gallery": gallery, "friends": friends_dir}


@pytest.fixture(scope="session")
def watched(video):
    root = video["root"]
    res = last_json(run_cli("watch", "--input", str(video["video"]), "--embedder", "sface", "--gallery",
                            str(video["gallery"]), "--events", str(root / "events.jsonl"), "--output",
                            str(root / "annotated.avi"), "--detect-every", str(DETECT), "--json"))
    events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    return res, events


def test_events_name_the_right_people_for_the_right_frames(watched):
    res, events = watched
    assert res["frames_read"] == res["processed"] == N and res["dropped"] == 0
    tracks = {}
    for ev in events:
        tracks.setdefault(ev["track"], []).append(ev)
    assert len(tracks) == 3, tracks  # one track per face, none split or merged
    slack = DETECT * 4  # detection interval, rounds to confirm a track and to gather votes
    for who, a, b, *_ in SCRIPT:
        tr = [evs for evs in tracks.values() if a <= evs[0]["first_frame"] < a + DETECT]
        assert len(tr) == 1, (who, tracks)
        evs = tr[0]
        kinds = [e["event"] for e in evs]
        left = evs[-1]
        assert kinds[0] == "appeared" and kinds[-1] == "left" and b - DETECT < left["last_frame"] <= b, (who, evs)
        assert a <= evs[0]["first_frame"] < a + DETECT
        named = [e for e in evs if e["event"] == "identified"]
        if who == "stranger":
            assert named == [] and left["name"] is None, evs  # stays unknown
        else:  # named once (no flicker), soon after it appeared, and still named when it left
            assert [e["name"] for e in named] == [who] and named[0]["frame"] <= a + slack, evs
            assert left["name"] == who and left["score"] > 0.363
    assert res["identified"] == ["Andre_Agassi", "Kofi_Annan"]


def test_annotated_video_has_every_frame(watched, video):
    import cv2

    res, _ = watched
    cap = cv2.VideoCapture(str(video["root"] / "annotated.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N == res["frames_written"]
    assert Path(res["plots"][0]).is_file()  # the sheet of identification frames


def test_hot_reload_names_a_person_enrolled_while_watching(video, tmp_path):
    """Watch starts on an empty gallery folder; enrolling Kofi Annan while it runs (the loop paced so
    that the enrolment lands mid-video) names him after the reload (Agassi, never enrolled, stays
    unknown)."""
    from recface_lib.gallery import Gallery
    from recface_lib.watch.stage import watch

    full = Gallery.load(video["gallery"], 128, "sface")
    kofi = full.names.index("Kofi_Annan")
    gal = tmp_path / "gallery"  # an empty gallery folder: watch starts with nobody to name
    gal.mkdir()
    done = threading.Event()

    def enrol_later():  # after the first frames, as a user would while watch runs
        time.sleep(2.5)
        g = Gallery(128, "sface")
        g.threshold = full.threshold
        g.add("Kofi_Annan", full.vectors[full.labels == kofi], ["k"] * 4)
        g.save(gal)
        done.set()

    t = threading.Thread(target=enrol_later)
    from recface_lib.inference import FaceRecognizer

    orig = FaceRecognizer.detect
    def slow_detect(self, image):  # noqa: E306  paced: about 0.1 s a detection
        time.sleep(0.1)
        return orig(self, image)
    FaceRecognizer.detect = slow_detect
    try:
        t.start()
        res = watch({"input": str(video["video"]), "embedder": "sface", "gallery": str(gal),
                     "events": str(tmp_path / "ev.jsonl"), "detect_every": DETECT, "reload_check": 0.1},
                    show_progress=False)
    finally:
        FaceRecognizer.detect = orig
        t.join()
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert done.is_set() and res["reloads"] >= 1
    kofi_named = [e for e in events if e["event"] == "identified" and e["name"] == "Kofi_Annan"]
    assert len(kofi_named) == 1, events
    assert not [e for e in events if e["event"] == "identified" and e["name"] != "Kofi_Annan"]


def test_tracker_and_voter_rules():
    from recface_lib.watch.identity import Voter
    from recface_lib.watch.tracker import Tracker, iou

    assert iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    tr = Tracker(min_iou=0.3, max_missed=1)
    m, born, dropped = tr.update([[0, 0, 10, 10], [100, 100, 120, 120]], 0, 0.0)
    assert [t.id for t in born] == [1, 2] and not dropped
    m, born, dropped = tr.update([[2, 0, 12, 10]], 3, 0.2)  # track 1 moved; track 2 unseen once
    assert [(t.id, d) for t, d in m] == [(1, 0)] and not born and not dropped
    m, born, dropped = tr.update([[4, 0, 14, 10]], 6, 0.4)
    assert [t.id for t in dropped] == [2]
    v, state = Voter(window=5, min_votes=3), {}
    seq = ["A", "A", None, "A", "B", "A", "B", "B", "B", "B"]
    out = [v.vote(state, n, 0.5) for n in seq]
    # named A at its third A vote; one B never renames it; B needs a majority of the window
    assert [w for w, _ in out] == [None, None, None, "A", "A", "A", "A", "B", "B", "B"]
    assert sum(c for _, c in out) == 2


def test_watch_bad_input(video, tmp_path):
    bad = run_cli("watch", "--input", str(tmp_path / "none.avi"), "--embedder", "sface", "--gallery",
                  str(video["gallery"]), "--json", check=False)
    assert bad.returncode == 1 and "cannot open this video" in last_json(bad)["error"]
    assert len(bad.stderr.strip().splitlines()) <= 2
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video" * 100)
    bad = run_cli("watch", "--input", str(broken), "--embedder", "sface", "--gallery", str(video["gallery"]),
                  "--json", check=False)
    assert bad.returncode == 1 and "broken.avi" in last_json(bad)["error"]
    bad = run_cli("watch", "--input", "7", "--embedder", "sface", "--gallery", str(video["gallery"]), "--json",
                  check=False)
    assert bad.returncode == 1 and "cannot open this camera" in last_json(bad)["error"]
    bad = run_cli("watch", "--input", str(video["video"]), "--embedder", "sface", "--json", check=False)
    assert bad.returncode == 1 and "give a gallery folder" in last_json(bad)["error"]


def test_stream_that_stops_keeps_its_events(video, tmp_path, monkeypatch):
    """A live source that stops mid-way: one line naming it, the events so far kept on disk."""
    from recface_lib.watch import source
    from recface_lib.watch.stage import watch

    real = source.FrameSource.__init__

    def as_live(self, spec, live=None, buffer=2, max_frames=0):
        real(self, spec, True, 1000, 0)  # the file played as a live stream that dies at its end
    monkeypatch.setattr(source.FrameSource, "__init__", as_live)
    with pytest.raises(FormatError, match=r"the stream stopped after 96 frames; \d+ events kept"):
        watch({"input": str(video["video"]), "embedder": "sface", "gallery": str(video["gallery"]),
               "events": str(tmp_path / "ev.jsonl"), "detect_every": DETECT}, show_progress=False)
    kept = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert {e["event"] for e in kept} >= {"appeared", "identified", "left"}


def test_on_identified_runs_a_command_without_a_shell(video, tmp_path):
    from recface_lib.watch.stage import watch

    out = tmp_path / "signals.txt"
    script = tmp_path / "signal.py"
    script.write_text("import json, os, sys\nev = json.load(sys.stdin)\n"
                      f"open({str(out)!r}, 'a').write(os.environ['RECFACE_NAME'] + ' ' + ev['event'] + '\\n')\n")
    res = watch({"input": str(video["video"]), "embedder": "sface", "gallery": str(video["gallery"]),
                 "detect_every": DETECT, "on_identified": [sys.executable, str(script)], "max_frames": 40},
                show_progress=False)
    assert res["commands"]["run"] == 2 and res["commands"]["failed"] == 0
    assert sorted(out.read_text().split("\n")[:-1]) == ["Andre_Agassi identified", "Kofi_Annan identified"]


def test_bundle_without_people_is_refused(trained, tmp_path):
    from recface_lib.watch.stage import watch

    import zipfile

    bundle = tmp_path / "b.zip"  # the bundle without its classifier, and no gallery beside it
    with zipfile.ZipFile(trained["bundle"]) as src, zipfile.ZipFile(bundle, "w") as dst:
        assert "classifier.json" in src.namelist()
        for n in src.namelist():
            if not n.startswith("classifier."):
                dst.writestr(n, src.read(n))
    with pytest.raises(ConfigError, match="nobody to recognise"):
        watch({"input": "x.avi", "embedder": str(bundle)}, show_progress=False)


def test_identify_with_any_embedder_and_its_gallery(video):
    """enroll/identify --embedder: a reference with its gallery folder names a person; the same
    gallery is refused for another embedder, naming both."""
    probe = str(sorted((video["friends"] / "test" / "Kofi_Annan").glob("*.jpg"))[1])
    res = last_json(run_cli("identify", "--embedder", "sface", "--gallery", str(video["gallery"]), probe, "--json"))
    face = res["images"][probe][0]
    assert face["name"] == "Kofi_Annan" and face["score"] > 0.363
    bad = run_cli("identify", "--embedder", "dlib_resnet", "--gallery", str(video["gallery"]), probe, "--json",
                  check=False)
    err = last_json(bad)["error"]
    assert bad.returncode == 1 and "enrolled with another model" in err and "sface" in err and "dlib_resnet" in err
