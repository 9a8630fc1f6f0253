"""A Keras embedding model as a function: list of RGB uint8 images -> (B, D) float32 embeddings,
resized to the model's input and normalised exactly as in training."""
from __future__ import annotations

import numpy as np

from ..data.input_pipeline import NORMALIZATIONS, normalize
from ..errors import ConfigError


def preprocess(images, input_size: int, normalization: str) -> np.ndarray:
    """RGB uint8 images -> float32 batch in the model's input range (numpy twin of the tf.data path)."""
    import cv2

    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization: unknown {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    out = np.empty((len(images), input_size, input_size, 3), np.float32)
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        if im.shape[:2] != (input_size, input_size):
            im = cv2.resize(im, (input_size, input_size), interpolation=cv2.INTER_AREA)
        out[i] = im
    return normalize(out / 255.0, normalization).astype(np.float32)


class KerasEmbedder:
    def __init__(self, model, input_size: int = 112, normalization: str = "-1:1"):
        self.model, self.input_size, self.normalization = model, int(input_size), normalization

    def __call__(self, images) -> np.ndarray:
        x = preprocess(images, self.input_size, self.normalization)
        return np.asarray(self.model(x, training=False), np.float32)
