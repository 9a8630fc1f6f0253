"""The training objective as weighted terms (README "Design": the objective).

A run's loss is ``sum_i w_i(stage) * term_i`` plus what layers add themselves (MagFace's
regulariser). A term is one registered class (``@register``) in its own module: it declares the
TrainConfig field that holds its weight (``weight_field``, also its key in a plan stage), whether
it needs a teacher's targets in the data (``needs_teacher``), when a run uses it (``active``),
builds its layers and state (``build``: class centres, a projection, running centres), gives its
outputs for the loss (``outputs``), its loss (``loss``), its logged metrics (``metrics``), its
figures on held-out records (``heldout``: the classifier's cross-entropy and accuracy), its part
of the run's description (``label``) and the one line for a training error it raised itself
(``explain``). ``TrainRun`` builds the model, the dataset and the checkpoint from the active terms
without knowing their names:

- ``margin``          the margin head's cross-entropy (any head, Partial FC), weight ``head_weight``;
- ``distill``         embedding matching to a teacher, ``distill_weight``;
- ``center``          facenet's center loss on the prelogits, ``center_loss_factor``;
- ``prelogits_norm``  facenet's p-norm penalty on the prelogits, ``prelogits_norm_loss_factor``;
- ``triplet``         a triplet loss on the batch (``train.triplet_losses``), ``triplet_weight``.

A term's weight is a variable of the model, set at each plan stage (a stage's own value, else
the run's), so a stage that changes a weight reuses the traced train step."""
from __future__ import annotations

from typing import ClassVar

TERMS: dict[str, type["Term"]] = {}


def register(cls):
    TERMS[cls.name] = cls
    return cls


class Term:
    name: ClassVar[str]
    weight_field: ClassVar[str]  # the TrainConfig field with the run's weight; a plan stage's key
    needs_teacher: ClassVar[bool] = False  # the data carries the teacher's target of each record

    def __init__(self, run):
        self.cfg, self.meta = run.cfg, run.meta

    @classmethod
    def replaces_head(cls, cfg) -> bool:
        """Whether this term, in use in ``cfg``, carries the objective without the margin head:
        the head then weighs ``head_weight`` (0 by default) instead of 1 (distillation, triplet)."""
        return False

    @classmethod
    def run_weight(cls, cfg) -> float:
        return float(getattr(cfg, cls.weight_field))

    @classmethod
    def stage_weights(cls, cfg, stages) -> list[float]:
        w = cls.run_weight(cfg)
        return [float(st.weights.get(cls.weight_field, w)) for st in stages]

    @classmethod
    def active(cls, cfg, stages) -> bool:
        """Whether the run uses this term: some stage gives it weight."""
        return any(w > 0 for w in cls.stage_weights(cfg, stages))

    def build(self, backbone, replicas: int = 1) -> None:
        """Create layers and state (called under the strategy's scope)."""

    def layers(self) -> list:
        """The Keras layers this term owns (tracked by the model: their weights are checkpointed)."""
        return []

    def outputs(self, emb, labels, training) -> dict:
        return {}

    def loss(self, emb, labels, teacher, outputs, training):
        raise NotImplementedError

    def metrics(self) -> list:
        return []

    def heldout(self, emb, labels) -> dict:
        """Per-sample figures on held-out records (``validation_split``), {name: (batch,) tensor};
        the run reports each one's mean as ``heldout_<name>``."""
        return {}

    def label(self) -> str:
        """This term in the run's one-line description (the progress bar)."""
        return f"+{self.name}"

    def explain(self, error: str) -> str | None:
        """The one line for a TensorFlow error this term raised on purpose (a guard), else None."""
        return None


WEIGHT_FIELDS: tuple[str, ...] = ()


def head_carries_objective(cfg) -> bool:
    """Whether the margin head is the loss (weight 1): no term that can carry the objective alone
    (a teacher's distillation, a triplet loss) is in use; else it weighs ``head_weight``."""
    return not any(T.replaces_head(cfg) for T in TERMS.values())


def active_terms(run) -> list[Term]:
    """The run's terms, in registry order."""
    return [cls(run) for cls in TERMS.values() if cls.active(run.cfg, run.stages)]


def build_objective_model(backbone, terms: list[Term], input_shapes: dict):
    """(image, label[, teacher target]) -> {"embedding", and each term's outputs}; the loss is the
    terms' weighted sum. ``input_shapes``: {"teacher": dim} where a term needs teacher targets."""
    import keras
    from keras import ops

    class ObjectiveModel(keras.Model):
        def __init__(self):
            super().__init__(name="train_model")
            self.backbone = backbone
            self.terms = terms
            self.term_layers = [layer for t in terms for layer in t.layers()]
            self.term_weights = {t.name: keras.Variable(1.0, trainable=False, name=f"{t.name}_weight") for t in terms}
            self.loss_parts = {t.name: keras.metrics.Mean(name=f"loss_{t.name}") for t in terms} if len(terms) > 1 else {}

        def call(self, inputs, training=False):
            emb = self.backbone(inputs[0], training=training)
            out = {"embedding": emb}
            for t in self.terms:
                out.update(t.outputs(emb, inputs[1], training))
            return out

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            labels = x[1]
            teacher = x[2] if len(x) > 2 else None
            emb = ops.cast(y_pred["embedding"], "float32")
            total = 0.0
            for t in self.terms:
                part = t.loss(emb, labels, teacher, y_pred, training)
                if t.name in self.loss_parts:
                    self.loss_parts[t.name].update_state(part)
                total = total + self.term_weights[t.name] * part
            for extra in self.losses:
                total = total + ops.cast(extra, "float32")
            return total

        @property
        def metrics(self):
            return [*super().metrics[:1], *[m for t in self.terms for m in t.metrics()], *self.loss_parts.values()]

    model = ObjectiveModel()
    size = backbone.input_shape[1:]
    sample = [ops.zeros((2, *size)), ops.zeros((2,), "int32")]
    if "teacher" in input_shapes:
        sample.append(ops.zeros((2, input_shapes["teacher"])))
    model(tuple(sample))
    return model


# registration order is the order of the loss's sum
from . import distill  # noqa: E402,F401,I001
from . import margin  # noqa: E402,F401
from . import center  # noqa: E402,F401
from . import prelogits_norm  # noqa: E402,F401
from . import triplet  # noqa: E402,F401

WEIGHT_FIELDS = tuple(cls.weight_field for cls in TERMS.values())

__all__ = ["TERMS", "Term", "WEIGHT_FIELDS", "active_terms", "build_objective_model", "head_carries_objective",
           "register"]
