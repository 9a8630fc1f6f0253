"""Face verification metrics: insightface's ``eval/verification.py`` protocol, vectorised.

* embeddings are L2-normalised (optionally after summing with the flipped image's embedding);
* 10 unshuffled folds (sizes as sklearn's ``KFold(10, shuffle=False)``); on each, the threshold with
  the best accuracy on the other 9 folds is applied to it; accuracy is mean +- std over folds.
  Where a plain fold would hold one class only (a subset such as one LFW fold, 300 same pairs then
  300 different), positives and negatives are split separately, in order (``fold_scheme``);
* VAL (TAR) at FAR 1e-3 and 1e-4: on the 9 training folds, the threshold whose FAR equals the target
  is found by interpolating FAR(threshold) on the grid ``0:4:0.001`` exactly as insightface's
  ``calculate_val`` did (``_interp_threshold`` states the rule), then TAR and FAR are measured on
  the tenth; TAR and its std are the mean and std over folds, FAR the mean;
* distances: ``euclidean`` is the squared L2 distance of normalised embeddings on insightface's grid
  ``0:4:0.01``; ``cosine`` is the same test written as cosine similarity (``cos = 1 - d/2``), and
  thresholds are reported as similarities. On normalised embeddings both give identical accuracy.

``protocol="facenet"`` is facenet's ``calculate_roc`` / ``calculate_val`` / ``distance`` and its
``validate_on_lfw`` figures instead (``_facenet``): the embeddings as given (no re-normalisation:
flipped images are concatenated, ``flip_concat``), ``subtract_mean`` subtracts, per fold, the mean
of both sides' embeddings over the training folds; ``distance`` ``euclidean`` (squared) or
``cosine`` (arccos(similarity) / pi); the grid ``0:4:0.01`` (``0:4:0.001`` for VAL) as it is, for
both distances; accuracy, VAL / FAR at each target, AUC and EER of the mean ROC over the test folds,
and precision and recall at each fold's threshold (means over folds).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def flip_sum(e: np.ndarray, e_flip: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation, the one definition: the normalised sum of the image's and the
    mirrored image's normalised embeddings."""
    return l2_normalize(l2_normalize(e) + l2_normalize(e_flip))


def flip_concat(e: np.ndarray, e_flip: np.ndarray) -> np.ndarray:
    """facenet's flip: the image's and the mirrored image's L2-normalised embeddings side by side,
    not re-normalised (``validate_on_lfw --use_flipped_images``)."""
    return np.concatenate([l2_normalize(e), l2_normalize(e_flip)], axis=1)


def fold_indices(n: int, n_folds: int = 10) -> list[np.ndarray]:
    """Unshuffled folds, the first ``n % n_folds`` one larger (sklearn KFold's sizes)."""
    if n < n_folds:
        raise ValueError(f"{n} pairs cannot be split into {n_folds} folds")
    return np.array_split(np.arange(n), n_folds)


def stratified_fold_indices(same: np.ndarray, n_folds: int = 10) -> list[np.ndarray]:
    """Unshuffled folds that split the positive and the negative pairs separately, in order, so
    every fold has both. Used when the plain folds would hold one class only (e.g. a single LFW
    fold: 300 same pairs then 300 different ones)."""
    pos, neg = np.flatnonzero(same), np.flatnonzero(~same)
    if len(pos) < n_folds or len(neg) < n_folds:
        raise ValueError(f"{len(pos)} positive / {len(neg)} negative pairs cannot fill {n_folds} folds")
    return [np.sort(np.concatenate([a, b])) for a, b in zip(np.array_split(pos, n_folds), np.array_split(neg, n_folds))]


def _counts(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray, folds: list[np.ndarray]):
    """Per fold and threshold: true/false accepts and positive/negative totals. Shapes (F, T)."""
    fold_of = np.empty(len(dist), dtype=np.int64)
    for f, idx in enumerate(folds):
        fold_of[idx] = f
    nf, nt = len(folds), len(thresholds)
    order = np.argsort(dist, kind="stable")
    d_sorted = dist[order]
    # number of pairs with dist < t, for every t: position in the sorted distances
    pos = np.searchsorted(d_sorted, thresholds, side="left")
    ta = np.zeros((nf, nt), dtype=np.int64)
    fa = np.zeros((nf, nt), dtype=np.int64)
    for f in range(nf):
        in_f = fold_of[order] == f
        cs_same = np.concatenate([[0], np.cumsum(in_f & same[order])])
        cs_diff = np.concatenate([[0], np.cumsum(in_f & ~same[order])])
        ta[f], fa[f] = cs_same[pos], cs_diff[pos]
    npos = np.array([same[idx].sum() for idx in folds])
    nneg = np.array([(~same[idx]).sum() for idx in folds])
    return ta, fa, npos, nneg


