"""Distillation: the student's embedding matches a teacher's (``recface teach``), on
L2-normalised vectors: ``cosine`` (1 - cos) or ``mse`` (squared distance, = 2 - 2 cos on the
sphere). Where the student's embedding size differs from the teacher's, a learned linear
projection (no bias) maps the student's embedding onto the teacher's space for the loss only: the
backbone, and so every export, keeps the student's own embedding. Logged: the mean cosine to the
teacher. Weight ``distill_weight``; needs the teacher's targets, not labels."""
from __future__ import annotations

from . import Term, register


@register
class DistillTerm(Term):
    name = "distill"
    weight_field = "distill_weight"
    needs_teacher = True

    @classmethod
    def active(cls, cfg, stages) -> bool:
        return bool(cfg.teacher)

    @classmethod
    def replaces_head(cls, cfg) -> bool:
        return bool(cfg.teacher)

    def build(self, backbone, replicas: int = 1) -> None:
        import keras

        dim = int(self.meta["_teacher"]["dim"])
        d = int(backbone.output_shape[-1])
        self.projection = (keras.layers.Dense(dim, use_bias=False, dtype="float32", name="projection")
                           if d != dim else None)
        if self.projection is not None:
            self.projection.build((None, d))
        self.cosine = keras.metrics.Mean(name="cosine")

    def layers(self) -> list:
        return [self.projection] if self.projection is not None else []

    def loss(self, emb, labels, teacher, outputs, training):
        from keras import ops

        s = self.projection(emb) if self.projection is not None else emb
        t = ops.cast(teacher, "float32")
        s = s / ops.maximum(ops.norm(s, axis=-1, keepdims=True), 1e-12)
        t = t / ops.maximum(ops.norm(t, axis=-1, keepdims=True), 1e-12)
        cos = ops.sum(s * t, axis=-1)
        self.cosine.update_state(cos)
        if self.cfg.distill_loss == "cosine":
            return ops.mean(1.0 - cos)
        return ops.mean(ops.sum(ops.square(s - t), axis=-1))

    def metrics(self) -> list:
        return [self.cosine]

    def label(self) -> str:
        return ""  # the description names the teacher
