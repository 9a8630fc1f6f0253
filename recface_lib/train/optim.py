"""Optimizers with a weight decay that lives in a variable, so each stage of the plan can change
it without rebuilding the model or retracing the train step.

- ``sgd``: coupled L2 as the recface guide's ``kernel_regularizer=l2(w_decay)`` did: the gradient
  of ``w_decay * sum(w^2)`` (= 2 * w_decay * w) is added before momentum.
- ``adamw``: decoupled decay ``w -= lr * w_decay * w`` (Loshchilov & Hutter).
- A row-sparse gradient (Partial FC's sampled centres) gets a row-sparse SGD step: decay, momentum
  and move of those rows only; AdamW densifies it.
Decay applies to kernels (conv, depthwise, dense) and the head's class centres, not to batch-norm,
biases or PReLU slopes."""
from __future__ import annotations

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")


def decays(variable) -> bool:
    name = getattr(variable, "path", None) or variable.name
    return "kernel" in name or "centers" in name


def make_optimizer(name: str, learning_rate, weight_decay: float, momentum: float = 0.9, nesterov: bool = False,
                   clipnorm: float | None = None, ema: float = 0.0, accumulate: int = 1):
    """``ema``: momentum of an exponential moving average of the weights per effective step (0:
    none); kept in the optimizer's variables (so checkpoints resume it) and never written over the
    live weights (``ema_values`` reads it). ``accumulate``: gradients of N micro-batches are averaged
    into one update, so an update sees an effective batch of N x batch_size and the plan's learning
    rate means what it means for that batch."""
    import keras

    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown {name!r}; valid: {', '.join(OPTIMIZERS)}")
    base = keras.optimizers.SGD if name == "sgd" else keras.optimizers.Adam

    class WithDecay(base):
        def build(self, var_list):
            super().build(var_list)
            self.wd = self.add_variable((), initializer=keras.initializers.Constant(weight_decay), name="stage_weight_decay")

        def update_step(self, gradient, variable, learning_rate):
            if name == "sgd" and is_row_sparse(gradient):
                return self.sparse_step(gradient, variable, learning_rate)
            if decays(variable):
                wd = keras.ops.cast(self.wd, variable.dtype)
                if name == "sgd":
                    gradient = gradient + 2.0 * wd * keras.ops.cast(variable, gradient.dtype)
                else:
                    variable.assign(variable - keras.ops.cast(learning_rate, variable.dtype) * wd * variable)
            return super().update_step(gradient, variable, learning_rate)

        def sparse_step(self, gradient, variable, learning_rate):
            """SGD on the rows a gradient touches (Partial FC's sampled centres): their decay,
            momentum and move, the other rows and their momentum untouched ("lazy", as arcface_torch
            updates only the sampled centres). Rows named twice have their gradients summed."""
            import tensorflow as tf

            rows, where = tf.unique(gradient.indices)
            g = tf.math.unsorted_segment_sum(gradient.values, where, tf.shape(rows)[0])
            g = tf.cast(g, variable.dtype)
            lr = tf.cast(learning_rate, variable.dtype)
            if decays(variable):
                g = g + 2.0 * tf.cast(self.wd, variable.dtype) * tf.gather(variable, rows)
            if self.momentum == 0:
                self.assign_sub(variable, tf.IndexedSlices(lr * g, rows))
                return
            mom = self.momentums[self._get_variable_index(variable)]
            mu = tf.cast(self.momentum, variable.dtype)
            m = mu * tf.gather(mom, rows) - lr * g
            self.assign(mom, tf.IndexedSlices(m, rows))
            self.assign_add(variable, tf.IndexedSlices(mu * m - lr * g if self.nesterov else m, rows))

        def finalize_variable_values(self, var_list):
            pass  # Keras would copy the average over the live weights at the end of every fit()

    kw = dict(learning_rate=learning_rate, clipnorm=clipnorm)
    if ema:  # Keras updates the average on every micro-step: per effective step the momentum is `ema`
        kw.update(use_ema=True, ema_momentum=float(ema) ** (1.0 / max(1, accumulate)), ema_overwrite_frequency=None)
    if accumulate > 1:
        kw.update(gradient_accumulation_steps=int(accumulate))
    if name == "sgd":
        kw.update(momentum=momentum, nesterov=nesterov)
    return WithDecay(**kw)


def is_row_sparse(gradient) -> bool:
    """A gradient that names the rows it touches (``tf.IndexedSlices``, from ``tf.gather``)."""
    import tensorflow as tf

    return isinstance(gradient, tf.IndexedSlices)


def set_weight_decay(optimizer, value: float) -> None:
    opt = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer under mixed_float16
    opt.wd.assign(float(value))


def ema_values(optimizer, variables) -> list:
    """The moving averages of ``variables`` kept by an optimizer made with ``ema``."""
    opt = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(opt, "use_ema", False):
        raise ValueError("this optimizer keeps no moving average (ema: 0)")
    return [opt._model_variables_moving_average[opt._get_variable_index(v)] for v in variables]
