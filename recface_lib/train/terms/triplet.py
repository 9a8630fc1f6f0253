"""Triplet loss on the batch's embeddings (#24, facenet's train_tripletloss and
facenet-pytorch-glint360k): one of ``train.triplet_losses`` chosen by ``triplet_loss``, with
``triplet_margin``, ``triplet_squared`` and ``triplet_soft``; weight ``triplet_weight``. Its triplets
come from the batch, so it is meant for P x K batches (``sampler: pk``); under a distribution
strategy each replica's part of the batch (whole identities: the sampler checks it) gives its own
triplets. While it is in use the margin head weighs ``head_weight`` (0 by default: triplet loss
alone), not 1. Logged: the active fraction and the valid triplets (anchors, pairs) per batch."""
from __future__ import annotations

from . import Term, register


@register
class TripletTerm(Term):
    name = "triplet"
    weight_field = "triplet_weight"

    @classmethod
    def replaces_head(cls, cfg) -> bool:
        return float(cfg.triplet_weight) > 0

    def build(self, backbone, replicas: int = 1) -> None:
        import keras

        from ..triplet_losses import triplet_loss

        c = self.cfg
        self.fn = triplet_loss(c.triplet_loss, margin=c.triplet_margin, squared=c.triplet_squared, soft=c.triplet_soft)
        self.active_frac = keras.metrics.Mean(name="triplet_active")
        self.valid = keras.metrics.Mean(name="triplet_valid")

    def loss(self, emb, labels, teacher, outputs, training):
        value, figs = self.fn(emb, labels)
        self.active_frac.update_state(figs["active"])
        self.valid.update_state(figs["valid"])
        return value

    def metrics(self) -> list:
        return [self.active_frac, self.valid]

    def label(self) -> str:
        return f"+triplet({self.cfg.triplet_loss})"
