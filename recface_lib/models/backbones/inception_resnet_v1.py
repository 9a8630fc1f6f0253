"""Inception-ResNet-v1 (Szegedy et al. 2016) as facenet trains it (``models/inception_resnet_v1.py``):

stem 3x3/2 32 valid, 3x3 32 valid, 3x3 64, max-pool 3/2, 1x1 80 valid, 3x3 192 valid, 3x3/2 256
valid; 5 x Block35 (residual scale 0.17), Reduction-A (k, l, m, n = 192, 192, 256, 384); 10 x Block17
(0.10); Reduction-B; 5 x Block8 (0.20) and one Block8 at scale 1.0 without ReLU; global average
pool, dropout, a bottleneck Dense to the embedding size and batch norm: the prelogits, which are
the embedding (facenet L2-normalises them only when it embeds).

As facenet's slim layers: every convolution and the bottleneck are followed by batch norm with a
shift and no scale (decay 0.995, epsilon 1e-3) and ReLU (the bottleneck: none); the 1x1 that closes a
residual branch has a bias and no batch norm. Xavier (Glorot uniform) initialisation. 22,779,312
trainable parameters at 128-d, 23,467,824 at 512-d (any input size: nothing depends on it), which
the tests check. The smallest input is 75 pixels (a 1x1 map after Reduction-B); facenet trains at
160."""
from __future__ import annotations

import keras
from keras import layers

from ...errors import ConfigError
from .layers import inputs

BN = dict(momentum=0.995, epsilon=1e-3, scale=False)  # slim.batch_norm as facenet sets it
MIN_INPUT = 75


def conv(x, filters, kernel, strides=1, padding="same", name=""):
    x = layers.Conv2D(filters, kernel, strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def residual(x, branches, scale, relu, name):
    """The Inception-ResNet rule: x + scale * (1x1 conv with bias of the branches' concatenation)."""
    mixed = layers.Concatenate(name=f"{name}_concat")(branches) if len(branches) > 1 else branches[0]
    up = layers.Conv2D(x.shape[-1], 1, use_bias=True, name=f"{name}_up")(mixed)
    x = layers.Add(name=f"{name}_add")([x, layers.Rescaling(scale, name=f"{name}_scale")(up)])
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def block35(x, scale, name, relu=True):
    b0 = conv(x, 32, 1, name=f"{name}_b0")
    b1 = conv(conv(x, 32, 1, name=f"{name}_b1a"), 32, 3, name=f"{name}_b1b")
    b2 = conv(conv(conv(x, 32, 1, name=f"{name}_b2a"), 32, 3, name=f"{name}_b2b"), 32, 3, name=f"{name}_b2c")
    return residual(x, [b0, b1, b2], scale, relu, name)


def block17(x, scale, name, relu=True):
    b0 = conv(x, 128, 1, name=f"{name}_b0")
    b1 = conv(conv(conv(x, 128, 1, name=f"{name}_b1a"), 128, (1, 7), name=f"{name}_b1b"), 128, (7, 1), name=f"{name}_b1c")
    return residual(x, [b0, b1], scale, relu, name)


def block8(x, scale, name, relu=True):
    b0 = conv(x, 192, 1, name=f"{name}_b0")
    b1 = conv(conv(conv(x, 192, 1, name=f"{name}_b1a"), 192, (1, 3), name=f"{name}_b1b"), 192, (3, 1), name=f"{name}_b1c")
    return residual(x, [b0, b1], scale, relu, name)


def reduction_a(x, k, l, m, n, name="mixed_6a"):
    b0 = conv(x, n, 3, 2, "valid", name=f"{name}_b0")
    b1 = conv(conv(conv(x, k, 1, name=f"{name}_b1a"), l, 3, name=f"{name}_b1b"), m, 3, 2, "valid", name=f"{name}_b1c")
    b2 = layers.MaxPooling2D(3, 2, padding="valid", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2])


def reduction_b(x, name="mixed_7a"):
    b0 = conv(conv(x, 256, 1, name=f"{name}_b0a"), 384, 3, 2, "valid", name=f"{name}_b0b")
    b1 = conv(conv(x, 256, 1, name=f"{name}_b1a"), 256, 3, 2, "valid", name=f"{name}_b1b")
    b2 = conv(conv(conv(x, 256, 1, name=f"{name}_b2a"), 256, 3, name=f"{name}_b2b"), 256, 3, 2, "valid",
              name=f"{name}_b2c")
    b3 = layers.MaxPooling2D(3, 2, padding="valid", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2, b3])


def InceptionResNetV1(input_size=160, embd_shape=128, dropout=0.0, name="InceptionResNetV1"):
    """``dropout``: the rate before the bottleneck (facenet's ``keep_probability`` is 1 - rate)."""
    if input_size < MIN_INPUT:
        raise ConfigError(f"input_size: InceptionResNetV1 needs at least {MIN_INPUT} pixels (facenet trains at "
                          f"160); got {input_size}")
    img = inputs(input_size)
    x = conv(img, 32, 3, 2, "valid", name="conv1a")
    x = conv(x, 32, 3, 1, "valid", name="conv2a")
    x = conv(x, 64, 3, name="conv2b")
    x = layers.MaxPooling2D(3, 2, padding="valid", name="pool3a")(x)
    x = conv(x, 80, 1, 1, "valid", name="conv3b")
    x = conv(x, 192, 3, 1, "valid", name="conv4a")
    x = conv(x, 256, 3, 2, "valid", name="conv4b")
    for i in range(5):
        x = block35(x, 0.17, f"block35_{i + 1}")
    x = reduction_a(x, 192, 192, 256, 384)
    for i in range(10):
        x = block17(x, 0.10, f"block17_{i + 1}")
    x = reduction_b(x)
    for i in range(5):
        x = block8(x, 0.20, f"block8_{i + 1}")
    x = block8(x, 1.0, "block8_6", relu=False)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(embd_shape, use_bias=False, name="bottleneck")(x)
    x = layers.BatchNormalization(**BN, name="bottleneck_bn")(x)
    return keras.Model(img, layers.Activation("linear", dtype="float32", name="embedding")(x), name=name)
