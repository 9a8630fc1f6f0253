"""One embedder interface for every model recface can score: ``embed(images, flip) ->
L2-normalised vectors`` and ``embed_items(items) -> (embeddings, mirrored embeddings, stats)``.

* ``dlib_resnet`` (:mod:`.dlib_resnet`): dlib's ResNet descriptor with dlib's own detection chain;
* a training run folder or an export bundle (:mod:`.model`): Keras or onnxruntime, fed exactly as
  the model's preprocessing contract says (detector, alignment, size, normalisation).

``make_embedder(spec)`` builds one from a name or path; ``embed_parallel`` runs it in worker
processes with a progress bar. Flip TTA is combined in one place
(``protocol.verification.flip_sum``)."""
from __future__ import annotations

from .base import Embedder
from .factory import embed_parallel, make_embedder, model_identity

__all__ = ["Embedder", "embed_parallel", "make_embedder", "model_identity"]
