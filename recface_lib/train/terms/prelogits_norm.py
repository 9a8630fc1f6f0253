"""facenet's prelogits norm loss: the mean over the batch of the p-norm of |prelogits| + 1e-4
(``tf.norm(tf.abs(prelogits) + eps, ord=p, axis=1)``, p ``prelogits_norm_p``, 1 by default), which
keeps the prelogits from growing to shrink the softmax loss. Weight ``prelogits_norm_loss_factor``
(facenet's 5e-4)."""
from __future__ import annotations

from . import Term, register

EPS = 1e-4


@register
class PrelogitsNormTerm(Term):
    name = "prelogits_norm"
    weight_field = "prelogits_norm_loss_factor"

    def build(self, backbone, replicas: int = 1) -> None:
        import keras

        self.p = float(self.cfg.prelogits_norm_p)
        self.tracker = keras.metrics.Mean(name="prelogits_norm")

    def loss(self, emb, labels, teacher, outputs, training):
        from keras import ops

        norm = ops.power(ops.sum(ops.power(ops.abs(emb) + EPS, self.p), axis=1), 1.0 / self.p)
        value = ops.mean(norm)
        self.tracker.update_state(value)
        return value

    def metrics(self) -> list:
        return [self.tracker]
