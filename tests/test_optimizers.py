"""facenet's optimizers (#23) against NumPy transcriptions of the TensorFlow 1 updates facenet ran
(``training_ops.apply_adam`` / ``apply_rms_prop`` / ``apply_adagrad``), with its epsilons, the
accumulators' starting values and slim's L2 (``wd / 2 * sum w^2``: ``wd * w`` added to the
gradient of kernels, not of biases), step by step."""
import numpy as np
import pytest

STEPS, LR, WD = 4, 0.05, 0.01


def _data():
    rng = np.random.default_rng(7)
    return rng.normal(size=(16, 5)), rng.normal(size=(16, 3)), rng.normal(size=(5, 3)) * 0.3


def _keras_steps(name, **kw):
    import keras

    from recface_lib.train.optim import make_optimizer

    x, y, w0 = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.layers[0].kernel.assign(w0.astype(np.float32))
    model.layers[0].bias.assign(np.full(3, 0.2, np.float32))
    model.compile(optimizer=make_optimizer(name, LR, WD, **kw), loss="mse")
    out = []
    for _ in range(STEPS):
        model.train_on_batch(x.astype(np.float32), y.astype(np.float32))
        out.append([np.asarray(v, np.float64).copy() for v in (model.layers[0].kernel, model.layers[0].bias)])
    return out


def _grads(w, b, x, y, wd):
    r = 2.0 * (x @ w + b - y) / y.size  # d mean((xw + b - y)^2)
    return x.T @ r + wd * w, r.sum(0)  # slim's L2 on the kernel only


def _reference(name, momentum=0.9, epsilon=1e-7):
    x, y, w = _data()
    params = [w.copy(), np.full(3, 0.2)]
    if name == "adam":
        m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    elif name == "rmsprop":
        ms, mom = [np.ones_like(p) for p in params], [np.zeros_like(p) for p in params]  # TF1: ms starts at 1
    else:
        acc = [np.full_like(p, 0.1) for p in params]  # TF1 Adagrad's initial accumulator
    out = []
    for t in range(1, STEPS + 1):
        gs = _grads(params[0], params[1], x, y, WD)
        for i, g in enumerate(gs):
            if name == "adam":
                lr_t = LR * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                params[i] = params[i] - lr_t * m[i] / (np.sqrt(v[i]) + epsilon)
            elif name == "rmsprop":
                ms[i] = 0.9 * ms[i] + 0.1 * g * g
                mom[i] = momentum * mom[i] + LR * g / np.sqrt(ms[i] + epsilon)
                params[i] = params[i] - mom[i]
            else:
                acc[i] = acc[i] + g * g
                params[i] = params[i] - LR * g / np.sqrt(acc[i] + epsilon)
        out.append([p.copy() for p in params])
    return out


@pytest.mark.parametrize("name,kw", [("adam", {"epsilon": 0.1}), ("adam", {"epsilon": 1e-7}),
                                     ("rmsprop", {"epsilon": 1.0, "momentum": 0.9}),
                                     ("rmsprop", {"epsilon": 1e-3, "momentum": 0.0}),
                                     ("adagrad", {"epsilon": 0.0})])
def test_facenet_optimizers_follow_tf1_step_by_step(name, kw):
    got, want = _keras_steps(name, **kw), _reference(name, **kw)
    for step, (g, w) in enumerate(zip(got, want)):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"{name} {kw} step {step + 1}")
    moved = np.abs(want[-1][0] - _data()[2]).max()
    assert moved > 1e-3  # the comparison is not of weights that stayed put


def test_unknown_optimizer_lists_the_valid_ones():
    from recface_lib.errors import ConfigError
    from recface_lib.train.config import TrainConfig
    from recface_lib.train.optim import make_optimizer

    with pytest.raises(ConfigError, match="optimizer: unknown 'adadelta'; valid: sgd, adamw, adam, rmsprop, adagrad"):
        make_optimizer("adadelta", 0.1, 0.0)
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig.from_dict({"dataset": "d", "output": "o", "optimizer": "Adam!"})
