"""Identification with unknown rejection: the recface guide's "friends" test, done honestly.

A classifier is fitted on embeddings of known people (``train/<person>/``); a face is accepted as
the predicted person only if the classifier's score passes a threshold, else it is "unknown".
The threshold is chosen WITHOUT the test set: on train Others (the score that at most
``target_far`` of them exceed) or, with no Others, by cross-validation on the known train faces
(the ``cv_reject`` quantile of out-of-fold scores of correctly predicted faces). The old notebook
chose it on the test set, which overstates accuracy.

Scores: probability of the predicted class for ``svc_lin``, ``svc_rbf`` and ``logreg``; cosine
similarity to the class mean for ``centroid``; for ``knn``, the mean cosine similarity of the k
nearest training faces that vote for the winner.

Saved as ``classifier.npz`` (train embeddings, labels) + ``classifier.json`` (type, parameters,
names, threshold): no pickle, nothing executes on load; loading refits the (deterministic,
seeded) classifier on the stored embeddings, which takes milliseconds."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError
from ..io_utils import atomic_path, atomic_write_json
from ..protocol.verification import l2_normalize

CLASSIFIERS = ("svc_lin", "svc_rbf", "knn", "logreg", "centroid")
# `auto` picks one by cross-validation on the train faces; ties go to the first in this order
# (the simplest scores first: they stay meaningful with few photos per person)
AUTO_ORDER = ("centroid", "knn", "logreg", "svc_rbf", "svc_lin")
DEFAULTS = {"svc_lin": {"C": 1.0}, "svc_rbf": {"C": 10.0, "gamma": "scale"}, "knn": {"n_neighbors": 5},
            "logreg": {"C": 10.0}, "centroid": {}}


@dataclass
class Classifier:
    kind: str
    names: list[str]
    threshold: float = float("-inf")
    params: dict = field(default_factory=dict)
    embedder: str = ""  # what produced the embeddings (a classifier only fits its own embedder)
    embedder_id: str = ""  # its content identity (embedders.model_identity): what export checks

    def __post_init__(self):
        if self.kind not in CLASSIFIERS:
            raise ConfigError(f"classifier: unknown {self.kind!r}; valid: {', '.join(CLASSIFIERS)}")
        self.params = {**DEFAULTS[self.kind], **self.params}

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Classifier":
        self.X = l2_normalize(np.asarray(X, np.float64))
        self.y = np.asarray(y, np.int64)
        k, p = self.kind, self.params
        if k == "centroid":
            self.centres = l2_normalize(np.stack([self.X[self.y == c].mean(0) for c in range(len(self.names))]))
            return self
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.svm import SVC

        if k in ("svc_lin", "svc_rbf"):  # Platt-calibrated probabilities (sklearn's replacement for probability=True)
            svc = SVC(kernel="linear", C=p["C"]) if k == "svc_lin" else SVC(kernel="rbf", C=p["C"], gamma=p["gamma"])
            folds = int(max(2, min(3, np.bincount(self.y).min())))
            m = CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False)
        elif k == "logreg":
            m = LogisticRegression(C=p["C"], max_iter=2000)
        else:
            m = KNeighborsClassifier(n_neighbors=min(p["n_neighbors"], len(self.y)), metric="cosine")
        self.model = m.fit(self.X, self.y)
        return self

    def predict_scores(self, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class index, score) per embedding; the score is what the threshold applies to."""
        E = l2_normalize(np.asarray(E, np.float64))
        if self.kind == "centroid":
            sims = E @ self.centres.T
            idx = sims.argmax(1)
            return idx, sims[np.arange(len(E)), idx]
        if self.kind == "knn":
            idx = self.model.classes_[self.model.predict_proba(E).argmax(1)]
            dist, nb = self.model.kneighbors(E)
            sims = 1.0 - dist
            votes = self.y[nb] == idx[:, None]
            return idx, (sims * votes).sum(1) / np.maximum(votes.sum(1), 1)
        proba = self.model.predict_proba(E)
        j = proba.argmax(1)
        return self.model.classes_[j], proba[np.arange(len(E)), j]

    def identify(self, E: np.ndarray) -> list[tuple[str | None, float]]:
        idx, score = self.predict_scores(E)
        return [(self.names[i] if s > self.threshold else None, float(s)) for i, s in zip(idx, score)]

    # -- threshold without the test set -------------------------------------------------------
    def threshold_from_others(self, E_others: np.ndarray, target_far: float = 0.01) -> float:
        """Accept iff score > threshold; at most ``target_far`` of these unknown faces pass."""
        s = np.sort(self.predict_scores(E_others)[1])[::-1]
        k = int(np.floor(target_far * len(s)))
        self.threshold = float(s[k]) if k < len(s) else float("-inf")
        self.threshold_rule = f"train Others: at most {target_far:g} of {len(s)} accepted"
        return self.threshold

    def threshold_from_cv(self, cv_reject: float = 0.01, folds: int = 5) -> float:
        """No Others: out-of-fold scores of correctly predicted train faces; reject ``cv_reject`` of them."""
        scores = []
        for te, sub in out_of_fold(self.kind, self.names, self.X, self.y, self.params, folds):
            idx, s = sub.predict_scores(self.X[te])
            scores.append(s[idx == self.y[te]])
        self.threshold = float(np.quantile(np.concatenate(scores), cv_reject))
        self.threshold_rule = f"cross-validation on known train faces: {cv_reject:g} of correct faces rejected"
        return self.threshold

    # -- saving (no pickle) -------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        d = Path(folder)
        with atomic_path(d / "classifier.npz", suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, X=self.X.astype(np.float32), y=self.y)
        atomic_write_json(d / "classifier.json", {"kind": self.kind, "names": self.names, "threshold": self.threshold,
                                                  "params": self.params, "threshold_rule": getattr(self, "threshold_rule", ""),
                                                  "embedder": self.embedder, "embedder_id": self.embedder_id,
                                                  "dim": int(self.X.shape[1])})
        return d

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Classifier":
        d = Path(folder)
        try:
            meta = json.loads((d / "classifier.json").read_text())
            with np.load(d / "classifier.npz", allow_pickle=False) as z:
                X, y = z["X"], z["y"]
            c = cls(meta["kind"], list(meta["names"]), float(meta["threshold"]), meta.get("params", {}),
                    meta.get("embedder", ""), meta.get("embedder_id", "")).fit(X, y)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
            raise FormatError(f"{d}: cannot load the classifier (classifier.json + classifier.npz): {e}") from e
        c.threshold_rule = meta.get("threshold_rule", "")
        return c


