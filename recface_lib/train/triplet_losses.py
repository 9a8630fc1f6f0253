"""Triplet losses on a batch (#24, the FaceNet family part 2), each one registered class: distances
between the L2-normalised embeddings of a batch, a margin, and a rule choosing the triplets.

- ``batch_all``  every valid (anchor, positive, negative) of the batch; the mean over the active
  ones (loss > 0); the active fraction is logged (Hermans et al. 2017, "batch all").
- ``batch_hard`` per anchor its farthest positive and its closest negative; ``soft``: ln(1 + e^x)
  instead of the hinge (Hermans et al. 2017).
- ``semi_hard``  per (anchor, positive) pair the closest negative farther than the positive
  (FaceNet's semi-hard negative); where there is none the farthest negative, as TensorFlow
  Addons' ``triplet_semihard_loss`` falls back; the mean over every positive pair.

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


class TripletLoss:
    """``__call__(emb, labels) -> (loss, figures)``: figures are {"active": fraction of the
    triplets (or anchors, or pairs) with a positive loss, "valid": how many there were}. A loss
    gives its rule as ``select(d, pos, neg)`` on the batch's distances and label masks."""

    name: ClassVar[str]

    def __init__(self, margin: float = 0.2, squared: bool = False, soft: bool = False):
        self.margin, self.squared, self.soft = float(margin), bool(squared), bool(soft)

    def hinge(self, x):
        import tensorflow as tf

        return tf.math.softplus(x) if self.soft else tf.nn.relu(x + self.margin)

    def __call__(self, emb, labels):
        return self.select(pairwise_distances(emb, self.squared), *label_masks(labels))

    def select(self, d, pos, neg):
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


@register
class BatchAll(TripletLoss):
    name = "batch_all"

    def select(self, d, pos, neg):
        import tensorflow as tf

        valid = tf.cast(tf.logical_and(pos[:, :, None], neg[:, None, :]), d.dtype)  # [a, p, n]
        loss = self.hinge(d[:, :, None] - d[:, None, :]) * valid
        active = tf.cast(loss > 1e-16, d.dtype) * valid
        n_valid, n_active = tf.reduce_sum(valid), tf.reduce_sum(active)
        return _mean(tf.reduce_sum(loss), n_active), {"active": _mean(n_active, n_valid), "valid": n_valid}


@register
class BatchHard(TripletLoss):
    name = "batch_hard"

    def select(self, d, pos, neg):
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

    def select(self, d, pos, neg):
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


def triplet_loss(name: str, **kw) -> TripletLoss:
    from ..errors import ConfigError

    if name not in TRIPLET_LOSSES:
        raise ConfigError(f"triplet_loss: unknown {name!r}; valid: {', '.join(TRIPLET_LOSSES)}")
    return TRIPLET_LOSSES[name](**kw)


__all__ = ["TRIPLET_LOSSES", "TripletLoss", "label_masks", "pairwise_distances", "triplet_loss"]
