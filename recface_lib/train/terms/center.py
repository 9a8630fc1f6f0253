"""facenet's center loss (Wen et al. 2016, as facenet's ``center_loss``), on the prelogits (the
backbone's embedding before any normalisation):

    loss = mean over the batch and the dimensions of (x_i - c_{y_i})^2, with the centres as they
           were before this step's update;
    c_{y_i} -= (1 - alfa) * (c_{y_i} - x_i) for every sample, repeated labels adding up.

The centres (classes x dim, zeros at the start) are a non-trainable weight: checkpointed and
resumed with the model, never moved by the optimizer, updated only on training steps. A class seen
n times in a batch moves by n (1 - alfa) times its distance to their mean: past n > 2 / (1 - alfa)
that step overshoots and repeated, diverges (facenet#980, #1028). The run stops at the first such
batch with one line naming the rule (``DIVERGES``), not with a NaN thousands of steps later."""
from __future__ import annotations

import functools

from . import Term, register

DIVERGES = "recface center loss"


def max_repeats(alfa: float) -> float:
    """The most times a class may appear in one batch before the centre update overshoots."""
    return 2.0 / (1.0 - alfa)


def center_update(centers, features, labels, alfa):
    """(loss, new centres) of one step, facenet's rule, in Keras ops (``centers`` a tensor)."""
    from keras import ops

    batch = ops.take(centers, labels, axis=0)
    import tensorflow as tf

    loss = ops.mean(ops.square(features - batch))
    diff = (1.0 - alfa) * (batch - ops.stop_gradient(features))
    new = tf.tensor_scatter_nd_sub(centers, ops.expand_dims(labels, 1), diff)  # repeated labels add up
    return loss, new


@register
class CenterLossTerm(Term):
    name = "center"
    weight_field = "center_loss_factor"

    def build(self, backbone, replicas: int = 1) -> None:
        import keras

        from ...errors import ConfigError

        if replicas > 1:
            raise ConfigError("center_loss_factor: the center loss keeps its centres on one replica; train it "
                              f"without a multi-replica strategy (this run has {replicas} replicas)")
        if not self.meta.get("labelled", True):
            raise ConfigError(f"{self.cfg.dataset}: unlabelled data has no classes for the center loss")
        self.alfa = float(self.cfg.center_loss_alfa)
        self.centers = centres_layer()(int(self.meta["num_classes"]), int(backbone.output_shape[-1]))
        self.centers.build(None)
        self.tracker = keras.metrics.Mean(name="center_loss")

    def layers(self) -> list:
        return [self.centers]

    def loss(self, emb, labels, teacher, outputs, training):
        import tensorflow as tf
        from keras import ops

        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        c = ops.convert_to_tensor(self.centers.centers)
        loss, new = center_update(c, emb, labels, self.alfa)
        if training:
            counts = tf.math.bincount(labels, minlength=1)
            n = tf.reduce_max(counts)
            check = tf.debugging.Assert(tf.cast(n, tf.float32) <= max_repeats(self.alfa), [DIVERGES, n])
            with tf.control_dependencies([check]):
                self.centers.centers.assign(new)
        self.tracker.update_state(loss)
        return loss

    def metrics(self) -> list:
        return [self.tracker]

    def explain(self, error: str) -> str | None:
        """The divergence guard's one line (None for any other error)."""
        import re

        if DIVERGES not in error:
            return None
        m = re.search(re.escape(DIVERGES) + r"\D*(\d+)", error)
        n = m.group(1) if m else "too many"
        return (f"center loss: a class appears {n} times in one batch; past 2 / (1 - center_loss_alfa) = "
                f"{max_repeats(self.alfa):g} its centre update overshoots and the loss diverges (facenet#980): "
                "lower batch_size or raise center_loss_alfa")


@functools.lru_cache(maxsize=None)
def centres_layer():
    """The Keras layer class holding the centres (made on first use: registering the term imports
    no Keras)."""
    import keras

    @keras.saving.register_keras_serializable(package="recface")
    class CenterLossCentres(keras.layers.Layer):
        """The centres as a layer weight (so the model's checkpoint holds them); not trainable, and
        named so that no weight decay rule matches them."""

        def __init__(self, num_classes, dim, **kw):
            kw.setdefault("dtype", "float32")
            kw.setdefault("name", "center_loss")
            super().__init__(**kw)
            self.num_classes, self.dim = int(num_classes), int(dim)

        def build(self, input_shape=None):
            self.centers = self.add_weight(name="centres", shape=(self.num_classes, self.dim), initializer="zeros",
                                           trainable=False)
            self.built = True

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes, "dim": self.dim}

    return CenterLossCentres
