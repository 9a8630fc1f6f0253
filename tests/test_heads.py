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
    w = np.asarray(head.w, np.float64).T
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
    head.w.assign(np.array([[1.0, 0.0]], np.float32))
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
    head.w.assign(np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32))
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
    cos = _cos(emb, np.asarray(head.w, np.float64).T)
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
    cos = _cos(emb, np.asarray(head.w, np.float64).T)
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


# -- CurricularFace, MagFace, sub-center ArcFace (#16) ------------------------------------------------
def _arc(cos, m):
    th = np.arccos(np.clip(cos, -1, 1))
    return np.where(th + m <= math.pi, np.cos(th + m), cos - m * np.sin(m))


def ref_curricular(emb, w, labels, m, t_old, alpha, s=64.0):
    """insightface/CurricularFace's forward, loop by loop, float64; returns (logits, new t)."""
    cos = _cos(emb, w)
    out = cos.copy()
    t = t_old
    targets = cos[np.arange(len(labels)), labels]
    t = alpha * targets.mean() + (1 - alpha) * t_old
    for i, y in enumerate(labels):
        c = targets[i]
        c_m = c * math.cos(m) - math.sqrt(max(1 - c * c, 1e-7)) * math.sin(m)
        for j in range(w.shape[1]):
            if j != y and cos[i, j] > c_m:
                out[i, j] = cos[i, j] * (t + cos[i, j])
        out[i, y] = c_m if c > math.cos(math.pi - m) else c - math.sin(math.pi - m) * m
    return s * out, t


def ref_magface(emb, w, labels, s=64.0, u_m=0.8, l_m=0.45, l_a=10.0, u_a=110.0, lam=35.0):
    cos = _cos(emb, w)
    a = np.clip(np.linalg.norm(emb, axis=1), l_a, u_a)
    out = cos.copy()
    for i, y in enumerate(labels):
        m = (u_m - l_m) / (u_a - l_a) * (a[i] - l_a) + l_m
        th = math.acos(min(max(cos[i, y], -1), 1))
        out[i, y] = math.cos(th + m) if th + m <= math.pi else cos[i, y] - math.sin(math.pi - m) * m
    return s * out, lam * np.mean(1 / a + a / u_a ** 2)


def ref_subcenter(emb, w, labels, m, k, s=64.0):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    ww = w / np.linalg.norm(w, axis=0, keepdims=True)
    sub = np.clip(e @ ww, -1, 1).reshape(len(emb), -1, k)
    cos = sub.max(2)
    out = cos.copy()
    out[np.arange(len(labels)), labels] = _arc(cos[np.arange(len(labels)), labels], m)
    return s * out


def _edge_batch(w, labels, rng):
    """Embeddings exactly on their class centre (cos = 1) and exactly opposite (cos = -1), plus random."""
    emb = rng.normal(size=(len(labels), w.shape[0])) * 15
    emb[0] = w[:, labels[0]] * 30.0
    emb[1] = -w[:, labels[1]] * 30.0
    return emb


@pytest.mark.parametrize("training", [False, True])
def test_curricularface_matches_numpy(batch, training):
    emb, labels = batch
    head = build_head("CurricularFace", C, scale=64.0)
    head.build(((None, D), (None,)))
    head.t.assign(0.3)
    w = np.asarray(head.w, np.float64).T
    rng = np.random.default_rng(1)
    emb = np.concatenate([_edge_batch(w, labels[:8], rng), emb])
    out = np.asarray(head([emb.astype(np.float32), labels.astype(np.int32) if len(labels) == len(emb)
                           else np.concatenate([labels[:8], labels]).astype(np.int32)], training=training), np.float64)
    lab = np.concatenate([labels[:8], labels])
    want, t = ref_curricular(emb, w, lab, 0.5, 0.3, 0.01 if training else 0.0)
    if not training:
        want, t = ref_curricular(emb, w, lab, 0.5, 0.3, 0.0)
    assert np.all(np.isfinite(out))
    plain = 64 * _cos(emb, w)
    offtarget = np.ones_like(plain, bool)
    offtarget[np.arange(len(lab)), lab] = False
    assert (np.abs(want - plain)[offtarget] > 1e-3).sum() >= 5  # hard negatives were re-weighted
    np.testing.assert_allclose(out, want, rtol=0, atol=64 * 3e-4)
    assert float(head.t) == pytest.approx(t if training else 0.3, abs=1e-6)


