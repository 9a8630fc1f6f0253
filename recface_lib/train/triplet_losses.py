"""Triplet losses on a batch (#24, the FaceNet family part 2), each one registered class: distances
between the L2-normalised embeddings of a batch, a margin, and a rule choosing the triplets.

- ``batch_all``  every valid (anchor, positive, negative) of the batch; the mean over the active
  ones (loss > 0); the active fraction is logged (Hermans et al. 2017, "batch all").
- ``batch_hard`` per anchor its farthest positive and its closest negative; ``soft``: ln(1 + e^x)
  instead of the hinge (Hermans et al. 2017).
- ``semi_hard``  per (anchor, positive) pair the closest negative farther than the positive
  (FaceNet's semi-hard negative); where there is none the farthest negative, as TensorFlow
  Addons' ``triplet_semihard_loss`` falls back; the mean over every positive pair.
- ``facenet``    facenet's ``select_triplets`` (train_tripletloss.py) on the batch: every (anchor,
  positive) pair of a class, anchor before positive in batch order, extended by one negative drawn
  at random among those with d_an - d_ap < margin (the VGG Face selection facenet uses); a pair
  with no such negative gives no triplet; the mean over the triplets made.
- ``margin_filter``  facenet-pytorch-glint360k's: per anchor one random positive and one random
  negative; the triplets with d_an - d_ap < margin are kept, the mean over the kept;
  ``margin_filter_semi_hard`` keeps only those with d_ap < d_an too (its ``use_semihard_negatives``).

A loss that draws at random declares the shape of its draws (``draw_shape``): uniforms in [0, 1)
from ``tf.random.stateless_uniform`` with the step's seed (the trainer's: the run's seed, the
optimizer's step and the replica), so a resumed run draws what an uninterrupted one would, and no
two replicas draw alike (glint360k#4). A draw u picks the floor(u * count)-th candidate, where
facenet calls ``np.random.randint(count)``.

``squared``: squared euclidean distances (facenet's) or their square roots (Hermans', TFA's
default). A batch without a valid triplet gives 0 (with a zero gradient), never NaN: each value
counts what it averages over and divides by at least one. Tested against brute-force loops over
every triplet, value and gradient (``tests/test_triplet_losses.py``)."""
from __future__ import annotations

from typing import ClassVar

TRIPLET_LOSSES: dict[str, type["TripletLoss"]] = {}


def register(cls):
    TRIPLET_LOSSES[cls.name] = cls
    return cls


def pairwise_distances(emb, squared: bool):
    """(B, B) euclidean distances between the rows of ``emb`` after L2 normalisation; the square
    root has a zero gradient where a distance is 0 (the diagonal, duplicates), not NaN."""
    import tensorflow as tf

    e = tf.math.l2_normalize(emb, axis=1, epsilon=1e-12)
    sq = tf.reduce_sum(e * e, axis=1)
    d = tf.maximum(sq[:, None] - 2.0 * tf.matmul(e, e, transpose_b=True) + sq[None, :], 0.0)
    d = tf.linalg.set_diag(d, tf.zeros_like(sq))
    if squared:
        return d
    zero = tf.cast(tf.equal(d, 0.0), d.dtype)
    return tf.sqrt(d + zero * 1e-16) * (1.0 - zero)


def label_masks(labels):
    """(same identity, different identity) as float masks; ``same`` excludes the diagonal."""
    import tensorflow as tf

    y = tf.reshape(labels, (-1,))
    eq = tf.equal(y[:, None], y[None, :])
    eye = tf.eye(tf.shape(y)[0], dtype=tf.bool)
    return tf.logical_and(eq, tf.logical_not(eye)), tf.logical_not(eq)


def pick_nth(mask, u):
    """One-hot of the floor(u * count)-th True of ``mask`` along its last axis (all False where
    there is none), and the count: ``candidates[np.random.randint(count)]`` with the draw given."""
    import tensorflow as tf

    m = tf.cast(mask, tf.int32)
    count = tf.reduce_sum(m, axis=-1)
    k = tf.cast(tf.floor(u * tf.cast(count, u.dtype)), tf.int32)
    k = tf.minimum(k, tf.maximum(count - 1, 0))
    return tf.logical_and(mask, tf.equal(tf.cumsum(m, axis=-1), k[..., None] + 1)), count