def _interp_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """The threshold at which the training folds' FAR reaches ``target``, exactly as insightface's
    ``calculate_val`` computed it: ``interpolate.interp1d(far, thresholds, kind='slinear')(target)``
    with the scipy it was written for (before 1.9; today's scipy refuses duplicate FAR values).

    That interp1d sorted by FAR with a stable mergesort and built a degree-1 B-spline with knots
    ``[x0, x0, x1, ..., xn, xn]`` and the thresholds as coefficients. Evaluated at ``target`` it
    interpolates linearly inside the one non-empty knot interval ``x[l-1] <= target < x[l]``: from
    the LARGEST threshold of the highest FAR value not above the target to the SMALLEST threshold of
    the next FAR value. A target equal to a FAR value gives that value's largest threshold (also
    for the largest FAR, unless that value is repeated: then 0, below). When no FAR reaches the
    target insightface uses the threshold 0. The rule is scipy 1.6-1.8's (1.5 and older sorted
    unstably and gave other thresholds on ties); facenet's ``calculate_val`` uses the same call."""
    if far.max() < target:
        return 0.0
    order = np.argsort(far, kind="mergesort")
    xs, ys = far[order], thresholds[order]
    hi = int(np.searchsorted(xs, target, side="right"))
    if hi >= len(xs):  # the target is the largest FAR: the spline's last knot interval
        # is [x[-2], x[-1]]; where the largest FAR is repeated that interval is empty and old
        # scipy's B-spline evaluates to 0 there (interp1d([0, 0, .5, 1, 1], [0, 1, 2, 3, 4],
        # kind='slinear')(1.0) == 0.0 in scipy 1.5-1.8): the reference's threshold, kept
        return float(ys[-1]) if len(xs) < 2 or xs[-2] < xs[-1] else 0.0
    if hi == 0:  # below every FAR (cannot happen: the FAR at threshold 0 is 0)
        return float(ys[0])
    lo = hi - 1
    return float(ys[lo] + (ys[hi] - ys[lo]) * (target - xs[lo]) / (xs[hi] - xs[lo]))


@dataclass
class VerificationResult:
    accuracy: float
    accuracy_std: float
    threshold: float
    fold_accuracies: list[float]
    val_far: dict[str, dict[str, float]]
    auc: float
    num_pairs: int
    metric: str
    fold_scheme: str
    mean_angle_same: float
    mean_angle_diff: float
    protocol: str = "insightface"
    subtract_mean: bool = False
    eer: float | None = None  # facenet protocol
    precision: float | None = None
    recall: float | None = None
    roc_fpr: list[float] = field(repr=False, default_factory=list)
    roc_tpr: list[float] = field(repr=False, default_factory=list)
    similarities: list[float] = field(repr=False, default_factory=list)  # cosine of each pair

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("roc_fpr"), d.pop("roc_tpr"), d.pop("similarities")
        return d

    def __str__(self) -> str:
        v3 = self.val_far.get("1e-03", {}).get("tar", float("nan"))
        v4 = self.val_far.get("1e-04", {}).get("tar", float("nan"))
        return (f"accuracy {100 * self.accuracy:.2f}% +- {100 * self.accuracy_std:.2f} ({self.num_pairs} pairs, "
                f"threshold {self.threshold:.4f} {self.metric}), TAR@FAR1e-3 {100 * v3:.2f}%, "
                f"TAR@FAR1e-4 {100 * v4:.2f}%, AUC {self.auc:.4f}")


