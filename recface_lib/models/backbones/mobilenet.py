"""MobileNetV2 (keras.applications body, random init) with the face embedding block on top."""
from __future__ import annotations

import keras

from .layers import embedding_head, inputs


def MobileNetV2(input_size=112, embd_shape=512, dropout=0.0, name="MobileNetV2"):
    img = inputs(input_size)
    body = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), include_top=False,
                                          weights=None, alpha=1.0)
    return keras.Model(img, embedding_head(body(img), embd_shape, dropout), name=name)
