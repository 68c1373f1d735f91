"""The canonical raw tables every source is read into, before validation and integer indexing.

Every loader returns :class:`RawTables`; ``data_checks.validate`` checks them against the contract, and
:func:`tasks.ingest.dataset.build_dataset` turns them into the integer-indexed :class:`Dataset`.

Column conventions (raw ids are kept as read, so that errors and outputs speak the user's ids):

* ``interactions``: ``user``, ``item`` (integral ids), optional ``rating`` (float), optional ``timestamp``
  (int, unix seconds), optional ``split`` (``"train"``/``"valid"``/``"test"``) for sources with a fixed split.
* ``social``: ``user``, ``friend`` (ids in the same space as ``interactions.user``); direction is ignored.
* ``kg``: ``head``, ``relation``, ``tail`` as strings. When ``item_links`` is given (columns ``item``,
  ``entity``) it maps raw item ids to KG entity ids; otherwise a head or tail equal to ``str(item id)`` of a
  known item *is* that item.
* ``user_features`` / ``item_features``: one row per raw id, the id in column ``user`` / ``item``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True, eq=False)
class RawTables:
    """All tables of one source, as read from disk, with raw ids.

    Attributes:
        name: The dataset's name (``synthetic``, ``movielens-100k``, ...).
        interactions: The user-item interactions (see module docstring for columns).
        social: Optional user-user edges.
        kg: Optional knowledge-graph triples.
        item_links: Optional map from raw item id to KG entity id.
        user_features: Optional per-user features.
        item_features: Optional per-item features.
        rating_scale: Inclusive (low, high) bounds of ``rating`` when the source declares a scale.
        files: Table name -> path it was read from, so that contract failures can name the file.
    """

    name: str
    interactions: pd.DataFrame
    social: pd.DataFrame | None = None
    kg: pd.DataFrame | None = None
    item_links: pd.DataFrame | None = None
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    rating_scale: tuple[float, float] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables that are present, by name."""
        out: dict[str, pd.DataFrame] = {"interactions": self.interactions}
        for name in ("social", "kg", "item_links", "user_features", "item_features"):
            table = getattr(self, name)
            if table is not None:
                out[name] = table
        return out
