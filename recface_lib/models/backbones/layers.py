"""Building blocks shared by the backbone files (Keras 3 functional API)."""
from __future__ import annotations

import keras
from keras import layers

BN = dict(momentum=0.9, epsilon=1e-5)  # insightface's batch-norm settings


def conv_bn(x, filters, kernel=3, strides=1, act="prelu", name="", groups=1):
    x = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False, groups=groups, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return activation(x, act, name)


def dw_bn(x, kernel=3, strides=1, act="prelu", name="", padding="same"):
    x = layers.DepthwiseConv2D(kernel, strides, padding=padding, use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return activation(x, act, name)


def activation(x, act, name):
    if act is None:
        return x
    if act == "prelu":
        return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)
    return layers.Activation(act, name=f"{name}_{act}")(x)


def embedding_head(x, embd_shape: int, dropout: float = 0.0, name: str = "embedding"):
    """insightface's output block 'E': BN - Dropout - Flatten - Dense - BN, returned as float32."""
    x = layers.BatchNormalization(**BN, name=f"{name}_bn0")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    return dense_bn(x, embd_shape, name)


def dense_bn(x, embd_shape: int, name: str = "embedding"):
    x = layers.Dense(embd_shape, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(**BN, scale=False, name=f"{name}_bn")(x)
    return layers.Activation("linear", dtype="float32", name=name)(x)


def inputs(input_size: int):
    return keras.Input((input_size, input_size, 3), name="image")
