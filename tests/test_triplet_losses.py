"""Triplet losses (#24) against brute-force loops over every (anchor, positive, negative) of the
batch, value and gradient (central differences), on random batches with ties, a class with a single
image, a batch of one class, K = 2, squared and not; a batch without a valid triplet gives 0. The
losses that draw at random (``facenet``, ``margin_filter``) are compared given the same draws:
``facenet`` with a loop-by-loop transcription of facenet's ``select_triplets``
(src/train_tripletloss.py, the VGG Face selection it uses), ``np.random.randint(n)`` read as
``int(u * n)``."""
import itertools

import numpy as np
import pytest

from recface_lib.errors import ConfigError
from recface_lib.train.triplet_losses import TRIPLET_LOSSES, triplet_loss


def _dist(e, squared):
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    B = len(e)
    d = np.zeros((B, B))
    for i, j in itertools.product(range(B), range(B)):
        if i != j:
            s = float(np.sum((e[i] - e[j]) ** 2))
            d[i, j] = s if squared else np.sqrt(s)
    return d


def _hinge(x, margin, soft):
    return np.log1p(np.exp(x)) if soft else max(x + margin, 0.0)


def select_triplets(d, nrof_images_per_class, people_per_batch, alpha, u):
    """facenet's select_triplets, loop by loop, on the distance matrix ``d`` (facenet's squared
    distances, or the loss's), with the draw u[a, p] in place of np.random.randint."""
    emb_start_idx = 0
    triplets = []
    for i in range(people_per_batch):
        nrof_images = int(nrof_images_per_class[i])
        for j in range(1, nrof_images):
            a_idx = emb_start_idx + j - 1
            neg_dists_sqr = d[a_idx].copy()
            for pair in range(j, nrof_images):
                p_idx = emb_start_idx + pair
                pos_dist_sqr = d[a_idx, p_idx]
                neg_dists_sqr[emb_start_idx:emb_start_idx + nrof_images] = np.nan
                with np.errstate(invalid="ignore"):
                    all_neg = np.where(neg_dists_sqr - pos_dist_sqr < alpha)[0]
                nrof_random_negs = all_neg.shape[0]
                if nrof_random_negs > 0:
                    rnd_idx = int(u[a_idx, p_idx] * nrof_random_negs)
                    triplets.append((a_idx, p_idx, all_neg[rnd_idx]))
        emb_start_idx += nrof_images
    return triplets


def brute(name, e, y, margin, squared, soft, u=None):
    """The loss by its definition, one loop per triplet / anchor / pair."""
    d = _dist(e, squared)
    B = len(y)
    pos = [(a, p) for a in range(B) for p in range(B) if a != p and y[a] == y[p]]
    negs = {a: [n for n in range(B) if y[n] != y[a]] for a in range(B)}
    if name == "batch_all":
        vals = [_hinge(d[a, p] - d[a, n], margin, soft) for a, p in pos for n in negs[a]]
        act = [v for v in vals if v > 1e-16]
        return sum(act) / max(len(act), 1)
    if name == "batch_hard":
        vals = []
        for a in range(B):
            ps = [p for p in range(B) if p != a and y[p] == y[a]]
            if ps and negs[a]:
                vals.append(_hinge(max(d[a, p] for p in ps) - min(d[a, n] for n in negs[a]), margin, soft))
        return sum(vals) / max(len(vals), 1)
    if name == "semi_hard":
        vals = []
        for a, p in pos:
            if not negs[a]:
                continue
            farther = [d[a, n] for n in negs[a] if d[a, n] > d[a, p]]
            dn = min(farther) if farther else max(d[a, n] for n in negs[a])
            vals.append(_hinge(d[a, p] - dn, margin, soft))
        return sum(vals) / max(len(vals), 1)
    if name == "facenet":
        people = [int(np.sum(y == c)) for c in dict.fromkeys(y.tolist())]
        assert sum(people) == B and all(len(set(y[s:s + n])) == 1 for s, n in zip(np.cumsum([0] + people), people))
        trips = select_triplets(d, people, len(people), margin, u)
        return sum(_hinge(d[a, p] - d[a, n], margin, soft) for a, p, n in trips) / max(len(trips), 1)
    if name.startswith("margin_filter"):
        vals = []
        for a in range(B):
            ps = [p for p in range(B) if p != a and y[p] == y[a]]
            if not ps or not negs[a]:
                continue
            p, n = ps[int(u[0, a] * len(ps))], negs[a][int(u[1, a] * len(negs[a]))]
            if d[a, n] - d[a, p] < margin and (name == "margin_filter" or d[a, p] < d[a, n]):
                vals.append(_hinge(d[a, p] - d[a, n], margin, soft))
        return sum(vals) / max(len(vals), 1)
    raise AssertionError(name)


