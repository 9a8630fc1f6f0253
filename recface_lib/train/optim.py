"""Optimizers with a weight decay that lives in a variable, so each stage of the plan can change
it without rebuilding the model or retracing the train step.

- ``sgd``: coupled L2 as the recface guide's ``kernel_regularizer=l2(w_decay)`` did: the gradient
  of ``w_decay * sum(w^2)`` (= 2 * w_decay * w) is added before momentum.
- ``adamw``: decoupled decay ``w -= lr * w_decay * w`` (Loshchilov & Hutter).
- ``adam``, ``rmsprop``, ``adagrad``: facenet's optimizers with facenet's coupled L2, slim's
  ``l2_regularizer(w_decay)`` = ``w_decay / 2 * sum(w^2)``, so ``w_decay * w`` is added to the
  gradient. Their updates are TensorFlow 1's, which facenet ran: Adam's bias-corrected step with
  epsilon outside the root (facenet: epsilon 0.1); RMSProp with rho 0.9, ``momentum`` and its mean
  square started at 1 (TF1's ``RMSPropOptimizer``; Keras starts it at 0, which makes the first
  steps 3x longer; facenet: epsilon 1.0, momentum 0.9); Adagrad with its accumulator started at 0.1
  (TF1 has no epsilon there: Keras adds ``epsilon`` under the root, so 0 reproduces TF1 exactly).
- A row-sparse gradient (Partial FC's sampled centres) gets a row-sparse SGD step: decay, momentum
  and move of those rows only; the other optimizers densify it.
Decay applies to kernels (conv, depthwise, dense) and the head's class centres, not to batch-norm,
biases or PReLU slopes."""
from __future__ import annotations

from ..errors import ConfigError

# name: (Keras optimizer, how weight_decay acts: "l2" adds 2 wd w, "slim_l2" adds wd w, "decoupled")
RULES = {"sgd": ("SGD", "l2"), "adamw": ("Adam", "decoupled"), "adam": ("Adam", "slim_l2"),
         "rmsprop": ("RMSprop", "slim_l2"), "adagrad": ("Adagrad", "slim_l2")}
OPTIMIZERS = tuple(RULES)
DEFAULT_EPSILON = 1e-7  # Keras' own for adam, rmsprop and adagrad


def decays(variable) -> bool:
    name = getattr(variable, "path", None) or variable.name
    return "kernel" in name or "centers" in name


def make_optimizer(name: str, learning_rate, weight_decay: float, momentum: float = 0.9, nesterov: bool = False,
                   clipnorm: float | None = None, ema: float = 0.0, accumulate: int = 1,
                   epsilon: float = DEFAULT_EPSILON):
    """``ema``: momentum of an exponential moving average of the weights per effective step (0:
    none); kept in the optimizer's variables (so checkpoints resume it) and never written over the
    live weights (``ema_values`` reads it). ``accumulate``: gradients of N micro-batches are averaged
    into one update, so an update sees an effective batch of N x batch_size and the plan's learning
    rate means what it means for that batch."""
    import keras

    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown {name!r}; valid: {', '.join(OPTIMIZERS)}")
    cls, rule = RULES[name]
    base = getattr(keras.optimizers, cls)

    class WithDecay(base):
        def build(self, var_list):
            super().build(var_list)
            self.wd = self.add_variable((), initializer=keras.initializers.Constant(weight_decay), name="stage_weight_decay")

        def add_optimizer_variables(self, trainable_variables, slot, initializer="zeros"):
            if name == "rmsprop" and slot == "velocity":  # TF1's mean square starts at 1
                initializer = "ones"
            return super().add_optimizer_variables(trainable_variables, slot, initializer)

        def update_step(self, gradient, variable, learning_rate):
            if name == "sgd" and is_row_sparse(gradient):
                return self.sparse_step(gradient, variable, learning_rate)
            if decays(variable):
                wd = keras.ops.cast(self.wd, variable.dtype)
                if rule == "decoupled":
                    variable.assign(variable - keras.ops.cast(learning_rate, variable.dtype) * wd * variable)
                else:
                    k = 2.0 if rule == "l2" else 1.0
                    gradient = keras.ops.convert_to_tensor(gradient)
                    gradient = gradient + k * keras.ops.cast(wd, gradient.dtype) * keras.ops.cast(variable, gradient.dtype)
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
    elif name == "rmsprop":
        kw.update(rho=0.9, momentum=momentum, epsilon=epsilon)
    elif name == "adagrad":
        kw.update(initial_accumulator_value=0.1, epsilon=epsilon)
    else:
        kw.update(epsilon=epsilon)
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