def test_magface_matches_numpy_with_its_regulariser(batch):
    emb, labels = batch
    head = build_head("MagFace", C, scale=64.0)
    head.build(((None, D), (None,)))
    w = np.asarray(head.w, np.float64).T
    rng = np.random.default_rng(2)
    emb = np.concatenate([_edge_batch(w, labels[:8], rng), emb * 4, emb * 40])  # magnitudes below, in, above [10, 110]
    lab = np.concatenate([labels[:8], labels, labels])
    out = np.asarray(head([emb.astype(np.float32), lab.astype(np.int32)], training=True), np.float64)
    want, reg = ref_magface(emb, w, lab)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, want, rtol=0, atol=64 * 3e-4)
    assert len(head.losses) == 1 and float(head.losses[0]) == pytest.approx(reg, rel=1e-4)


def test_subcenter_arcface_matches_numpy_and_finds_dominant_centres(batch):
    emb, labels = batch
    head = build_head("SubCenterArcFace", C, scale=64.0, k=3)
    head.build(((None, D), (None,)))
    w = np.asarray(head.w, np.float64).T
    rng = np.random.default_rng(3)
    edge = rng.normal(size=(2, D)) * 15
    edge[0], edge[1] = w[:, 3 * labels[0] + 1] * 30, -w[:, 3 * labels[1]] * 30
    emb2 = np.concatenate([edge, emb])
    lab = np.concatenate([labels[:2], labels])
    out = np.asarray(head([emb2.astype(np.float32), lab.astype(np.int32)]), np.float64)
    np.testing.assert_allclose(out, ref_subcenter(emb2, w, lab, 0.5, 3), rtol=0, atol=64 * 3e-4)
    assert np.all(np.isfinite(out))
    # clean-up: faces of class 0 mostly at its centre 2, one face far from it (noise)
    wc = w[:, 2] / np.linalg.norm(w[:, 2])
    faces = np.stack([wc * 10 + rng.normal(size=D) * 0.5 for _ in range(6)] + [-wc * 10])
    dom, keep = head.dominant(faces.astype(np.float32), np.zeros(7, int), max_angle=75)
    assert dom[0] == 2 and keep[:6].all() and not keep[6]


@pytest.mark.parametrize("name", ["CurricularFace", "MagFace", "SubCenterArcFace"])
def test_new_heads_gradients_match_finite_differences(name):
    """d(sum(logits * R))/d(embedding) of the layer against central differences of the NumPy reference."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    labels = rng.integers(0, C, 6)
    head = build_head(name, C, scale=8.0)
    head.build(((None, D), (None,)))
    w = np.asarray(head.w, np.float64).T
    emb = rng.normal(size=(6, D)) * (20 if name == "MagFace" else 1)
    R = rng.normal(size=(6, C))

    def ref(e):
        if name == "CurricularFace":
            return (ref_curricular(e, w, labels, 0.5, 0.0, 0.0, s=8.0)[0] * R).sum()
        if name == "MagFace":
            return (ref_magface(e, w, labels, s=8.0)[0] * R).sum()
        return (ref_subcenter(e, w, labels, 0.5, 3, s=8.0) * R).sum()

    x = tf.constant(emb.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        val = tf.reduce_sum(head([x, labels.astype(np.int32)], training=False) * R.astype(np.float32))
    g = tape.gradient(val, x).numpy().astype(np.float64)
    num = np.zeros_like(emb)
    h = 1e-5 * max(1.0, np.abs(emb).max())
    for i in range(emb.shape[0]):
        for j in range(emb.shape[1]):
            ep, em = emb.copy(), emb.copy()
            ep[i, j] += h
            em[i, j] -= h
            num[i, j] = (ref(ep) - ref(em)) / (2 * h)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, num, rtol=2e-2, atol=2e-3 * np.abs(num).max())


# -- facenet's Softmax head (#23) -----------------------------------------------------------------
def test_softmax_head_is_a_plain_dense_layer(batch):
    """prelogits @ W + b (no normalisation, no margin, no scale), its weights decayed like every
    kernel; a margin, or Partial FC (which samples normalised centres), is refused in one line."""
    from recface_lib.errors import ConfigError
    from recface_lib.models.partial_fc import PartialFC
    from recface_lib.train.optim import decays

    emb, labels = batch
    head, out = run_head("Softmax", 3.0 * emb, labels)
    head.bias.assign(np.linspace(-1, 1, C).astype(np.float32))
    out = np.asarray(head([3.0 * emb.astype(np.float32), labels.astype(np.int32)]), np.float64)
    want = 3.0 * emb @ np.asarray(head.kernel, np.float64) + np.linspace(-1, 1, C)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert head.margin == 0.0 and decays(head.kernel) and not decays(head.bias)
    with pytest.raises(ConfigError, match="the Softmax head has no margin"):
        build_head("Softmax", C, margin=0.3)
    with pytest.raises(ConfigError, match="Partial FC works with the heads ArcFace"):
        PartialFC(head, 0.5)
