import numpy as np
import pytest

from recface_lib.align.template import (ARCFACE_TEMPLATE_112, apply_transform, crop_box, similarity_transform,
                                        template, warp_to_template)
from recface_lib.protocol.verification import evaluate_embeddings, fold_indices, stratified_fold_indices


# -- transform ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("angle,scale,tx,ty", [(0.0, 1.0, 0, 0), (17.0, 0.6, 30.5, -12.25), (-95.0, 2.3, -4, 80)])
def test_known_similarity_recovered_exactly(angle, scale, tx, ty):
    a = np.radians(angle)
    m_true = np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])
    src = np.random.default_rng(1).uniform(0, 200, (5, 2))
    dst = apply_transform(m_true, src)
    m = similarity_transform(src, dst)
    assert np.allclose(m, m_true, atol=1e-9)
    assert np.allclose(apply_transform(m, src), dst, atol=1e-9)


def test_no_reflection_and_least_squares():
    src = np.array([[0, 0], [1, 0], [0, 1]], float)
    dst = src * [-1, 1]  # a mirror image: the best similarity is not a reflection
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    # noisy points: residual no worse than that of the true transform
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    dst = src * 1.2 + [3, 4] + rng.normal(0, 0.5, (5, 2))
    res = np.linalg.norm(apply_transform(similarity_transform(src, dst), src) - dst)
    assert res <= np.linalg.norm(src * 1.2 + [3, 4] - dst) + 1e-9


def test_template_scaling_and_warp_places_landmarks():
    assert np.allclose(template(112), ARCFACE_TEMPLATE_112)
    assert np.allclose(template(224), ARCFACE_TEMPLATE_112 * 2)
    # draw 5 dots in a 300x300 image at a scaled/rotated/translated template; warp must bring them home
    import cv2
    a = np.radians(12)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 60], [1.7 * np.sin(a), 1.7 * np.cos(a), 40]])
    pts = apply_transform(m, ARCFACE_TEMPLATE_112)
    img = np.zeros((300, 300, 3), np.uint8)
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    out = warp_to_template(img, pts, 112)
    for tx, ty in ARCFACE_TEMPLATE_112:
        patch = out[int(ty) - 4:int(ty) + 5, int(tx) - 4:int(tx) + 5, 0]
        assert patch.max() > 200


def test_crop_box_square_margin_clip():
    img = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(100, 80, 3).astype(np.uint8)
    assert crop_box(img, (10, 20, 30, 60), 50).shape == (50, 50, 3)
    assert crop_box(img, (-30, -30, 500, 500), 32, square=True, margin=40).shape == (32, 32, 3)


# -- metric ------------------------------------------------------------------------------------------
def _emb_from_cos(cos):
    """Unit vectors in 2-D with the given cosine between the pair members."""
    a = np.tile([[1.0, 0.0]], (len(cos), 1))
    ang = np.arccos(np.clip(cos, -1, 1))
    b = np.stack([np.cos(ang), np.sin(ang)], 1)
    return a, b


def test_metric_hand_computed_small_case():
    # 20 pairs, 2 folds of 10. Similarities chosen so the answers can be worked out by hand:
    cos = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.3, 0.2, 0.0, -0.2, 0.65] * 2)
    same = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0] * 2, bool)
    a, b = _emb_from_cos(cos)
    r = evaluate_embeddings(a, b, same, n_folds=2)
    # on each training fold, the best threshold accepts cos > ~0.5 (d = 2 - 2cos < 1.0): it gets 8/10
    # right: pair 4 (same, cos 0.1) is rejected and pair 9 (different, cos 0.65) is accepted.
    assert r.fold_accuracies == [0.8, 0.8]
    assert r.accuracy == pytest.approx(0.8) and r.accuracy_std == pytest.approx(0.0)
    # accepting cos >= 0.7 (3 same + 5 different right) and cos >= 0.6 (4 + 4) both give 8/10; the
    # first best threshold on insightface's grid d = 2 - 2cos < t is t = 0.61 (d of cos 0.7 is 0.6),
    # reported as the cosine 1 - 0.61 / 2 = 0.695
    assert r.threshold == pytest.approx(0.695)
    # AUC by hand: positives {0.9,0.8,0.7,0.6,0.1} vs negatives {0.3,0.2,0.0,-0.2,0.65}:
    # pairs ranked correctly = 4*5 - (4 positives > 0.65? 0.6 < 0.65 -> 1 miss) ... count directly
    pos, neg = cos[same][:5], cos[~same][:5]
    auc = np.mean([[p > n for n in neg] for p in pos])
    assert r.auc == pytest.approx(auc)
    assert r.mean_angle_same == pytest.approx(np.degrees(np.arccos(cos[same])).mean(), abs=1e-6)