def _batches():
    rng = np.random.default_rng(5)
    out = []
    for k, (y, dim) in enumerate([([0, 0, 1, 1, 2, 2, 3], 4),               # K = 2 and a single-image class
                                  ([0, 0, 0, 1, 1, 1, 2, 2, 2, 2], 8),      # P x K-like
                                  ([3, 3, 3, 3], 5),                        # one class: no negative
                                  ([0, 1, 2, 3, 4], 3),                     # no positive
                                  ([0, 0, 1, 1, 1, 2], 2),                  # 2-d: many near-ties
                                  ([0, 0, 0, 1, 1, 1, 2, 2, 2], 6)]):       # clustered: some pairs violate
        e = rng.normal(size=(len(y), dim))
        if k == 5:  # classes 0 and 1 close together, 2 apart: a trained-like batch
            centres = np.array([[3.0, 0, 0, 0, 0, 0], [3.0, 0.6, 0, 0, 0, 0], [0, 0, 3.0, 0, 0, 0]])
            e = centres[y] + 0.25 * e
        if k == 1:
            e[3] = e[0] * 2.0  # a tie after normalisation: d = 0 between classes 0 and 1
        out.append((np.array(y), e))
    return out


@pytest.mark.parametrize("name", sorted(TRIPLET_LOSSES))
@pytest.mark.parametrize("squared,soft,margin", [(False, False, 0.2), (True, False, 0.5), (False, True, 0.0)])
def test_loss_equals_brute_force_value_and_gradient(name, squared, soft, margin):
    import tensorflow as tf

    loss_fn = triplet_loss(name, margin=margin, squared=squared, soft=soft)
    for b, (y, e) in enumerate(_batches()):
        x = tf.Variable(e, dtype=tf.float64)
        seed = (11, b)
        with tf.GradientTape() as tape:
            value, figs = loss_fn(x, tf.constant(y), seed=seed)
        grad = tape.gradient(value, x).numpy()
        u = loss_fn.draws(len(y), seed, tf.float64)
        u = None if u is None else u.numpy()
        ref = brute(name, e, y, margin, squared, soft, u)
        assert float(value) == pytest.approx(ref, abs=1e-9), (name, y.tolist())
        assert np.all(np.isfinite(grad))
        h = 1e-6
        num = np.zeros_like(e)
        for i, j in itertools.product(*map(range, e.shape)):
            up, dn = e.copy(), e.copy()
            up[i, j] += h
            dn[i, j] -= h
            num[i, j] = (brute(name, up, y, margin, squared, soft, u) - brute(name, dn, y, margin, squared, soft, u)) / (2 * h)
        # away from a tie or a hinge's corner the two agree; where the sample sits on one (the
        # duplicated embedding), central differences average two one-sided slopes
        tied = np.zeros(len(y), bool)
        if len(y) == 10:
            tied[[0, 3]] = True
        assert np.abs(grad[~tied] - num[~tied]).max() < 1e-5, (name, y.tolist())
        if len(set(y.tolist())) == 1 or len(set(y.tolist())) == len(y):  # no valid triplet
            assert float(value) == 0.0 and not grad.any() and float(figs["valid"]) == 0


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"^triplet_loss: unknown 'hardest'; valid: batch_all, batch_hard, semi_hard, facenet, margin_filter, margin_filter_semi_hard$"):
        triplet_loss("hardest")
