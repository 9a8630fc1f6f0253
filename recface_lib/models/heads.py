"""Margin heads: a cosine layer (L2-normalised features x L2-normalised class weights) and the
margin variants, with the literature's defaults. Every head computes in float32 (its layer dtype),
so logits and loss stay float32 under mixed precision. Inputs: (embedding, labels int).

- ArcFace   s*cos(theta + m) on the target (m 0.5, s 64); where theta + m > pi the insightface
            fallback cos(theta) - m*sin(m) keeps the logit monotonic; ``easy_margin`` applies the
            margin only where cos > 0.
- CosFace   s*(cos - m) (m 0.35).
- Combined  insightface's s*(cos(m1*theta + m2) - m3).
- SphereFace s*psi(theta), psi = (-1)^k cos(m*theta) - 2k, k = floor(m*theta/pi) (m 1.35): the
            monotonic extension of cos(m*theta) to [0, pi].
- AdaCos    the dynamic scale of Zhang et al. 2019, capped at ``scale`` (the guide's logist_scale).
- AdaFace   feature-norm adaptive margin (Kim et al. 2022), m 0.4, h 0.333, running norm stats.
- CurricularFace  ArcFace target, hard negatives re-weighted by a running mean t (Huang et al. 2020).
- MagFace   magnitude-dependent margin 0.45..0.8 plus its magnitude regulariser (Meng et al. 2021).
- SubCenterArcFace  K sub-centres per class, best one taken, ArcFace margin (Deng et al. 2020).
- Softmax   facenet's classifier: a dense layer with bias on the prelogits (Xavier weights, zero
            bias), no normalisation, no margin, no scale.
theta comes from arccos of a cosine clipped to [-1+eps, 1-eps] and sin from sqrt(max(0, 1-cos^2)),
so cos = +-1 never gives NaN values or gradients."""
from __future__ import annotations

import math

import keras
from keras import ops

EPS = 1e-7
DEFAULT_MARGINS = {"ArcFace": 0.5, "CosFace": 0.35, "SphereFace": 1.35, "AdaFace": 0.4, "AdaCos": 0.0,
                   "Combined": 0.5, "NormDense": 0.0, "CurricularFace": 0.5, "MagFace": 0.8, "SubCenterArcFace": 0.5,
                   "Softmax": 0.0}


@keras.saving.register_keras_serializable(package="recface")
class NormDense(keras.layers.Layer):
    """cos(theta_j) between the embedding and each class centre; plain (no margin) scaled logits."""

    def __init__(self, num_classes, scale=64.0, margin=0.0, regularizer=None, **kw):
        kw.setdefault("dtype", "float32")
        super().__init__(**kw)
        self.num_classes, self.scale, self.margin = int(num_classes), float(scale), float(margin)
        self.regularizer = keras.regularizers.get(regularizer)

    def build(self, input_shape):
        emb_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) else input_shape
        self.w = self.add_weight(name="centers", shape=(self.num_classes, int(emb_shape[-1])),
                                 initializer=keras.initializers.GlorotNormal(), regularizer=self.regularizer)

    def cosine(self, emb):
        emb = ops.cast(emb, "float32")
        e = emb / ops.maximum(ops.norm(emb, axis=1, keepdims=True), 1e-12)
        w = self.w / ops.maximum(ops.norm(self.w, axis=1, keepdims=True), 1e-12)
        return ops.clip(ops.matmul(e, ops.transpose(w)), -1.0, 1.0)

    def target_logit(self, cos, emb, training):
        return cos

    def call(self, inputs, training=None):
        emb, labels = inputs
        cos = self.cosine(emb)
        onehot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, dtype="float32")
        target = self.target_logit(cos, emb, training)
        return self.current_scale(cos, onehot, training) * (onehot * target + (1.0 - onehot) * cos)

    def current_scale(self, cos, onehot, training):
        return self.scale

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "scale": self.scale,
                "margin": self.margin, "regularizer": keras.regularizers.serialize(self.regularizer)}


def _theta(cos):
    return ops.arccos(ops.clip(cos, -1.0 + EPS, 1.0 - EPS))


def _sin(cos):
    return ops.sqrt(ops.clip(1.0 - cos * cos, EPS, 1.0))


