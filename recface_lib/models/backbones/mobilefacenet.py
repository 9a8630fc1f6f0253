"""MobileFaceNet (Chen et al. 2018) and the recface guide's MobileFaceNetV2.

Both: conv 3x3/2 64, depthwise 3x3 64, inverted-residual stages 64 / 128 / 128 (each a stride-2
block followed by 4 / 6 / 2 residual blocks), 1x1 conv 512, a linear global depthwise conv (GDC)
over the final 7x7 map. MobileFaceNet ends in a linear 1x1 conv to the embedding; MobileFaceNetV2
in Flatten - Dense - BN (about 1.2M parameters at 512-d). TestMobileFaceNet is MobileFaceNetV2's
blocks at a sliver of its size, for smoke runs and the tests of training mechanics (resume, EMA,
kill, NaN guard), as timm's ``test_*`` models are: every layer kind of the real network (conv,
depthwise, batch norm, PReLU, residual add, GDC, Dense-BN), a fifth of its trace time; not for
accuracy."""
from __future__ import annotations

import keras
from keras import layers

from .layers import BN, conv_bn, dense_bn, dw_bn, inputs

STAGES = ((64, 2, 4), (128, 4, 6), (128, 4, 2))  # (channels, expansion of the stride-2 block, residual blocks)
TEST_STAGES = ((16, 2, 1), (32, 2, 1))


def bottleneck(x, out_ch, expansion, strides, name):
    inp = x
    x = conv_bn(x, x.shape[-1] * expansion, 1, name=f"{name}_expand")
    x = dw_bn(x, 3, strides, name=f"{name}_dw")
    x = conv_bn(x, out_ch, 1, act=None, name=f"{name}_project")
    if strides == 1 and inp.shape[-1] == out_ch:
        x = layers.Add(name=f"{name}_add")([inp, x])
    return x


def _body(input_size, stem=64, stages=STAGES, top=512):
    img = inputs(input_size)
    x = conv_bn(img, stem, 3, 2, name="stem")
    x = dw_bn(x, 3, 1, name="stem_dw")
    for s, (ch, t, n) in enumerate(stages):
        x = bottleneck(x, ch, t, 2, f"s{s}b0")
        for b in range(n):
            x = bottleneck(x, ch, 2, 1, f"s{s}b{b + 1}")
    x = conv_bn(x, top, 1, name=f"conv_{top}")
    k = x.shape[1]  # 7 for 112 input
    x = layers.DepthwiseConv2D(k, 1, padding="valid", use_bias=False, name="gdc_dw")(x)
    x = layers.BatchNormalization(**BN, name="gdc_bn")(x)  # linear: no activation
    return img, x


def MobileFaceNetV2(input_size=112, embd_shape=512, dropout=0.0, name="MobileFaceNetV2"):
    img, x = _body(input_size)
    x = layers.Flatten(name="gdc_flatten")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
    return keras.Model(img, dense_bn(x, embd_shape), name=name)


def MobileFaceNet(input_size=112, embd_shape=128, dropout=0.0, name="MobileFaceNet"):
    img, x = _body(input_size)
    x = layers.Conv2D(embd_shape, 1, use_bias=False, name="linear_conv")(x)
    x = layers.BatchNormalization(**BN, name="linear_bn")(x)
    x = layers.Flatten(name="embedding_flatten")(x)
    return keras.Model(img, layers.Activation("linear", dtype="float32", name="embedding")(x), name=name)


def TestMobileFaceNet(input_size=112, embd_shape=512, dropout=0.0, name="TestMobileFaceNet"):
    img, x = _body(input_size, stem=16, stages=TEST_STAGES, top=64)
    x = layers.Flatten(name="gdc_flatten")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
    return keras.Model(img, dense_bn(x, embd_shape), name=name)
