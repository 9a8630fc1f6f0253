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


def _reference_insightface(dist, same, nfolds=10):
    """A direct, loop-based transcription of insightface's calculate_roc/calculate_val (KFold
    unshuffled, threshold grid 0:4:0.01, VAL via scipy interp1d) used as an independent check."""
    from scipy import interpolate
    from sklearn.model_selection import KFold

    thr = np.arange(0, 4, 0.01)
    acc = []
    for tr, te in KFold(n_splits=nfolds, shuffle=False).split(np.arange(len(dist))):
        a_tr = [np.mean((dist[tr] < t) == same[tr]) for t in thr]
        best = int(np.argmax(a_tr))
        acc.append(np.mean((dist[te] < thr[best]) == same[te]))
    vals = []
    thr_v = np.arange(0, 4, 0.001)
    for tr, te in KFold(n_splits=nfolds, shuffle=False).split(np.arange(len(dist))):
        far_tr = np.array([np.sum((dist[tr] < t) & ~same[tr]) / np.sum(~same[tr]) for t in thr_v])
        if far_tr.max() >= 1e-3:
            # current scipy rejects the duplicate FAR values that old scipy accepted. Keep, for each
            # FAR, its largest threshold (keeping the first, t=0 for FAR=0, would put the FAR=1e-3
            # threshold near 0 and report a TAR of a few percent for any model).
            x, last = np.unique(far_tr[::-1], return_index=True)
            t = float(interpolate.interp1d(x, thr_v[::-1][last], kind="slinear")(1e-3))
        else:
            t = 0.0
        vals.append(np.sum((dist[te] < t) & same[te]) / np.sum(same[te]))
    return np.mean(acc), np.std(acc), np.mean(vals)


def test_metric_matches_loop_reference():
    rng = np.random.default_rng(7)
    n = 1000
    same = np.tile(np.r_[np.ones(50), np.zeros(50)], 10).astype(bool)
    a = rng.normal(size=(n, 64))
    b = np.where(same[:, None], a + rng.normal(size=(n, 64)) * 1.3, rng.normal(size=(n, 64)))
    r = evaluate_embeddings(a, b, same, metric="euclidean")
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    acc, std, val = _reference_insightface(((an - bn) ** 2).sum(1), same)
    assert r.fold_scheme == "insightface"
    assert r.accuracy == pytest.approx(acc, abs=1e-12) and r.accuracy_std == pytest.approx(std, abs=1e-12)
    assert r.val_far["1e-03"]["tar"] == pytest.approx(val, abs=1e-9)
    rc = evaluate_embeddings(a, b, same, metric="cosine")
    assert rc.accuracy == r.accuracy and rc.threshold == pytest.approx(1 - r.threshold / 2)


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