class TripletLoss:
    """``__call__(emb, labels, seed) -> (loss, figures)``: figures are {"active": fraction of the
    triplets (or anchors, or pairs) with a positive loss, "valid": how many there were, "d_ap" and
    "d_an": the mean anchor-positive and anchor-negative distance of the batch}. A loss gives its
    rule as ``select(d, pos, neg, u)`` on the batch's distances, label masks and random draws
    (None for a loss that draws nothing)."""

    name: ClassVar[str]

    def __init__(self, margin: float = 0.2, squared: bool = False, soft: bool = False):
        self.margin, self.squared, self.soft = float(margin), bool(squared), bool(soft)

    def hinge(self, x):
        import tensorflow as tf

        return tf.math.softplus(x) if self.soft else tf.nn.relu(x + self.margin)

    def draw_shape(self, batch) -> tuple | None:
        """The shape of the uniforms this loss draws for a batch of ``batch`` (None: none)."""
        return None

    def draws(self, batch, seed, dtype):
        import tensorflow as tf

        shape = self.draw_shape(batch)
        return None if shape is None else tf.random.stateless_uniform(shape, seed, dtype=dtype)

    def __call__(self, emb, labels, seed=(0, 0)):
        import tensorflow as tf

        d = pairwise_distances(emb, self.squared)
        pos, neg = label_masks(labels)
        value, figs = self.select(d, pos, neg, self.draws(tf.shape(d)[0], seed, d.dtype))
        for key, mask in (("d_ap", pos), ("d_an", neg)):
            m = tf.cast(mask, d.dtype)
            figs[key] = _mean(tf.reduce_sum(tf.stop_gradient(d) * m), tf.reduce_sum(m))
        return value, figs

    def select(self, d, pos, neg, u):
        raise NotImplementedError


def _mean(total, count):
    import tensorflow as tf

    return total / tf.maximum(count, 1.0)


def _mean_over_valid(loss, valid):
    """The mean of ``loss`` over the valid entries (anchors, pairs), with the active fraction."""
    import tensorflow as tf

    loss = loss * valid
    n_valid = tf.reduce_sum(valid)
    active = tf.reduce_sum(tf.cast(loss > 1e-16, loss.dtype) * valid)
    return _mean(tf.reduce_sum(loss), n_valid), {"active": _mean(active, n_valid), "valid": n_valid}


def _mean_over_kept(loss, kept, valid):
    """The mean of ``loss`` over the triplets a random rule kept (``kept``), the active fraction
    being the kept share of the ``valid`` candidates (pairs, anchors)."""
    import tensorflow as tf

    keptf = tf.cast(kept, loss.dtype)
    n_valid, n_kept = tf.reduce_sum(tf.cast(valid, loss.dtype)), tf.reduce_sum(keptf)
    return _mean(tf.reduce_sum(loss * keptf), n_kept), {"active": _mean(n_kept, n_valid), "valid": n_valid}


@register
class BatchAll(TripletLoss):
    name = "batch_all"

    def select(self, d, pos, neg, u):
        import tensorflow as tf

        valid = tf.cast(tf.logical_and(pos[:, :, None], neg[:, None, :]), d.dtype)  # [a, p, n]
        loss = self.hinge(d[:, :, None] - d[:, None, :]) * valid
        active = tf.cast(loss > 1e-16, d.dtype) * valid
        n_valid, n_active = tf.reduce_sum(valid), tf.reduce_sum(active)
        return _mean(tf.reduce_sum(loss), n_active), {"active": _mean(n_active, n_valid), "valid": n_valid}


