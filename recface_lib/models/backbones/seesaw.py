"""Seesaw-shuffleFaceNet style network: ShuffleNet-V2 units (channel split, depthwise conv,
channel shuffle) with swish and squeeze-excitation on plain global average pooling, ending in a
linear global depthwise conv and the Dense-BN embedding."""
from __future__ import annotations

import keras
from keras import layers, ops

from .layers import BN, conv_bn, dense_bn, dw_bn, inputs

STAGES = ((128, 4), (256, 8), (512, 4))  # (channels, units); the first unit of a stage has stride 2


@keras.saving.register_keras_serializable(package="recface")
class ChannelShuffle(layers.Layer):
    def __init__(self, groups=2, **kw):
        super().__init__(**kw)
        self.groups = groups

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        x = ops.reshape(x, (-1, h, w, self.groups, c // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, h, w, c))

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="recface")
class ChannelSlice(layers.Layer):
    """x[..., start:stop] as a serialisable layer (a Lambda would not load in safe mode)."""

    def __init__(self, start, stop, **kw):
        super().__init__(**kw)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start:self.stop]

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def squeeze_excite(x, name, ratio=4):
    c = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Conv2D(max(8, c // ratio), 1, activation="swish", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(c, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se")([x, s])


def unit(x, out_ch, strides, name):
    if strides == 1:
        half = x.shape[-1] // 2
        keep = ChannelSlice(0, half, name=f"{name}_keep")(x)
        y = ChannelSlice(half, x.shape[-1], name=f"{name}_split")(x)
        branch_ch = out_ch - half
    else:
        keep = dw_bn(x, 3, 2, act=None, name=f"{name}_sc_dw")
        keep = conv_bn(keep, out_ch // 2, 1, act="swish", name=f"{name}_sc_pw")
        y, branch_ch = x, out_ch - out_ch // 2
    y = conv_bn(y, branch_ch, 1, act="swish", name=f"{name}_pw1")
    y = dw_bn(y, 3, strides, act=None, name=f"{name}_dw")
    y = conv_bn(y, branch_ch, 1, act="swish", name=f"{name}_pw2")
    y = squeeze_excite(y, name)
    x = layers.Concatenate(name=f"{name}_cat")([keep, y])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def Seesaw_shuffleFaceNet(input_size=112, embd_shape=512, dropout=0.0, name="Seesaw_shuffleFaceNet"):
    img = inputs(input_size)
    x = conv_bn(img, 64, 3, 2, act="swish", name="stem")
    x = dw_bn(x, 3, 1, act="swish", name="stem_dw")
    for s, (ch, n) in enumerate(STAGES):
        for u in range(n):
            x = unit(x, ch, 2 if u == 0 else 1, f"s{s}u{u}")
    x = conv_bn(x, 512, 1, act="swish", name="conv_512")
    x = layers.DepthwiseConv2D(x.shape[1], 1, padding="valid", use_bias=False, name="gdc_dw")(x)
    x = layers.BatchNormalization(**BN, name="gdc_bn")(x)
    x = layers.Flatten(name="gdc_flatten")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
    return keras.Model(img, dense_bn(x, embd_shape), name=name)
