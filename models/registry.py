"""Every recommender module, imported once so that its ``@register_model`` runs.

Adding a model is adding its file and one import line here.
"""

from __future__ import annotations

from models import (  # noqa: F401  (imported for registration)
    ease,
    gat,
    gcn,
    graphfilter,
    graphsage,
    hybrid,
    itemknn,
    kgat,
    lightgcn,
    mf,
    ngcf,
    pinsage,
    socialgat,
    sociallgn,
    temporal_lightgcn,
)
from models.base import MODELS, Recommender, UnknownModelError, lookup_model

__all__ = ["MODELS", "Recommender", "UnknownModelError", "get_model"]


def get_model(name: str) -> type[Recommender]:
    """The recommender class registered under ``name``.

    Raises:
        UnknownModelError: naming the unknown model and listing the registered ones.
    """
    return lookup_model(name)