def _old_scipy_slinear(x, y, xq):
    """``interpolate.interp1d(x, y, kind='slinear')(xq)`` as scipy < 1.9 computed it (duplicate x
    allowed): stable mergesort by x, then ``make_interp_spline(x, y, k=1)``, whose k=1 case was the
    B-spline with knots ``r_[x[0], x, x[-1]]`` and coefficients y; evaluated here by scipy's own
    BSpline (bounds_error: out of range raises, as interp1d did)."""
    from scipy.interpolate import BSpline

    ind = np.argsort(x, kind="mergesort")
    x, y = np.asarray(x)[ind], np.asarray(y)[ind]
    if not x[0] <= xq <= x[-1]:
        raise ValueError("A value in x_new is outside the interpolation range.")
    return float(BSpline(np.r_[x[0], x, x[-1]], y, 1, extrapolate=False)(xq))


def _reference_insightface(dist, same, nfolds=10, far_target=1e-3):
    """A loop-by-loop transcription of insightface's eval/verification.py calculate_roc and
    calculate_val / calculate_val_far (sklearn KFold unshuffled, threshold grids 0:4:0.01 and
    0:4:0.001), with interp1d as the scipy of its time computed it. Returns (accuracy mean, std,
    TAR mean, TAR std, FAR mean)."""
    from sklearn.model_selection import KFold

    def accuracy(threshold, d, s):
        pred = np.less(d, threshold)
        tp = np.sum(np.logical_and(pred, s))
        tn = np.sum(np.logical_and(np.logical_not(pred), np.logical_not(s)))
        return float(tp + tn) / d.size

    def val_far(threshold, d, s):
        pred = np.less(d, threshold)
        ta = np.sum(np.logical_and(pred, s))
        fa = np.sum(np.logical_and(pred, np.logical_not(s)))
        return float(ta) / float(np.sum(s)), float(fa) / float(np.sum(np.logical_not(s)))

    k_fold = KFold(n_splits=nfolds, shuffle=False)
    indices = np.arange(len(dist))
    thresholds = np.arange(0, 4, 0.01)
    acc = np.zeros(nfolds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            acc_train[threshold_idx] = accuracy(threshold, dist[train_set], same[train_set])
        best = np.argmax(acc_train)
        acc[fold_idx] = accuracy(thresholds[best], dist[test_set], same[test_set])
    thresholds = np.arange(0, 4, 0.001)
    val, far = np.zeros(nfolds), np.zeros(nfolds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        far_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            _, far_train[threshold_idx] = val_far(threshold, dist[train_set], same[train_set])
        if np.max(far_train) >= far_target:
            threshold = _old_scipy_slinear(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        val[fold_idx], far[fold_idx] = val_far(threshold, dist[test_set], same[test_set])
    return np.mean(acc), np.std(acc), np.mean(val), np.std(val), np.mean(far)


def _reference_sets():
    """Varied embedding sets (>= 10): easy, hard, random labels, float32, shuffled pair order,
    ties (quantised embeddings), odd sizes, imbalanced classes, an AgeDB-like 6,000-pair set."""
    rng = np.random.default_rng(2026)
    sets = []

    def make(n, noise, dim=64, block=(50, 50), dtype=np.float64, shuffle=False, quant=None, labels=None):
        same = labels if labels is not None else np.resize(np.r_[np.ones(block[0]), np.zeros(block[1])], n).astype(bool)
        if shuffle:
            same = rng.permutation(same)
        a = rng.normal(size=(n, dim))
        b = np.where(same[:, None], a + rng.normal(size=(n, dim)) * noise, rng.normal(size=(n, dim)))
        if quant:  # on the unit sphere, so no vector rounds to zero (a max component >= 1/sqrt(dim))
            a = np.round(a / np.linalg.norm(a, axis=1, keepdims=True) * quant) / quant
            b = np.round(b / np.linalg.norm(b, axis=1, keepdims=True) * quant) / quant
        return a.astype(dtype), b.astype(dtype), same

    sets.append(("moderate", *make(1000, 1.3)))
    sets.append(("easy", *make(1000, 0.3)))
    sets.append(("hard", *make(1000, 3.0)))
    sets.append(("float32", *make(1200, 1.0, dtype=np.float32)))
    sets.append(("shuffled order", *make(1000, 1.2, shuffle=True)))
    sets.append(("ties", *make(1000, 1.0, dim=4, quant=4)))
    sets.append(("odd size", *make(1003, 1.1, block=(37, 41))))
    sets.append(("imbalanced", *make(1500, 1.0, block=(20, 80), shuffle=True)))
    sets.append(("random label order", *make(800, 1.0, labels=rng.random(800) < 0.5)))
    sets.append(("agedb-like", *make(6000, 1.6, dim=128, block=(300, 300))))
    sets.append(("low dim", *make(2000, 0.8, dim=2)))
    return sets


@pytest.mark.parametrize("k", range(11))
def test_metric_equals_insightface_transcription(k):
    name, a, b, same = _reference_sets()[k]
    an = a.astype(np.float64) / np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True)
    bn = b.astype(np.float64) / np.linalg.norm(b.astype(np.float64), axis=1, keepdims=True)
    dist = ((an - bn) ** 2).sum(1)
    r = evaluate_embeddings(a, b, same, metric="euclidean", far_targets=(1e-3, 1e-2))
    assert r.fold_scheme == "insightface", name
    for target in (1e-3, 1e-2):
        acc, std, tar, tar_std, far = _reference_insightface(dist, same, far_target=target)
        v = r.val_far[f"{target:.0e}"]
        assert r.accuracy == pytest.approx(acc, abs=1e-12) and r.accuracy_std == pytest.approx(std, abs=1e-12), name
        assert v["tar"] == pytest.approx(tar, abs=1e-9), (name, target)
        assert v["tar_std"] == pytest.approx(tar_std, abs=1e-9), (name, target)
        assert v["far"] == pytest.approx(far, abs=1e-9), (name, target)
    rc = evaluate_embeddings(a, b, same, metric="cosine")
    assert rc.accuracy == r.accuracy and rc.threshold == pytest.approx(1 - r.threshold / 2)


def test_interpolation_rule_on_duplicates():
    """The rule by hand: FAR values with duplicate thresholds interpolate from the largest threshold
    of the lower FAR value to the smallest of the next (the old-scipy B-spline agrees)."""
    from recface_lib.protocol.verification import _interp_threshold

    far = np.array([0.0, 0.0, 0.0, 0.002, 0.002, 0.004])
    thr = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # 1e-3 lies halfway between FAR 0 (largest threshold 0.2) and FAR 0.002 (smallest threshold 0.3)
    assert _interp_threshold(far, thr, 1e-3) == pytest.approx(0.25)
    assert _interp_threshold(far, thr, 0.002) == pytest.approx(0.4)  # a FAR value itself: its largest
    assert _interp_threshold(far, thr, 0.003) == pytest.approx(0.45)
    assert _interp_threshold(far, thr, 0.004) == pytest.approx(0.5)
    assert _interp_threshold(far, thr, 0.01) == 0.0  # never reached: insightface uses 0
    for t in (1e-3, 0.002, 0.003, 0.004):
        assert _interp_threshold(far, thr, t) == pytest.approx(_old_scipy_slinear(far, thr, t))


def test_folds():
    assert [len(f) for f in fold_indices(23, 10)] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    same = np.r_[np.ones(300), np.zeros(300)].astype(bool)
    folds = stratified_fold_indices(same, 10)
    assert all(same[f].sum() == 30 and (~same[f]).sum() == 30 for f in folds)
    a, b = _emb_from_cos(np.where(same, 0.8, 0.1) + np.random.default_rng(0).normal(0, 0.2, 600))
    assert evaluate_embeddings(a, b, same).fold_scheme == "stratified"


def test_vectorised_speed_is_not_quadratic():
    import time
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6000, 128)), rng.normal(size=(6000, 128))
    same = np.tile(np.r_[np.ones(300), np.zeros(300)], 10).astype(bool)
    evaluate_embeddings(a[:600], b[:600], same[:600])
    t = time.perf_counter()
    evaluate_embeddings(a, b, same)
    assert time.perf_counter() - t < 5.0  # ~0.1 s here; a generous bound, this is not a benchmark