@register
class BatchHard(TripletLoss):
    name = "batch_hard"

    def select(self, d, pos, neg, u):
        import tensorflow as tf

        posf, negf = tf.cast(pos, d.dtype), tf.cast(neg, d.dtype)
        hardest_pos = tf.reduce_max(d * posf, axis=1)
        big = tf.reduce_max(d) + 1.0
        hardest_neg = tf.reduce_min(d + big * (1.0 - negf), axis=1)
        valid = tf.cast(tf.logical_and(tf.reduce_any(pos, 1), tf.reduce_any(neg, 1)), d.dtype)
        return _mean_over_valid(self.hinge(hardest_pos - hardest_neg), valid)


@register
class SemiHard(TripletLoss):
    name = "semi_hard"

    def select(self, d, pos, neg, u):
        import tensorflow as tf

        negf = tf.cast(neg, d.dtype)
        d_ap = d[:, :, None]  # [a, p, 1]
        d_an = d[:, None, :]  # [a, 1, n]
        farther = tf.logical_and(neg[:, None, :], d_an > d_ap)  # negatives beyond the positive
        big = tf.reduce_max(d) + 1.0
        closest_farther = tf.reduce_min(tf.where(farther, d_an, big), axis=2)
        farthest = tf.reduce_max(d * negf, axis=1)[:, None] * tf.ones_like(d)  # the fallback
        chosen = tf.where(tf.reduce_any(farther, axis=2), closest_farther, farthest)
        valid = tf.cast(tf.logical_and(pos, tf.reduce_any(neg, 1)[:, None]), d.dtype)
        return _mean_over_valid(self.hinge(d - chosen), valid)


@register
class FaceNetSelect(TripletLoss):
    name = "facenet"

    def draw_shape(self, batch):
        return (batch, batch)  # one per (anchor, positive) pair

    def select(self, d, pos, neg, u):
        import tensorflow as tf

        pairs = tf.logical_and(pos, tf.linalg.band_part(tf.ones_like(d), 0, -1) > 0)  # a < p: each pair once
        d_ap, d_an = d[:, :, None], d[:, None, :]
        violating = tf.logical_and(neg[:, None, :], d_an - d_ap < self.margin)  # [a, p, n]
        pick, count = pick_nth(tf.logical_and(pairs[:, :, None], violating), u)
        chosen = tf.reduce_sum(tf.where(pick, d_an * tf.ones_like(d_ap), tf.zeros_like(d_an)), axis=2)
        valid = tf.logical_and(pairs, tf.reduce_any(neg, axis=1)[:, None])  # a pair whose anchor has a negative
        return _mean_over_kept(self.hinge(d - chosen), count > 0, valid)


@register
class MarginFilter(TripletLoss):
    name = "margin_filter"
    semi_hard: ClassVar[bool] = False

    def draw_shape(self, batch):
        return (2, batch)  # per anchor: its positive, its negative

    def select(self, d, pos, neg, u):
        import tensorflow as tf

        zero = tf.zeros_like(d)
        p_pick, p_count = pick_nth(pos, u[0])
        n_pick, n_count = pick_nth(neg, u[1])
        d_ap = tf.reduce_sum(tf.where(p_pick, d, zero), axis=1)
        d_an = tf.reduce_sum(tf.where(n_pick, d, zero), axis=1)
        valid = tf.logical_and(p_count > 0, n_count > 0)
        keep = tf.logical_and(valid, d_an - d_ap < self.margin)
        if self.semi_hard:
            keep = tf.logical_and(keep, d_ap < d_an)
        return _mean_over_kept(self.hinge(d_ap - d_an), keep, valid)


@register
class MarginFilterSemiHard(MarginFilter):
    name = "margin_filter_semi_hard"
    semi_hard = True


def triplet_loss(name: str, **kw) -> TripletLoss:
    from ..errors import ConfigError

    if name not in TRIPLET_LOSSES:
        raise ConfigError(f"triplet_loss: unknown {name!r}; valid: {', '.join(TRIPLET_LOSSES)}")
    return TRIPLET_LOSSES[name](**kw)


__all__ = ["TRIPLET_LOSSES", "TripletLoss", "label_masks", "pairwise_distances", "pick_nth", "triplet_loss"]