@keras.saving.register_keras_serializable(package="recface")
class ArcFace(NormDense):
    def __init__(self, num_classes, scale=64.0, margin=0.5, easy_margin=False, **kw):
        super().__init__(num_classes, scale, margin, **kw)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cos, emb, training):
        m = self.margin
        phi = cos * math.cos(m) - _sin(cos) * math.sin(m)
        if self.easy_margin:
            return ops.where(cos > 0.0, phi, cos)
        # theta + m > pi  <=>  cos < cos(pi - m): use cos - m*sin(m), which keeps decreasing in theta
        return ops.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)

    def get_config(self):
        return {**super().get_config(), "easy_margin": self.easy_margin}


@keras.saving.register_keras_serializable(package="recface")
class CosFace(NormDense):
    def __init__(self, num_classes, scale=64.0, margin=0.35, **kw):
        super().__init__(num_classes, scale, margin, **kw)

    def target_logit(self, cos, emb, training):
        return cos - self.margin


@keras.saving.register_keras_serializable(package="recface")
class Combined(NormDense):
    """insightface's combined margin: cos(m1*theta + m2) - m3 (e.g. 1.0, 0.3, 0.2)."""

    def __init__(self, num_classes, scale=64.0, margin=0.5, margin1=1.0, margin3=0.0, **kw):
        super().__init__(num_classes, scale, margin, **kw)
        self.margin1, self.margin3 = float(margin1), float(margin3)

    def target_logit(self, cos, emb, training):
        t = self.margin1 * _theta(cos) + self.margin
        # beyond pi the cosine would turn upwards again: continue linearly below cos(pi) instead
        return ops.where(t < math.pi, ops.cos(t), -1.0 - (t - math.pi)) - self.margin3

    def get_config(self):
        return {**super().get_config(), "margin1": self.margin1, "margin3": self.margin3}


@keras.saving.register_keras_serializable(package="recface")
class SphereFace(NormDense):
    def __init__(self, num_classes, scale=64.0, margin=1.35, **kw):
        super().__init__(num_classes, scale, margin, **kw)

    def target_logit(self, cos, emb, training):
        mt = self.margin * _theta(cos)
        k = ops.floor(mt / math.pi)
        sign = 1.0 - 2.0 * ops.mod(k, 2.0)
        return sign * ops.cos(mt) - 2.0 * k


