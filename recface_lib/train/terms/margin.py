"""The margin head's cross-entropy (ArcFace and the rest, Softmax, Partial FC): the head gives
logits for (embedding, label); the loss is their mean softmax cross-entropy, the logged metric the
training accuracy. With Partial FC the logits are [target | sampled centres], the target at column
0. Weight 1 (the head is the loss), or ``head_weight`` (the run's / a stage's) while a term that
can carry the objective alone is in use (a teacher's distillation, a triplet loss)."""
from __future__ import annotations

from . import Term, register


@register
class MarginTerm(Term):
    name = "margin"
    weight_field = "head_weight"

    @classmethod
    def run_weight(cls, cfg) -> float:
        from . import head_carries_objective

        return 1.0 if head_carries_objective(cfg) else float(cfg.head_weight)

    def build(self, backbone, replicas: int = 1) -> None:
        import keras

        from ...models.build import build_head, head_name

        cfg = self.cfg
        self.head = build_head(head_name(cfg.head), int(self.meta["num_classes"]), cfg.scale, cfg.margin,
                               **cfg.head_params)
        self.partial = cfg.sample_rate < 1.0
        if self.partial:
            from ...models.partial_fc import PartialFC
            self.head = PartialFC(self.head, cfg.sample_rate, cfg.seed, name="partial_fc")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def layers(self) -> list:
        return [self.head]

    def outputs(self, emb, labels, training) -> dict:
        return {"logits": self.head([emb, labels], training=training)}

    def loss(self, emb, labels, teacher, outputs, training):
        import keras
        from keras import ops

        logits = ops.cast(outputs["logits"], "float32")
        target = ops.zeros_like(labels) if self.partial else labels
        self.accuracy.update_state(target, logits)
        return ops.mean(keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True))

    def metrics(self) -> list:
        return [self.accuracy]

    def heldout(self, emb, labels) -> dict:
        """The head's logits as in training (a margin head's margin on the target included, so the
        held-out curves sit beside the training ones): cross-entropy and top-1 correctness."""
        import keras
        from keras import ops

        logits = ops.cast(self.head([emb, labels], training=False), "float32")
        y = ops.cast(labels, "int32")
        return {"xent": keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True),
                "accuracy": ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), y), "float32")}

    def label(self) -> str:
        return f"+{self.cfg.head}"
