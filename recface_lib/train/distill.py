"""Distillation: the student's training model. (image, label, teacher target) -> the student's
embedding (and the margin head's logits when a stage gives the head weight); the loss is

    distill_weight * embedding matching + head_weight * cross-entropy of the margin head

where embedding matching compares L2-normalised vectors: ``cosine`` (1 - cos) or ``mse`` (squared
distance, = 2 - 2 cos on the sphere). When the student's embedding size differs from the
teacher's, a learned linear projection (no bias) maps the student's embedding onto the teacher's
space for the loss only: the backbone, and so every export, keeps the student's own embedding.
The loss weights are variables set per plan stage by the trainer."""
from __future__ import annotations

DISTILL_LOSSES = ("cosine", "mse")


def build_distill_model(backbone, head, teacher_dim: int, loss: str = "cosine"):
    import keras
    from keras import ops

    class DistillModel(keras.Model):
        def __init__(self):
            super().__init__(name="distill_model")
            self.backbone, self.head, self.loss_kind = backbone, head, loss
            d = int(backbone.output_shape[-1])
            self.projection = (keras.layers.Dense(teacher_dim, use_bias=False, dtype="float32", name="projection")
                               if d != teacher_dim else None)
            self.distill_weight = keras.Variable(1.0, trainable=False, name="distill_weight")
            self.head_weight = keras.Variable(0.0, trainable=False, name="head_weight")
            self.cosine_tracker = keras.metrics.Mean(name="cosine")
            self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy") if head is not None else None

        def call(self, inputs, training=False):
            x, y = inputs[0], inputs[1]
            emb = self.backbone(x, training=training)
            out = {"embedding": emb}
            if self.head is not None:
                out["logits"] = self.head([emb, y], training=training)
            return out

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            labels, target = x[1], ops.cast(x[2], "float32")
            s = ops.cast(y_pred["embedding"], "float32")
            if self.projection is not None:
                s = self.projection(s)
            s = s / ops.maximum(ops.norm(s, axis=-1, keepdims=True), 1e-12)
            t = target / ops.maximum(ops.norm(target, axis=-1, keepdims=True), 1e-12)
            cos = ops.sum(s * t, axis=-1)
            match = ops.mean(1.0 - cos) if self.loss_kind == "cosine" else ops.mean(ops.sum(ops.square(s - t), axis=-1))
            self.cosine_tracker.update_state(cos)
            total = self.distill_weight * match
            if self.head is not None:
                logits = ops.cast(y_pred["logits"], "float32")
                ce = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                total = total + self.head_weight * ops.mean(ce)
                self.accuracy_tracker.update_state(labels, logits)
            for extra in self.losses:
                total = total + ops.cast(extra, "float32")
            return total

        @property
        def metrics(self):
            trackers = [self.cosine_tracker] + ([self.accuracy_tracker] if self.accuracy_tracker is not None else [])
            return [*super().metrics[:1], *trackers]

    model = DistillModel()
    size = backbone.input_shape[1:]
    x = ops.zeros((2, *size))
    model((x, ops.zeros((2,), "int32"), ops.zeros((2, teacher_dim))))
    if model.projection is not None:
        model.projection.build((None, int(backbone.output_shape[-1])))
    return model


def check_distillation(cfg, meta: dict, stages) -> None:
    """The rules distillation needs: unlabelled data trains only by distillation and then gives the
    head no weight; a head weight needs a labelled dataset."""
    from ..errors import ConfigError

    labelled = meta.get("labelled", True)
    weights = [cfg.head_weight if st.head_weight is None else st.head_weight for st in stages]
    if not cfg.teacher:
        if not labelled:
            raise ConfigError(f"{cfg.dataset}: unlabelled data (no identities) trains only by distillation: "
                              "give teacher (a `recface teach` output)")
        if any(st.head_weight is not None or st.distill_weight is not None for st in stages):
            raise ConfigError("plan: head_weight / distill_weight are distillation settings: give teacher too")
        return
    if not labelled and any(w > 0 for w in weights):
        raise ConfigError(f"{cfg.dataset}: unlabelled data has no identities for the margin head: head_weight must be 0")


__all__ = ["DISTILL_LOSSES", "build_distill_model", "check_distillation"]