@keras.saving.register_keras_serializable(package="recface")
class AdaCos(NormDense):
    """No margin; the scale follows the batch: s = log(B_avg) / cos(min(pi/4, theta_med)),
    B_avg = mean over the batch of sum_{j != y} exp(s*cos_j), theta_med the median target angle.
    Starts at sqrt(2)*log(C-1) and is capped at ``scale``."""

    def __init__(self, num_classes, scale=64.0, margin=0.0, **kw):
        super().__init__(num_classes, scale, margin, **kw)

    def build(self, input_shape):
        super().build(input_shape)
        s0 = min(self.scale, math.sqrt(2.0) * math.log(max(self.num_classes - 1, 2)))
        self.s = self.add_weight(name="adaptive_scale", shape=(), initializer=keras.initializers.Constant(s0),
                                 trainable=False, aggregation="mean")

    def current_scale(self, cos, onehot, training):
        if training:
            s = ops.stop_gradient(self.s)
            b_avg = ops.mean(ops.sum((1.0 - onehot) * ops.exp(s * ops.stop_gradient(cos)), axis=1))
            theta_t = ops.sort(_theta(ops.sum(onehot * ops.stop_gradient(cos), axis=1)))
            n = ops.shape(theta_t)[0]
            med = theta_t[n // 2]
            new = ops.log(ops.maximum(b_avg, 1e-12)) / ops.cos(ops.minimum(math.pi / 4, med))
            self.s.assign(ops.clip(new, 1.0, self.scale))
        return self.s


@keras.saving.register_keras_serializable(package="recface")
class AdaFace(NormDense):
    """Margin adapts to image quality measured by the feature norm ||z||:
    ms = clip((||z|| - mu) / (sigma + eps) * h, -1, 1), target logit cos(theta + g_ang) - g_add with
    g_ang = -m*ms, g_add = m + m*ms; mu, sigma are the batch's norm statistics, smoothed with
    momentum ``t_alpha`` (0.01) into running values that are used for the margin."""

    def __init__(self, num_classes, scale=64.0, margin=0.4, h=0.333, t_alpha=0.01, **kw):
        super().__init__(num_classes, scale, margin, **kw)
        self.h, self.t_alpha = float(h), float(t_alpha)

    def build(self, input_shape):
        super().build(input_shape)
        self.batch_mean = self.add_weight(name="batch_mean", shape=(), initializer=keras.initializers.Constant(20.0),
                                          trainable=False, aggregation="mean")
        self.batch_std = self.add_weight(name="batch_std", shape=(), initializer=keras.initializers.Constant(100.0),
                                         trainable=False, aggregation="mean")

    def target_logit(self, cos, emb, training):
        norm = ops.clip(ops.stop_gradient(ops.norm(ops.cast(emb, "float32"), axis=1, keepdims=True)), 0.001, 100.0)
        mean, std = self.batch_mean, self.batch_std
        if training:
            n = ops.cast(ops.shape(norm)[0], "float32")
            bm = ops.mean(norm)
            bs = ops.sqrt(ops.sum(ops.square(norm - bm)) / ops.maximum(n - 1.0, 1.0))
            mean = self.t_alpha * bm + (1.0 - self.t_alpha) * self.batch_mean
            std = self.t_alpha * bs + (1.0 - self.t_alpha) * self.batch_std
            self.batch_mean.assign(mean)
            self.batch_std.assign(std)
        ms = ops.clip((norm - mean) / (std + 1e-3) * self.h, -1.0, 1.0)
        theta = ops.clip(_theta(cos) - self.margin * ms, EPS, math.pi - EPS)
        return ops.cos(theta) - (self.margin + self.margin * ms)

    def get_config(self):
        return {**super().get_config(), "h": self.h, "t_alpha": self.t_alpha}


@keras.saving.register_keras_serializable(package="recface")
class CurricularFace(NormDense):
    """CurricularFace (Huang et al. 2020): ArcFace's target logit cos(theta + m) (with ArcFace's
    fallback beyond pi), and every non-target cosine above cos(theta_y + m) (a hard example)
    becomes cos_j * (t + cos_j), where t is a running mean of the target cosine (momentum 0.01,
    starting at 0): easy examples first, hard ones weigh more as training goes on."""

    def __init__(self, num_classes, scale=64.0, margin=0.5, t_alpha=0.01, **kw):
        super().__init__(num_classes, scale, margin, **kw)
        self.t_alpha = float(t_alpha)

    def build(self, input_shape):
        super().build(input_shape)
        self.t = self.add_weight(name="t", shape=(), initializer="zeros", trainable=False, aggregation="mean")

    def call(self, inputs, training=None):
        emb, labels = inputs
        cos = self.cosine(emb)
        m = self.margin
        onehot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, dtype="float32")
        target = ops.sum(onehot * cos, axis=1, keepdims=True)
        cos_m = target * math.cos(m) - _sin(target) * math.sin(m)
        final_target = ops.where(target > math.cos(math.pi - m), cos_m, target - math.sin(math.pi - m) * m)
        t = self.t
        if training:
            t = self.t_alpha * ops.mean(ops.stop_gradient(target)) + (1.0 - self.t_alpha) * self.t
            self.t.assign(t)
        hard = (cos > cos_m) & (onehot < 0.5)
        others = ops.where(hard, cos * (ops.stop_gradient(t) + cos), cos)
        return self.scale * (onehot * final_target + (1.0 - onehot) * others)

    def get_config(self):
        return {**super().get_config(), "t_alpha": self.t_alpha}


@keras.saving.register_keras_serializable(package="recface")
class MagFace(NormDense):
    """MagFace (Meng et al. 2021): the margin grows with the feature magnitude a = ||z|| (clipped to
    [l_a, u_a]): m(a) = l_margin + (margin - l_margin) * (a - l_a) / (u_a - l_a); target logit
    cos(theta + m(a)) with ArcFace's fallback beyond pi; plus the regulariser
    lambda_g * mean(1/a + a/u_a^2) added to the loss (``add_loss``), which pulls confident faces
    to large magnitudes. Defaults as the paper's code: l_a 10, u_a 110, margins 0.45..0.8, lambda_g 35."""

    def __init__(self, num_classes, scale=64.0, margin=0.8, l_margin=0.45, l_a=10.0, u_a=110.0, lambda_g=35.0, **kw):
        super().__init__(num_classes, scale, margin, **kw)
        self.l_margin, self.l_a, self.u_a, self.lambda_g = float(l_margin), float(l_a), float(u_a), float(lambda_g)

    def magnitude(self, emb):
        return ops.clip(ops.norm(ops.cast(emb, "float32"), axis=1, keepdims=True), self.l_a, self.u_a)

    def target_logit(self, cos, emb, training):
        a = self.magnitude(emb)
        m = (self.margin - self.l_margin) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_margin
        phi = cos * ops.cos(m) - _sin(cos) * ops.sin(m)
        return ops.where(cos > ops.cos(math.pi - m), phi, cos - ops.sin(math.pi - m) * m)

    def call(self, inputs, training=None):
        if training and self.lambda_g:
            a = self.magnitude(inputs[0])
            self.add_loss(self.lambda_g * ops.mean(1.0 / a + a / (self.u_a ** 2)))
        return super().call(inputs, training)

    def get_config(self):
        return {**super().get_config(), "l_margin": self.l_margin, "l_a": self.l_a, "u_a": self.u_a,
                "lambda_g": self.lambda_g}