def pair_distances(emb1: np.ndarray, emb2: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Squared L2 distance of (normalised) embeddings; equals ``2 - 2 cos`` when normalised."""
    a, b = (l2_normalize(emb1), l2_normalize(emb2)) if normalize else (np.asarray(emb1, np.float64), np.asarray(emb2, np.float64))
    return ((a - b) ** 2).sum(1)


def _mean_angles(cos: np.ndarray, same: np.ndarray) -> dict:
    """The mean angle in degrees of the same pairs and of the different pairs (NaN for none)."""
    ang = np.degrees(np.arccos(cos))
    return {"mean_angle_same": float(ang[same].mean()) if same.any() else float("nan"),
            "mean_angle_diff": float(ang[~same].mean()) if (~same).any() else float("nan")}


PROTOCOLS = ("insightface", "facenet")
DISTANCES = ("euclidean", "cosine")


def evaluate_embeddings(emb1: np.ndarray, emb2: np.ndarray, issame: Sequence[bool], n_folds: int = 10,
                        metric: str = "cosine", far_targets: Sequence[float] = (1e-3, 1e-4),
                        normalize: bool = True, protocol: str = "insightface", distance: str = "euclidean",
                        subtract_mean: bool = False) -> VerificationResult:
    """The 10-fold verification protocol on embeddings of the first and second image of each pair:
    insightface's (``metric`` says how its threshold is reported) or, with ``protocol="facenet"``,
    facenet's (``distance``, ``subtract_mean``; module docstring)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    same = np.asarray(issame, dtype=bool)
    if len(emb1) != len(same) or len(emb2) != len(same):
        raise ValueError(f"{len(emb1)}/{len(emb2)} embedding pairs for {len(same)} labels")
    folds = fold_indices(len(same), n_folds)
    scheme = "insightface"
    if any(same[idx].all() or (~same[idx]).all() for idx in folds):
        folds, scheme = stratified_fold_indices(same, n_folds), "stratified"
    if protocol == "facenet":
        return _facenet(np.asarray(emb1, np.float64), np.asarray(emb2, np.float64), same, folds, scheme, distance,
                        subtract_mean, far_targets)
    dist = pair_distances(emb1, emb2, normalize)
    top = 4.0 if normalize else float(dist.max()) * 1.0001 + 1e-9
    thr = np.arange(0, 4, 0.01) * (top / 4.0)

    ta, fa, npos, nneg = _counts(dist, same, thr, folds)
    tr = (npos.sum() - npos)[:, None], (nneg.sum() - nneg)[:, None]
    ta_tr, fa_tr = ta.sum(0) - ta, fa.sum(0) - fa
    acc_train = (ta_tr + (tr[1] - fa_tr)) / (tr[0] + tr[1])
    best = np.argmax(acc_train, axis=1)  # first best threshold, as np.argmax in insightface
    fold_acc = np.array([(ta[f, b] + nneg[f] - fa[f, b]) / (npos[f] + nneg[f]) for f, b in enumerate(best)])

    thr_val = np.arange(0, 4, 0.001) * (top / 4.0)
    ta_v, fa_v, _, _ = _counts(dist, same, thr_val, folds)
    ta_vtr, fa_vtr = ta_v.sum(0) - ta_v, fa_v.sum(0) - fa_v
    val_far = {}
    for target in far_targets:
        tars, fars = [], []
        for f, idx in enumerate(folds):
            far_train = fa_vtr[f] / max(nneg.sum() - nneg[f], 1)
            t = _interp_threshold(far_train, thr_val, target)
            d, s = dist[idx], same[idx]
            acc = d < t
            tars.append((acc & s).sum() / max(s.sum(), 1))
            fars.append((acc & ~s).sum() / max((~s).sum(), 1))
        val_far[f"{target:.0e}"] = {"tar": float(np.mean(tars)), "tar_std": float(np.std(tars)), "far": float(np.mean(fars))}

    best_thr = float(np.mean(thr[best]))
    if metric == "cosine" and normalize:
        best_thr = 1.0 - best_thr / 2.0
    score = -dist
    fpr, tpr, _ = roc_curve(same, score)
    auc = float(roc_auc_score(same, score)) if 0 < same.sum() < len(same) else float("nan")
    cos = np.clip(1.0 - dist / 2.0, -1.0, 1.0) if normalize else np.clip(
        (l2_normalize(emb1) * l2_normalize(emb2)).sum(1), -1, 1)
    return VerificationResult(
        accuracy=float(fold_acc.mean()), accuracy_std=float(fold_acc.std()), threshold=best_thr,
        fold_accuracies=[float(a) for a in fold_acc], val_far=val_far, auc=auc, num_pairs=int(len(same)),
        metric=metric, fold_scheme=scheme, **_mean_angles(cos, same),
        roc_fpr=fpr.tolist(), roc_tpr=tpr.tolist(), similarities=cos.tolist())


def facenet_distance(e1: np.ndarray, e2: np.ndarray, distance: str = "euclidean") -> np.ndarray:
    """facenet's ``distance``: squared L2 (``euclidean``) or arccos(cosine similarity) / pi
    (``cosine``), on the embeddings as given."""
    if distance == "euclidean":
        return np.sum(np.square(np.subtract(e1, e2)), 1)
    if distance == "cosine":
        sim = np.sum(np.multiply(e1, e2), axis=1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))
        with np.errstate(invalid="ignore"):  # a rounding above 1 is NaN, as in facenet: never accepted
            return np.arccos(sim) / np.pi
    raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")


