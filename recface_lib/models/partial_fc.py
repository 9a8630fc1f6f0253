"""Partial FC (An et al. 2022, insightface's arcface_torch): class-centre sampling for very many
identities. Each training step scores the batch's own classes plus a random sample of the others,
``num_sample = ceil(sample_rate * classes)`` centres in all, instead of every centre.

``PartialFC(head, sample_rate)`` wraps a margin head (its centres, its margin rule): it outputs
``[target logit | logits of the sampled centres, the sample's own class masked out]`` (all of
the batch's classes are always sampled, even when they outnumber ``num_sample``) so the
cross-entropy with label 0 is exactly the head's loss restricted to the sampled classes. At
``sample_rate`` 1.0 every centre is "sampled", which gives exactly the full head's loss and
gradients (tests/test_partial_fc.py). Sampling is stateless, seeded by (seed, the layer's own step
counter): the counter is a weight of the layer, so a checkpoint carries the sampler's state and a
resumed run draws the same samples. The centres are rows (classes x dim), so the gradient is
row-sparse (``tf.gather``) and recface's SGD updates, decays and moves the momentum of the sampled
rows only (``train.optim``), as arcface_torch does: ``benchmarks/partial_fc.py`` measures it."""
from __future__ import annotations

import math

import keras
from keras import ops

from .heads import HEADS, NormDense

# heads whose logit is the shared NormDense rule: one target logit from the target cosine
SUPPORTED = tuple(n for n, c in HEADS.items() if c.call is NormDense.call and c.current_scale is NormDense.current_scale
                  and c.cosine is NormDense.cosine)


@keras.saving.register_keras_serializable(package="recface")
class PartialFC(keras.layers.Layer):
    def __init__(self, head, sample_rate: float = 0.1, seed: int = 0, **kw):
        kw.setdefault("dtype", "float32")
        super().__init__(**kw)
        name = type(head).__name__
        if name not in SUPPORTED:
            from ..errors import ConfigError
            raise ConfigError(f"sample_rate: Partial FC works with the heads {', '.join(SUPPORTED)}; {name} computes "
                              "its logits its own way (re-weighted negatives, a per-batch scale, sub-centres or an extra "
                              "loss): use sample_rate 1.0")
        if not 0.0 < float(sample_rate) <= 1.0:
            from ..errors import ConfigError
            raise ConfigError(f"sample_rate: must be in (0, 1], got {sample_rate}")
        self.head, self.sample_rate, self.seed = head, float(sample_rate), int(seed)
        self.num_classes = head.num_classes
        self.num_sample = max(1, min(self.num_classes, math.ceil(self.sample_rate * self.num_classes)))

    def build(self, input_shape):
        if not self.head.built:
            self.head.build(input_shape)
        self.step = self.add_weight(name="sampler_step", shape=(), dtype="int64", initializer="zeros", trainable=False)

    def sample(self, labels):
        """Indices of this step's centres: every label of the batch, then random others."""
        import tensorflow as tf

        C, S = self.num_classes, self.num_sample
        if S >= C:
            return ops.arange(C, dtype="int32")
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.step, tf.int64)])
        score = tf.random.stateless_uniform([C], seed)
        pos = tf.scatter_nd(ops.reshape(labels, (-1, 1)), tf.ones_like(labels, tf.float32), [C])
        score = tf.where(pos > 0, 2.0 + score, score)  # positives first
        k = tf.maximum(S, tf.cast(tf.reduce_sum(tf.cast(pos > 0, tf.int32)), tf.int32))  # never fewer than them
        return tf.math.top_k(score, k, sorted=False).indices

    def call(self, inputs, training=None):
        import tensorflow as tf

        emb, labels = inputs
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        idx = self.sample(labels)
        if training:
            self.step.assign_add(1)
        h = self.head
        e = ops.cast(emb, "float32")
        e = e / ops.maximum(ops.norm(e, axis=1, keepdims=True), 1e-12)
        w = tf.gather(h.w, idx)  # rows: its gradient is row-sparse (tf.IndexedSlices)
        w = w / ops.maximum(ops.norm(w, axis=1, keepdims=True), 1e-12)
        cos = ops.clip(ops.matmul(e, ops.transpose(w)), -1.0, 1.0)  # (batch, num_sample)
        mine = ops.cast(ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(idx, 0)), "float32")
        target_cos = ops.sum(mine * cos, axis=1, keepdims=True)
        target = h.target_logit(target_cos, emb, training)
        s = h.scale
        return ops.concatenate([s * target, s * cos - 1e4 * mine], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], None)  # num_sample + 1, more when a batch has more classes

    def get_config(self):
        return {**super().get_config(), "head": keras.saving.serialize_keras_object(self.head),
                "sample_rate": self.sample_rate, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)


__all__ = ["PartialFC", "SUPPORTED"]
