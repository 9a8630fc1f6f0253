"""Inception-ResNet-v2 (Szegedy et al. 2016; facenet's ``models/inception_resnet_v2.py``, one of
facenet-pytorch-glint360k's choices): the keras.applications body at random initialisation (no
weights are downloaded): stem, 10 x Block35 (residual scale 0.17), Reduction-A, 20 x Block17
(0.10), Reduction-B, 10 x Block8 (0.20, the last at 1.0 without ReLU), the 1x1 conv to 1536; then
facenet's embedding: global average pool, dropout, a bottleneck Dense without bias and batch norm
(the prelogits). Its valid-padded stem and reductions need at least 75 pixels (a 1x1 map before the
pool; keras.applications' own floor); any size from 75 up builds, the parameter count does not
depend on it (54,336,736 in the body; the bottleneck and its batch norm add 786,432 + 1,536 at 512-d)."""
from __future__ import annotations

import keras
from keras import layers

from ...errors import ConfigError
from .inception_resnet_v1 import BN
from .layers import inputs

MIN_INPUT = 75


def InceptionResNetV2(input_size=160, embd_shape=512, dropout=0.0, name="InceptionResNetV2"):
    """``dropout``: the rate before the bottleneck (facenet's ``keep_probability`` is 1 - rate)."""
    if input_size < MIN_INPUT:
        raise ConfigError(f"input_size: InceptionResNetV2 needs at least {MIN_INPUT} pixels (its stem and reductions "
                          f"are valid-padded); got {input_size}")
    img = inputs(input_size)
    body = keras.applications.InceptionResNetV2(input_shape=(input_size, input_size, 3), include_top=False,
                                                weights=None)
    x = layers.GlobalAveragePooling2D(name="avgpool")(body(img))
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(embd_shape, use_bias=False, name="bottleneck")(x)
    x = layers.BatchNormalization(**BN, name="bottleneck_bn")(x)
    return keras.Model(img, layers.Activation("linear", dtype="float32", name="embedding")(x), name=name)