def _sides(d: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distances of the same pairs and of the different pairs, each sorted (NaN last)."""
    return np.sort(d[s]), np.sort(d[~s])


def _below(sides: tuple[np.ndarray, np.ndarray], thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold: same pairs and different pairs with ``d < t`` (``np.less``; NaN never)."""
    return (np.searchsorted(sides[0], thresholds, side="left"), np.searchsorted(sides[1], thresholds, side="left"))


def facenet_eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """``validate_on_lfw``'s EER, ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)``. Where
    facenet fails (the ROC never leaves FPR 0, or never reaches FPR 1: the root is outside the
    curve) the curve is completed with the accept-nothing point (0, 0) and the accept-all point
    (1, 1), which some threshold always gives, and the root taken on that."""
    from scipy import interpolate
    from scipy.optimize import brentq

    try:
        f = interpolate.interp1d(fpr, tpr)
        return float(brentq(lambda x: 1.0 - x - f(x), 0.0, 1.0))
    except ValueError:
        x, y = np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]
        order = np.argsort(x, kind="mergesort")
        x, y = x[order], y[order]
        return float(brentq(lambda q: 1.0 - q - np.interp(q, x, y), 0.0, 1.0))


def _facenet(e1, e2, same, folds, scheme, distance, subtract_mean, far_targets) -> VerificationResult:
    from sklearn import metrics

    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    thr, thr_val = np.arange(0, 4, 0.01), np.arange(0, 4, 0.001)
    n = len(same)
    tprs, fprs = np.zeros((len(folds), len(thr))), np.zeros((len(folds), len(thr)))
    acc, best_thr, prec, rec = (np.zeros(len(folds)) for _ in range(4))
    vals = {t: ([], []) for t in far_targets}

    def rates(tp, fp, s):  # calculate_accuracy's tpr, fpr (0 where a class is absent)
        npos, nneg = int(s.sum()), int((~s).sum())
        return (tp / npos if npos else np.zeros(len(tp))), (fp / nneg if nneg else np.zeros(len(fp)))

    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        mean = np.mean(np.concatenate([e1[train], e2[train]]), axis=0) if subtract_mean else 0.0
        d = facenet_distance(e1 - mean, e2 - mean, distance)
        s_tr, s_te = same[train], same[test]
        sides_tr = _sides(d[train], s_tr)
        tp, fp = _below(sides_tr, thr)
        b = int(np.argmax((tp + ((~s_tr).sum() - fp)) / len(train)))  # the first best, as np.argmax
        tp, fp = _below(_sides(d[test], s_te), thr)
        tprs[f], fprs[f] = rates(tp, fp, s_te)
        acc[f] = (tp[b] + ((~s_te).sum() - fp[b])) / len(test)
        best_thr[f] = thr[b]
        prec[f] = tp[b] / (tp[b] + fp[b]) if tp[b] + fp[b] else 0.0
        rec[f] = tp[b] / s_te.sum() if s_te.sum() else 0.0
        far_train = _below(sides_tr, thr_val)[1] / max(int((~s_tr).sum()), 1)
        for target in far_targets:
            t = _interp_threshold(far_train, thr_val, target)
            pred = np.less(d[test], t)
            vals[target][0].append((pred & s_te).sum() / max(int(s_te.sum()), 1))
            vals[target][1].append((pred & ~s_te).sum() / max(int((~s_te).sum()), 1))
    tpr, fpr = np.mean(tprs, 0), np.mean(fprs, 0)
    cos = np.clip((l2_normalize(e1) * l2_normalize(e2)).sum(1), -1, 1)
    return VerificationResult(
        accuracy=float(np.mean(acc)), accuracy_std=float(np.std(acc)), threshold=float(np.mean(best_thr)),
        fold_accuracies=[float(a) for a in acc],
        val_far={f"{t:.0e}": {"tar": float(np.mean(v)), "tar_std": float(np.std(v)), "far": float(np.mean(fa))}
                 for t, (v, fa) in vals.items()},
        auc=float(metrics.auc(fpr, tpr)), num_pairs=int(n), metric=distance, fold_scheme=scheme,
        **_mean_angles(cos, same), protocol="facenet", subtract_mean=bool(subtract_mean), eer=facenet_eer(fpr, tpr),
        precision=float(np.mean(prec)), recall=float(np.mean(rec)),
        roc_fpr=fpr.tolist(), roc_tpr=tpr.tolist(), similarities=cos.tolist())