# -- facenet's protocol (#23) -----------------------------------------------------------------------
def _reference_facenet(e1, e2, same, distance_metric, subtract_mean, far_target=1e-3, nrof_folds=10):
    """A loop-by-loop transcription of facenet's src/facenet.py ``distance``, ``calculate_roc`` /
    ``calculate_accuracy``, ``calculate_val`` / ``calculate_val_far`` and validate_on_lfw's AUC and
    EER (sklearn KFold unshuffled; interp1d as the scipy of its time computed it). Also the
    precision and recall at each fold's threshold (recface's addition). Returns a dict."""
    import math

    from scipy import interpolate
    from scipy.optimize import brentq
    from sklearn import metrics
    from sklearn.model_selection import KFold

    def distance(embeddings1, embeddings2, distance_metric=0):
        if distance_metric == 0:
            diff = np.subtract(embeddings1, embeddings2)
            dist = np.sum(np.square(diff), 1)
        else:
            dot = np.sum(np.multiply(embeddings1, embeddings2), axis=1)
            norm = np.linalg.norm(embeddings1, axis=1) * np.linalg.norm(embeddings2, axis=1)
            similarity = dot / norm
            with np.errstate(invalid="ignore"):
                dist = np.arccos(similarity) / math.pi
        return dist

    def calculate_accuracy(threshold, dist, actual_issame):
        predict_issame = np.less(dist, threshold)
        tp = np.sum(np.logical_and(predict_issame, actual_issame))
        fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
        tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
        fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
        tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
        fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
        acc = float(tp + tn) / dist.size
        return tpr, fpr, acc, tp, fp, fn

    def calculate_val_far(threshold, dist, actual_issame):
        predict_issame = np.less(dist, threshold)
        true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
        false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
        n_same = np.sum(actual_issame)
        n_diff = np.sum(np.logical_not(actual_issame))
        return float(true_accept) / float(n_same), float(false_accept) / float(n_diff)

    def fold_distance(train_set):  # the first lines of both calculate_roc's and calculate_val's fold loop
        if subtract_mean:
            mean = np.mean(np.concatenate([e1[train_set], e2[train_set]]), axis=0)
        else:
            mean = 0.0
        return distance(e1 - mean, e2 - mean, distance_metric)

    k_fold = KFold(n_splits=nrof_folds, shuffle=False)
    indices = np.arange(len(same))
    thresholds = np.arange(0, 4, 0.01)
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy, precision, recall = np.zeros(nrof_folds), np.zeros(nrof_folds), np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        dist = fold_distance(train_set)
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            _, _, acc_train[threshold_idx], _, _, _ = calculate_accuracy(threshold, dist[train_set], same[train_set])
        best_threshold_index = np.argmax(acc_train)
        for threshold_idx, threshold in enumerate(thresholds):
            tprs[fold_idx, threshold_idx], fprs[fold_idx, threshold_idx], _, _, _, _ = calculate_accuracy(
                threshold, dist[test_set], same[test_set])
        _, _, accuracy[fold_idx], tp, fp, fn = calculate_accuracy(thresholds[best_threshold_index], dist[test_set],
                                                                  same[test_set])
        precision[fold_idx] = tp / (tp + fp) if tp + fp else 0.0
        recall[fold_idx] = tp / (tp + fn)
    tpr, fpr = np.mean(tprs, 0), np.mean(fprs, 0)
    thresholds = np.arange(0, 4, 0.001)
    val, far = np.zeros(nrof_folds), np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        dist = fold_distance(train_set)
        far_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            _, far_train[threshold_idx] = calculate_val_far(threshold, dist[train_set], same[train_set])
        if np.max(far_train) >= far_target:
            threshold = _old_scipy_slinear(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        val[fold_idx], far[fold_idx] = calculate_val_far(threshold, dist[test_set], same[test_set])
    auc = metrics.auc(fpr, tpr)
    try:
        eer = brentq(lambda x: 1. - x - interpolate.interp1d(fpr, tpr)(x), 0., 1.)
    except ValueError:  # facenet fails here: recface's stated rule, the curve completed with (0,0), (1,1)
        x, y = np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]
        eer = brentq(lambda q: 1. - q - np.interp(q, x, y), 0., 1.)
    return {"accuracy": np.mean(accuracy), "std": np.std(accuracy), "val": np.mean(val), "val_std": np.std(val),
            "far": np.mean(far), "auc": auc, "eer": eer, "precision": np.mean(precision), "recall": np.mean(recall),
            "tpr": tpr, "fpr": fpr}


