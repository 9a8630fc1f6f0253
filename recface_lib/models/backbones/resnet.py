"""Face ResNets in insightface's IResNet form: a 3x3/1 stem, four stages of
BN-conv3x3-BN-PReLU-conv3x3(stride)-BN blocks with a projection shortcut where the shape changes,
and the output block BN-Dropout-Flatten-Dense-BN."""
from __future__ import annotations

import keras
from keras import layers

from .layers import BN, conv_bn, embedding_head, inputs

DEPTHS = {"ResNet34": (3, 4, 6, 3), "ResNet34R": (3, 4, 6, 3), "ResNet50": (3, 4, 14, 3),
          "ResNet100": (3, 13, 30, 3), "ResNet101": (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)


def block(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides, use_bias=False, name=f"{name}_sc_conv")(x)
        shortcut = layers.BatchNormalization(**BN, name=f"{name}_sc_bn")(shortcut)
    y = layers.BatchNormalization(**BN, name=f"{name}_bn0")(x)
    y = conv_bn(y, filters, 3, 1, name=f"{name}_c1")
    y = layers.Conv2D(filters, 3, strides, padding="same", use_bias=False, name=f"{name}_c2_conv")(y)
    y = layers.BatchNormalization(**BN, name=f"{name}_c2_bn")(y)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def IResNet(depths, widths=WIDTHS, input_size=112, embd_shape=512, dropout=0.0, name="IResNet"):
    img = inputs(input_size)
    x = conv_bn(img, widths[0], 3, 1, name="stem")
    for s, (n, w) in enumerate(zip(depths, widths)):
        for b in range(n):
            x = block(x, w, 2 if b == 0 else 1, f"s{s}b{b}")
    return keras.Model(img, embedding_head(x, embd_shape, dropout), name=name)


def _make(net):
    half = net.endswith("R")

    def fn(input_size=112, embd_shape=512, dropout=0.0, name=net):
        widths = tuple(w // 2 for w in WIDTHS) if half else WIDTHS
        return IResNet(DEPTHS[net], widths, input_size, embd_shape, dropout, name)
    fn.__name__ = net
    return fn


ResNet34, ResNet34R, ResNet50, ResNet101 = (_make(n) for n in ("ResNet34", "ResNet34R", "ResNet50", "ResNet101"))