@keras.saving.register_keras_serializable(package="recface")
class SubCenterArcFace(ArcFace):
    """Sub-center ArcFace (Deng et al. 2020): K centres per class; a class's cosine is the best of
    its K (so a noisy face can gather at a non-dominant centre instead of pulling the dominant one),
    then ArcFace's margin. ``dominant`` finds each class's dominant centre and the faces more than
    ``max_angle`` degrees from it (the paper's clean-up: drop them, then train with K=1)."""

    def __init__(self, num_classes, scale=64.0, margin=0.5, k=3, easy_margin=False, **kw):
        self.k = int(k)
        super().__init__(num_classes, scale, margin, easy_margin=easy_margin, **kw)

    def build(self, input_shape):
        emb_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) else input_shape
        self.w = self.add_weight(name="centers", shape=(self.num_classes * self.k, int(emb_shape[-1])),
                                 initializer=keras.initializers.GlorotNormal(), regularizer=self.regularizer)

    def subcenter_cosines(self, emb):
        """(batch, classes, k): the cosine to every sub-centre (row c*k + j is class c's j-th)."""
        emb = ops.cast(emb, "float32")
        e = emb / ops.maximum(ops.norm(emb, axis=1, keepdims=True), 1e-12)
        w = self.w / ops.maximum(ops.norm(self.w, axis=1, keepdims=True), 1e-12)
        return ops.reshape(ops.clip(ops.matmul(e, ops.transpose(w)), -1.0, 1.0), (-1, self.num_classes, self.k))

    def cosine(self, emb):
        return ops.max(self.subcenter_cosines(emb), axis=2)

    def dominant(self, emb, labels, max_angle: float = 75.0):
        """(dominant centre per class (-1: no face), per face: within max_angle of its class's
        dominant centre) for embeddings ``emb`` with ``labels`` (NumPy)."""
        import numpy as np

        cs = np.asarray(self.subcenter_cosines(emb), np.float64)
        labels = np.asarray(labels).reshape(-1)
        own = cs[np.arange(len(labels)), labels]  # (n, k)
        best = own.argmax(1)
        dom = np.full(self.num_classes, -1)
        for c in np.unique(labels):
            dom[c] = np.bincount(best[labels == c], minlength=self.k).argmax()
        ang = np.degrees(np.arccos(np.clip(own[np.arange(len(labels)), dom[labels]], -1, 1)))
        return dom, ang <= max_angle

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="recface")
class Softmax(keras.layers.Layer):
    """facenet's ``Logits`` layer: ``prelogits @ kernel + bias`` (slim.fully_connected, no
    activation). ``scale`` and ``margin`` are accepted for the common head signature and must be
    left alone: neither exists here."""

    def __init__(self, num_classes, scale=64.0, margin=0.0, regularizer=None, **kw):
        kw.setdefault("dtype", "float32")
        super().__init__(**kw)
        if margin:
            from ..errors import ConfigError
            raise ConfigError(f"margin: the Softmax head has no margin (got {margin}); leave it unset")
        self.num_classes, self.scale, self.margin = int(num_classes), float(scale), 0.0
        self.regularizer = keras.regularizers.get(regularizer)

    def build(self, input_shape):
        emb_shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) else input_shape
        self.kernel = self.add_weight(name="kernel", shape=(int(emb_shape[-1]), self.num_classes),
                                      initializer=keras.initializers.GlorotUniform(), regularizer=self.regularizer)
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

    def call(self, inputs, training=None):
        emb = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return ops.matmul(ops.cast(emb, "float32"), self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "scale": self.scale,
                "regularizer": keras.regularizers.serialize(self.regularizer)}


HEADS = {"ArcFace": ArcFace, "CosFace": CosFace, "SphereFace": SphereFace, "AdaCos": AdaCos,
         "AdaFace": AdaFace, "Combined": Combined, "NormDense": NormDense, "CurricularFace": CurricularFace,
         "MagFace": MagFace, "SubCenterArcFace": SubCenterArcFace, "Softmax": Softmax}
