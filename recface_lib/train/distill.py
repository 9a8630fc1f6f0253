"""Distillation's rules: which data and plan settings a run with (or without) a teacher accepts.
The loss itself is the ``distill`` term (``train.terms.distill``), beside the margin head's
(``head_weight``) in the weighted objective."""
from __future__ import annotations

DISTILL_LOSSES = ("cosine", "mse")


def check_distillation(cfg, meta: dict, stages) -> None:
    """The rules distillation needs: unlabelled data trains only by distillation and then gives the
    head no weight; a head weight needs a labelled dataset."""
    from ..errors import ConfigError

    labelled = meta.get("labelled", True)
    weights = [st.weights.get("head_weight", cfg.head_weight) for st in stages]
    if not cfg.teacher:
        if not labelled:
            raise ConfigError(f"{cfg.dataset}: unlabelled data (no identities) trains only by distillation: "
                              "give teacher (a `recface teach` output)")
        if any("distill_weight" in st.weights for st in stages):
            raise ConfigError("plan: distill_weight is a distillation setting: give teacher too")
        from .terms import head_carries_objective

        if head_carries_objective(cfg) and any("head_weight" in st.weights for st in stages):
            raise ConfigError("plan: head_weight weighs the margin head beside a teacher or a triplet loss: "
                              "give teacher or triplet_weight too")
        return
    if not labelled and any(w > 0 for w in weights):
        raise ConfigError(f"{cfg.dataset}: unlabelled data has no identities for the margin head: head_weight must be 0")


__all__ = ["DISTILL_LOSSES", "check_distillation"]
