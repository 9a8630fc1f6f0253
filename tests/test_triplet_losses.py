"""Triplet losses (#24) against brute-force loops over every (anchor, positive, negative) of the
batch, value and gradient (central differences), on random batches with ties, a class with a single
image, a batch of one class, K = 2, squared and not; a batch without a valid triplet gives 0."""
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


def brute(name, e, y, margin, squared, soft):
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
    raise AssertionError(name)


def _batches():
    rng = np.random.default_rng(5)
    out = []
    for k, (y, dim) in enumerate([([0, 0, 1, 1, 2, 2, 3], 4),               # K = 2 and a single-image class
                                  ([0, 0, 0, 1, 1, 1, 2, 2, 2, 2], 8),      # P x K-like
                                  ([3, 3, 3, 3], 5),                        # one class: no negative
                                  ([0, 1, 2, 3, 4], 3),                     # no positive
                                  ([0, 0, 1, 1, 1, 2], 2)]):                # 2-d: many near-ties
        e = rng.normal(size=(len(y), dim))
        if k == 1:
            e[3] = e[0] * 2.0  # a tie after normalisation: d = 0 between classes 0 and 1
        out.append((np.array(y), e))
    return out


@pytest.mark.parametrize("name", sorted(TRIPLET_LOSSES))
@pytest.mark.parametrize("squared,soft,margin", [(False, False, 0.2), (True, False, 0.5), (False, True, 0.0)])
def test_loss_equals_brute_force_value_and_gradient(name, squared, soft, margin):
    import tensorflow as tf

    loss_fn = triplet_loss(name, margin=margin, squared=squared, soft=soft)
    for y, e in _batches():
        x = tf.Variable(e, dtype=tf.float64)
        with tf.GradientTape() as tape:
            value, figs = loss_fn(x, tf.constant(y))
        grad = tape.gradient(value, x).numpy()
        ref = brute(name, e, y, margin, squared, soft)
        assert float(value) == pytest.approx(ref, abs=1e-9), (name, y.tolist())
        assert np.all(np.isfinite(grad))
        h = 1e-6
        num = np.zeros_like(e)
        for i, j in itertools.product(*map(range, e.shape)):
            up, dn = e.copy(), e.copy()
            up[i, j] += h
            dn[i, j] -= h
            num[i, j] = (brute(name, up, y, margin, squared, soft) - brute(name, dn, y, margin, squared, soft)) / (2 * h)
        # away from a tie or a hinge's corner the two agree; where the sample sits on one (the
        # duplicated embedding), central differences average two one-sided slopes
        tied = np.zeros(len(y), bool)
        if len(y) == 10:
            tied[[0, 3]] = True
        assert np.abs(grad[~tied] - num[~tied]).max() < 1e-5, (name, y.tolist())
        if len(set(y.tolist())) == 1 or len(set(y.tolist())) == len(y):  # no valid triplet
            assert float(value) == 0.0 and not grad.any() and float(figs["valid"]) == 0


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"^triplet_loss: unknown 'hardest'; valid: batch_all, batch_hard, semi_hard$"):
        triplet_loss("hardest")
