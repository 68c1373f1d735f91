"""One recommender per file behind the :class:`models.base.Recommender` interface.

``from models import get_model`` gives the registry with every model module loaded (``models/registry.py``).
"""

from models.registry import MODELS, Recommender, UnknownModelError, get_model

__all__ = ["MODELS", "Recommender", "UnknownModelError", "get_model"]
