"""Margin heads against independent NumPy references (float64), including the edge cases where
naive formulas give NaN (cos = +-1) or turn non-monotonic (theta + m > pi)."""
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from recface_lib.models.build import build_head  # noqa: E402

C, D = 7, 16


def _cos(emb, w):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    ww = w / np.linalg.norm(w, axis=0, keepdims=True)
    return np.clip(e @ ww, -1, 1)


def ref_target(name, cos, m, **kw):
    th = np.arccos(np.clip(cos, -1, 1))
    if name == "ArcFace":
        if kw.get("easy_margin"):
            return np.where(cos > 0, np.cos(th + m), cos)
        return np.where(th + m <= math.pi, np.cos(th + m), cos - m * math.sin(m))
    if name == "CosFace":
        return cos - m
    if name == "SphereFace":
        k = np.floor(m * th / math.pi)
        return (-1.0) ** k * np.cos(m * th) - 2 * k
    if name == "Combined":
        t = kw["margin1"] * th + m
        return np.where(t < math.pi, np.cos(t), -1 - (t - math.pi)) - kw["margin3"]
    if name == "NormDense":
        return cos
    raise KeyError(name)


def run_head(name, emb, labels, training=False, **kw):
    head = build_head(name, C, scale=64.0, **kw)
    out = np.asarray(head([emb.astype(np.float32), labels.astype(np.int32)], training=training), np.float64)
    return head, out


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, D))
    labels = rng.integers(0, C, 40)
    return emb, labels


@pytest.mark.parametrize("name,kw", [("ArcFace", {}), ("ArcFace", {"easy_margin": True}), ("CosFace", {}),
                                     ("SphereFace", {}), ("NormDense", {}),
                                     ("Combined", {"margin": 0.3, "margin1": 1.0, "margin3": 0.2})])
def test_margin_heads_match_numpy(batch, name, kw):
    emb, labels = batch
    head, out = run_head(name, emb, labels, **kw)
    w = np.asarray(head.w, np.float64)
    cos = _cos(emb, w)
    margin = head.margin
    target = ref_target(name, cos, margin, **{"margin1": 1.0, "margin3": 0.0, **kw})
    onehot = np.eye(C)[labels].astype(bool)
    want = 64.0 * np.where(onehot, target, cos)
    np.testing.assert_allclose(out, want, rtol=0, atol=64 * 2e-4)  # sin is clipped at sqrt(1e-7)
    assert margin == {"ArcFace": 0.5, "CosFace": 0.35, "SphereFace": 1.35, "NormDense": 0.0}.get(name, margin)


def test_arcface_beyond_pi_is_monotonic_and_finite():
    """Target logit as the embedding rotates from the class centre to the opposite side."""
    head = build_head("ArcFace", 1, scale=1.0)
    head.build(((None, 2), (None,)))
    head.w.assign(np.array([[1.0], [0.0]], np.float32))
    ang = np.linspace(0, math.pi, 721)
    emb = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    logits = np.asarray(head([emb, np.zeros(len(ang), np.int32)]))[:, 0]
    assert np.all(np.isfinite(logits))
    assert np.all(np.diff(logits) <= 1e-6), "the ArcFace logit must not rise again once theta + m > pi"
    naive = np.cos(ang + 0.5)
    assert np.any(np.diff(naive) > 0)  # the reason for the fallback


@pytest.mark.parametrize("name", ["ArcFace", "CosFace", "SphereFace", "Combined", "AdaCos", "AdaFace"])
def test_no_nan_at_cos_plus_minus_one(name):
    import tensorflow as tf

    head = build_head(name, 2, scale=64.0)
    head.build(((None, 2), (None,)))
    head.w.assign(np.array([[1.0, -1.0], [0.0, 0.0]], np.float32))
    emb = tf.constant([[3.0, 0.0], [-2.0, 0.0], [0.0, 1.0]])  # cos exactly +1 / -1 to the centres
    labels = tf.constant([0, 0, 1])
    with tf.GradientTape() as tape:
        tape.watch(emb)
        logits = head([emb, labels], training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, [emb, head.w])
    assert np.all(np.isfinite(logits.numpy())), logits.numpy()
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_adacos_dynamic_scale_matches_numpy(batch):
    emb, labels = batch
    head, out0 = run_head("AdaCos", emb, labels, training=False)
    s0 = math.sqrt(2) * math.log(C - 1)
    cos = _cos(emb, np.asarray(head.w, np.float64))
    np.testing.assert_allclose(out0, s0 * cos, atol=1e-3)  # inference: fixed scale, no margin
    out1 = np.asarray(head([emb.astype(np.float32), labels.astype(np.int32)], training=True), np.float64)
    onehot = np.eye(C)[labels].astype(bool)
    b_avg = np.mean(np.sum(np.where(onehot, 0, np.exp(s0 * cos)), 1))
    th = np.sort(np.arccos(cos[onehot]))
    s1 = min(64.0, max(1.0, math.log(b_avg) / math.cos(min(math.pi / 4, th[len(th) // 2]))))
    assert float(head.s.numpy()) == pytest.approx(s1, rel=1e-4)
    np.testing.assert_allclose(out1, s1 * cos, atol=2e-3)


def test_adaface_matches_numpy(batch):
    emb, labels = batch
    emb = emb * np.linspace(0.5, 30, len(emb))[:, None]  # spread of feature norms = image quality
    head, out = run_head("AdaFace", emb, labels, training=True)
    cos = _cos(emb, np.asarray(head.w, np.float64))
    norm = np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 0.001, 100)
    mean = 0.01 * norm.mean() + 0.99 * 20.0
    std = 0.01 * norm.std(ddof=1) + 0.99 * 100.0
    assert float(head.batch_mean.numpy()) == pytest.approx(mean, rel=1e-5)
    assert float(head.batch_std.numpy()) == pytest.approx(std, rel=1e-5)
    ms = np.clip((norm - mean) / (std + 1e-3) * 0.333, -1, 1)
    th = np.clip(np.arccos(np.clip(cos, -1 + 1e-7, 1 - 1e-7)) - 0.4 * ms, 1e-7, math.pi - 1e-7)
    target = np.cos(th) - (0.4 + 0.4 * ms)
    onehot = np.eye(C)[labels].astype(bool)
    np.testing.assert_allclose(out, 64 * np.where(onehot, target, cos), atol=64 * 1e-4)
    # inference leaves the running statistics alone
    head([emb.astype(np.float32), labels.astype(np.int32)], training=False)
    assert float(head.batch_mean.numpy()) == pytest.approx(mean, rel=1e-5)


def test_head_names_and_errors():
    from recface_lib.errors import ConfigError
    from recface_lib.models.build import head_name

    assert head_name("ArcFaceHead") == "ArcFace"  # the recface guide's spelling
    with pytest.raises(ConfigError, match="valid: ArcFace, CosFace"):
        head_name("ArcFase")