# (set, distance, subtract_mean, flip concatenated): 10 embedding sets, every combination
FACENET_CASES = [(0, "euclidean", False, False), (1, "cosine", True, False), (2, "euclidean", True, True),
                 (3, "cosine", False, True), (4, "euclidean", True, False), (5, "cosine", True, True),
                 (6, "euclidean", False, True), (7, "cosine", False, False), (8, "euclidean", True, True),
                 (10, "cosine", True, False)]


@pytest.mark.parametrize("k,distance,subtract_mean,flip", FACENET_CASES)
def test_facenet_protocol_equals_facenet_transcription(k, distance, subtract_mean, flip):
    from recface_lib.protocol.verification import flip_concat, l2_normalize

    name, a, b, same = _reference_sets()[k]
    rng = np.random.default_rng(k)
    if flip:  # a "mirrored" embedding near each one, concatenated as facenet's --use_flipped_images
        a = flip_concat(a, a + 0.3 * rng.normal(size=a.shape))
        b = flip_concat(b, b + 0.3 * rng.normal(size=b.shape))
        assert np.allclose(np.linalg.norm(a, axis=1), np.sqrt(2))  # not re-normalised
    else:  # facenet's embeddings are L2-normalised by the network
        a, b = l2_normalize(a), l2_normalize(b)
    r = evaluate_embeddings(a, b, same, protocol="facenet", distance=distance, subtract_mean=subtract_mean,
                            far_targets=(1e-3,))
    ref = _reference_facenet(np.asarray(a, np.float64), np.asarray(b, np.float64), same,
                             0 if distance == "euclidean" else 1, subtract_mean)
    assert r.fold_scheme == "insightface" and r.protocol == "facenet" and r.metric == distance, name
    v = r.val_far["1e-03"]
    got = {"accuracy": r.accuracy, "std": r.accuracy_std, "val": v["tar"], "val_std": v["tar_std"], "far": v["far"],
           "auc": r.auc, "eer": r.eer, "precision": r.precision, "recall": r.recall}
    for key, value in got.items():
        assert value == pytest.approx(ref[key], abs=1e-9), (name, key, value, ref[key])
    np.testing.assert_allclose(r.roc_tpr, ref["tpr"], atol=1e-12)
    np.testing.assert_allclose(r.roc_fpr, ref["fpr"], atol=1e-12)
    assert 0.0 < r.accuracy <= 1.0


