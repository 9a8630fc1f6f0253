"""The friends test with the dlib_resnet reference on lfw_friends16: closed-set accuracy, Others
rejected with a threshold chosen on train data only, report files, and a classifier that loads
without pickle."""
import json

import numpy as np
import pytest

from conftest import last_json, run_cli


@pytest.fixture(scope="module")
def report(friends_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    res = last_json(run_cli("classify", "--known", str(friends_dir), "--embedder", "dlib_resnet", "--output", str(out),
                            "--workers", "2", "--json"))
    return out, res


def test_friends16_identification_with_unknown_rejection(report):
    out, r = report
    assert r["known_test"] == 160 and r["others_test"] == 50 and r["others_train"] == 100
    assert r["closed_set_accuracy"] >= 0.98
    assert r["others_false_accept_rate"] <= 0.05
    assert r["threshold_rule"].startswith("train Others")
    # every test face ends in exactly one bucket: correct accept, wrong-person accept, or rejected
    assert r["known_correct_accepted"] + r["wrong_person_accepts"] + r["known_rejected"] == 160
    kinds = {row["classifier"] for row in r["comparison"]}
    assert kinds == {"svc_lin", "svc_rbf", "knn", "logreg", "centroid"}
    assert (out / "confusion.png").stat().st_size > 10000
    assert "| svc_lin |" in (out / "comparison.md").read_text()


def test_classifier_saved_without_pickle_and_reloads(report):
    from recface_lib.evaluate.classifier import Classifier

    out, r = report
    d = out / "classifier"
    meta = json.loads((d / "classifier.json").read_text())
    assert meta["kind"] == r["classifier"] and len(meta["names"]) == 16 and meta["embedder"] == "dlib_resnet"
    assert [row["classifier"] for row in r["auto_selection"]] == ["centroid", "knn", "logreg", "svc_rbf", "svc_lin"]
    with np.load(d / "classifier.npz", allow_pickle=False) as z:  # plain arrays only
        X, y = z["X"], z["y"]
    clf = Classifier.load(d)
    assert clf.threshold == pytest.approx(r["threshold"])
    idx, _ = clf.predict_scores(X)
    assert (idx == y).mean() >= 0.99  # refit on load reproduces the fitted classifier


def test_threshold_rules_do_not_look_at_test_data():
    from recface_lib.evaluate.classifier import Classifier

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 32))
    X = np.concatenate([c + 0.3 * rng.normal(size=(10, 32)) for c in centres])
    y = np.repeat(np.arange(4), 10)
    others = rng.normal(size=(50, 32))
    clf = Classifier("centroid", list("abcd")).fit(X, y)
    thr = clf.threshold_from_others(others, target_far=0.04)
    assert (clf.predict_scores(others)[1] > thr).sum() <= 2  # at most 4% of 50
    thr_cv = Classifier("logreg", list("abcd")).fit(X, y).threshold_from_cv(cv_reject=0.05)
    assert 0 < thr_cv < 1
    with pytest.raises(Exception, match="classifier: unknown 'svm'"):
        Classifier("svm", list("ab"))


def test_few_photos_per_person_default_classifier(lfw_dir, tmp_path):
    """40 people, 7 train and 3 test photos each (LFW people with >= 10 photos), dlib embeddings, no
    Others: the default (auto) classifier keeps >= 97% closed-set accuracy and rejects at most 10% of
    the known test faces at its train-chosen threshold (svc_lin with Platt calibration collapsed here)."""
    import os

    from recface_lib.data.image_folder import scan_folder

    folder = scan_folder(lfw_dir / "lfw-deepfunneled").select(min_images=10)
    people = folder.classes[::3][:40]
    assert len(people) == 40
    for person in people:
        files = sorted(folder.files[person])
        for split, part in (("train", files[:7]), ("test", files[7:10])):
            (tmp_path / "known" / split / person).mkdir(parents=True)
            for p in part:
                os.symlink(p, tmp_path / "known" / split / person / p.name)
    r = last_json(run_cli("classify", "--known", str(tmp_path / "known"), "--output", str(tmp_path / "out"),
                          "--workers", "2", "--json"))
    assert r["known_people"] == 40 and r["known_test"] == 120 and r["others_test"] == 0
    assert r["threshold_rule"].startswith("cross-validation")
    assert r["closed_set_accuracy"] >= 0.97, r["auto_selection"]
    assert r["known_rejected"] <= 12, (r["classifier"], r["known_rejected"])
    rows = {row["classifier"]: row for row in r["comparison"]}
    print("few photos:", {k: (round(v["closed_set_accuracy"], 3), v["known_rejected"]) for k, v in rows.items()},
          "chosen:", r["classifier"])


def test_auto_skips_classifiers_that_cannot_fit_two_photos_per_person():
    from recface_lib.evaluate.classifier import choose_by_cv

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 16))
    X = np.concatenate([c + 0.2 * rng.normal(size=(2, 16)) for c in centres])
    y = np.repeat(np.arange(6), 2)
    kind, rows = choose_by_cv(X, y, list("abcdef"))
    assert kind == "centroid"
    assert any("error" in r for r in rows if r["classifier"].startswith("svc"))