def out_of_fold(kind: str, names: list[str], X: np.ndarray, y: np.ndarray, params: dict | None = None,
                folds: int = 5) -> list[tuple[np.ndarray, Classifier]]:
    """[(held-out indices, a ``kind`` classifier fitted on the rest)] over stratified, shuffled (seed 0)
    folds, at most ``folds`` and at least 2: the cross-validation of ``threshold_from_cv`` and ``auto``."""
    from sklearn.model_selection import StratifiedKFold

    n_splits = int(max(2, min(folds, np.bincount(y).min())))
    return [(te, Classifier(kind, names, params=dict(params or {})).fit(X[tr], y[tr]))
            for tr, te in StratifiedKFold(n_splits, shuffle=True, random_state=0).split(X, y)]


def choose_by_cv(X: np.ndarray, y: np.ndarray, names: list[str], E_others: np.ndarray | None = None,
                 target_far: float = 0.01, folds: int = 5) -> tuple[str, list[dict]]:
    """``classifier: auto``: cross-validate every classifier on the known TRAIN faces (stratified
    folds, at most ``folds``, at least 2) and pick the one that accepts the most out-of-fold faces
    as the right person at a threshold letting at most ``target_far`` of the train Others through
    (without Others: the best out-of-fold closed-set accuracy). No test face is looked at."""
    X, y = l2_normalize(np.asarray(X, np.float64)), np.asarray(y, np.int64)
    has_others = E_others is not None and len(E_others) > 0
    rows = []
    for kind in AUTO_ORDER:
        correct, accepted = [], []
        try:
            fitted = out_of_fold(kind, names, X, y, folds=folds)
        except ValueError as e:  # e.g. Platt calibration needs 2+ photos per person in every fold
            rows.append({"classifier": kind, "cv_closed_set_accuracy": float("nan"), "error": str(e)[:200]})
            continue
        for te, c in fitted:
            idx, s = c.predict_scores(X[te])
            ok = idx == y[te]
            correct.append(ok)
            if has_others:
                c.threshold_from_others(E_others, target_far)
                accepted.append(ok & (s > c.threshold))
        row = {"classifier": kind, "cv_closed_set_accuracy": float(np.concatenate(correct).mean())}
        if has_others:
            row["cv_correct_accepted_rate"] = float(np.concatenate(accepted).mean())
        rows.append(row)
    key = "cv_correct_accepted_rate" if has_others else "cv_closed_set_accuracy"
    best = max((r for r in rows if "error" not in r), key=lambda r: r[key])  # max keeps the first of equals: AUTO_ORDER's preference
    return best["classifier"], rows


def evaluate_open_set(clf: Classifier, E_known: np.ndarray, y_known: np.ndarray, E_others: np.ndarray) -> dict:
    """Closed-set accuracy, and with the threshold: correct accepts, wrong-person accepts, known
    faces rejected, and Others falsely accepted."""
    idx, s = clf.predict_scores(E_known)
    acc = s > clf.threshold
    correct = idx == y_known
    o_idx, o_s = clf.predict_scores(E_others) if len(E_others) else (np.zeros(0, int), np.zeros(0))
    o_acc = o_s > clf.threshold
    return {"classifier": clf.kind, "threshold": clf.threshold, "known_test": int(len(y_known)),
            "closed_set_accuracy": float(correct.mean()) if len(y_known) else float("nan"),
            "known_correct_accepted": int((acc & correct).sum()),
            "known_correct_accepted_rate": float((acc & correct).mean()) if len(y_known) else float("nan"),
            "wrong_person_accepts": int((acc & ~correct).sum()),
            "known_rejected": int((~acc).sum()),
            "others_test": int(len(E_others)), "others_false_accepts": int(o_acc.sum()),
            "others_false_accept_rate": float(o_acc.mean()) if len(E_others) else float("nan"),
            "_pred": idx, "_score": s, "_others_pred": o_idx, "_others_score": o_s}