def test_facenet_protocol_edges():
    """subtract_mean changes the figure where the embeddings share an offset; EER where facenet's
    own brentq fails (no false accept on the whole grid) is defined; bad names are refused."""
    from recface_lib.protocol.verification import facenet_eer

    rng = np.random.default_rng(5)
    a = rng.normal(size=(400, 8)) + 4.0  # a common offset: the cosine of different people is high
    b = np.where(np.arange(400)[:, None] % 2 == 0, a + 0.3 * rng.normal(size=a.shape), rng.normal(size=a.shape) + 4.0)
    same = np.arange(400) % 2 == 0
    plain = evaluate_embeddings(a, b, same, protocol="facenet", distance="cosine")
    centred = evaluate_embeddings(a, b, same, protocol="facenet", distance="cosine", subtract_mean=True)
    assert centred.accuracy > plain.accuracy and centred.subtract_mean and not plain.subtract_mean
    # facenet's validate_on_lfw raises here (the ROC stays at FPR 0): completed with (1, 1)
    fpr, tpr = np.zeros(400), np.linspace(0, 0.9, 400)
    with pytest.raises(ValueError):
        from scipy import interpolate
        from scipy.optimize import brentq
        brentq(lambda x: 1. - x - interpolate.interp1d(fpr, tpr)(x), 0., 1.)
    assert facenet_eer(fpr, tpr) == pytest.approx(0.1 / 1.1)  # 1 - x = 0.9 + 0.1 x
    with pytest.raises(ValueError, match="distance must be one of euclidean, cosine"):
        evaluate_embeddings(a, b, same, protocol="facenet", distance="manhattan")
    with pytest.raises(ValueError, match="protocol must be one of insightface, facenet"):
        evaluate_embeddings(a, b, same, protocol="lfw")


def test_interpolation_corner_of_a_repeated_largest_far():
    """Old scipy's interp1d(kind='slinear') returns 0 at a target equal to a repeated largest FAR (its
    last knot interval is empty): the reference's value, which both protocols follow."""
    from recface_lib.protocol.verification import _interp_threshold

    far, thr = np.array([0, 0, .5, 1, 1]), np.array([0., 1, 2, 3, 4])
    assert _old_scipy_slinear(far, thr, 1.0) == 0.0
    assert _interp_threshold(far, thr, 1.0) == 0.0
    assert _interp_threshold(np.array([0, 0, .5, 1]), thr[:4], 1.0) == 3.0  # not repeated: its threshold
    assert _interp_threshold(far, thr, 0.75) == pytest.approx(2.5)
