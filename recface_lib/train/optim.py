"""Optimizers with a weight decay that lives in a variable, so each stage of the plan can change
it without rebuilding the model or retracing the train step.

- ``sgd``: coupled L2 as the recface guide's ``kernel_regularizer=l2(w_decay)`` did: the gradient
  of ``w_decay * sum(w^2)`` (= 2 * w_decay * w) is added before momentum.
- ``adamw``: decoupled decay ``w -= lr * w_decay * w`` (Loshchilov & Hutter).
Decay applies to kernels (conv, depthwise, dense) and the head's class centres, not to batch-norm,
biases or PReLU slopes."""
from __future__ import annotations

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")


def decays(variable) -> bool:
    name = getattr(variable, "path", None) or variable.name
    return "kernel" in name or "centers" in name


def make_optimizer(name: str, learning_rate, weight_decay: float, momentum: float = 0.9, nesterov: bool = False,
                   clipnorm: float | None = None):
    import keras

    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown {name!r}; valid: {', '.join(OPTIMIZERS)}")
    base = keras.optimizers.SGD if name == "sgd" else keras.optimizers.Adam

    class WithDecay(base):
        def build(self, var_list):
            super().build(var_list)
            self.wd = self.add_variable((), initializer=keras.initializers.Constant(weight_decay), name="stage_weight_decay")

        def update_step(self, gradient, variable, learning_rate):
            if decays(variable):
                wd = keras.ops.cast(self.wd, variable.dtype)
                if name == "sgd":
                    gradient = gradient + 2.0 * wd * keras.ops.cast(variable, gradient.dtype)
                else:
                    variable.assign(variable - keras.ops.cast(learning_rate, variable.dtype) * wd * variable)
            return super().update_step(gradient, variable, learning_rate)

    kw = dict(learning_rate=learning_rate, clipnorm=clipnorm)
    if name == "sgd":
        kw.update(momentum=momentum, nesterov=nesterov)
    return WithDecay(**kw)


def set_weight_decay(optimizer, value: float) -> None:
    opt = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer under mixed_float16
    opt.wd.assign(float(value))
