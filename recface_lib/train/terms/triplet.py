"""Triplet loss on the batch's embeddings (#24, facenet's train_tripletloss and
facenet-pytorch-glint360k): one of ``train.triplet_losses`` chosen by ``triplet_loss``, with
``triplet_margin``, ``triplet_squared`` and ``triplet_soft``; weight ``triplet_weight``. Its triplets
come from the batch, so it is meant for P x K batches (``sampler: pk``); under a distribution
strategy each replica's part of the batch (whole identities: the sampler checks it) gives its own
triplets. While it is in use the margin head weighs ``head_weight`` (0 by default: triplet loss
alone), not 1. Logged: the active fraction, the valid triplets (anchors, pairs) per batch, the
mean anchor-positive and anchor-negative distances and the embedding spread (the mean distance of the batch's L2-normalised embeddings to their mean).

The collapse guard: hardest negatives early collapse a model to a point (the FaceNet paper) and
the loss then sits at the margin; a spread below ``collapse_spread`` for ``collapse_steps``
training steps in a row stops the run with one line naming the step and the newest checkpoint
(0 steps: off)."""
from __future__ import annotations

from . import Term, register

COLLAPSED = "recface: embeddings collapsed"


def draw_seed(run_seed: int, step):
    """The seed of a training step's random draws (``facenet``, ``margin_filter``): [the run's
    seed, step * 1024 + the replica's id]. The step is the optimizer's (checkpointed), so a resumed
    run draws what an uninterrupted one would; replicas never draw alike (glint360k#4)."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    replica = tf.cast(ctx.replica_id_in_sync_group if ctx is not None else 0, tf.int64)
    return tf.stack([tf.constant(int(run_seed), tf.int64), tf.cast(step, tf.int64) * 1024 + replica])


@register
class TripletTerm(Term):
    name = "triplet"
    weight_field = "triplet_weight"

    @classmethod
    def replaces_head(cls, cfg) -> bool:
        return float(cfg.triplet_weight) > 0

    def __init__(self, run):
        super().__init__(run)
        self.run = run  # its model's optimizer step seeds the losses that draw at random

    def build(self, backbone, replicas: int = 1) -> None:
        import keras

        from ..triplet_losses import triplet_loss

        c = self.cfg
        self.fn = triplet_loss(c.triplet_loss, margin=c.triplet_margin, squared=c.triplet_squared, soft=c.triplet_soft)
        self.active_frac = keras.metrics.Mean(name="triplet_active")
        self.valid = keras.metrics.Mean(name="triplet_valid")
        self.spread = keras.metrics.Mean(name="embedding_spread")
        self.d_ap = keras.metrics.Mean(name="triplet_d_ap")
        self.d_an = keras.metrics.Mean(name="triplet_d_an")
        # consecutive collapsed steps; the first replica's count is the run's
        self.collapsed = keras.Variable(0, dtype="int32", trainable=False, name="collapsed_steps",
                                        aggregation="only_first_replica")

    def loss(self, emb, labels, teacher, outputs, training):
        import tensorflow as tf

        value, figs = self.fn(emb, labels, seed=self.seed())
        e = tf.math.l2_normalize(emb, axis=1, epsilon=1e-12)
        spread = tf.reduce_mean(tf.norm(e - tf.reduce_mean(e, axis=0, keepdims=True), axis=1))
        c = self.cfg
        if training and c.collapse_steps > 0:
            n = tf.where(spread < c.collapse_spread, self.collapsed + 1, tf.zeros_like(self.collapsed))
            check = tf.debugging.Assert(n < c.collapse_steps, [COLLAPSED, spread])
            with tf.control_dependencies([check]):
                self.collapsed.assign(n)
        self.active_frac.update_state(figs["active"])
        self.valid.update_state(figs["valid"])
        self.spread.update_state(spread)
        self.d_ap.update_state(figs["d_ap"])
        self.d_an.update_state(figs["d_an"])
        return value

    def seed(self):
        return draw_seed(self.cfg.seed, self.run.model.optimizer.iterations)

    def metrics(self) -> list:
        return [self.active_frac, self.valid, self.spread, self.d_ap, self.d_an]

    def explain(self, error: str) -> str | None:
        """The collapse guard's one line (None for any other error)."""
        import re

        if COLLAPSED not in error:
            return None
        m = re.search(re.escape(COLLAPSED) + r"\D*?([0-9.eE+-]+)", error)
        c = self.cfg
        return (f"triplet: the embeddings collapsed to a point (spread {m.group(1) if m else '?'} below "
                f"collapse_spread {c.collapse_spread:g} for {c.collapse_steps} steps in a row; the loss sits at the "
                "margin and nothing is learned): lower the learning rate, or start with semi_hard or triplet_soft "
                "before batch_hard")

    def label(self) -> str:
        return f"+triplet({self.cfg.triplet_loss})"
