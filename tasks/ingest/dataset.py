"""The integer-indexed, canonical in-memory dataset that every later step consumes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from tasks.features import EncodedFeatures, encode_features, encoded_digest
from tasks.ingest.errors import DataFormatError
from tasks.ingest.tables import RawTables

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset in canonical form: contiguous integer ids, raw-id maps kept for reporting.

    Users are ``0..num_users-1`` and items ``0..num_items-1``. KG entities are ``0..num_entities-1`` where
    entity ``i < num_items`` *is* item ``i``; other entities follow.

    Attributes:
        name: Source name.
        user: Interaction users, int64 ``[N]``.
        item: Interaction items, int64 ``[N]``.
        rating: Ratings or weights, float32 ``[N]``, or ``None``.
        timestamp: Unix seconds, int64 ``[N]``, or ``None``.
        user_ids: Raw id of each user, ``[num_users]``.
        item_ids: Raw id of each item, ``[num_items]``.
        social: Undirected friendships as int64 ``[S, 2]`` with ``u < v``, unique, or ``None``.
        kg: Triples (head entity, relation, tail entity) as int64 ``[T, 3]``, or ``None``.
        relation_names: Name of each relation id.
        entity_ids: Raw id of each entity, ``[num_entities]`` (the first ``num_items`` are item ids).
        user_features: Features indexed by internal user id, or ``None``.
        item_features: Features indexed by internal item id, or ``None``.
        fixed_split: Per-interaction part (0 train, 1 valid, 2 test) from the source, int8 ``[N]``, or None.
    """

    name: str
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    timestamp: np.ndarray | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    social: np.ndarray | None = None
    kg: np.ndarray | None = None
    relation_names: tuple[str, ...] = ()
    entity_ids: np.ndarray | None = None
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    fixed_split: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        """Number of interactions."""
        return len(self.user)

    @property
    def num_entities(self) -> int:
        """Number of KG entities, items included (``num_items`` when there is no KG)."""
        return self.num_items if self.entity_ids is None else len(self.entity_ids)

    @property
    def num_relations(self) -> int:
        """Number of KG relation types (without inverses)."""
        return len(self.relation_names)

    @cached_property
    def encoded_user_features(self) -> EncodedFeatures | None:
        """:attr:`user_features` encoded once (:func:`tasks.features.encode_features`), ``[U, F_u]``."""
        return encode_features(self.user_features, self.num_users)

    @cached_property
    def encoded_item_features(self) -> EncodedFeatures | None:
        """:attr:`item_features` encoded once (:func:`tasks.features.encode_features`), ``[I, F_i]``."""
        return encode_features(self.item_features, self.num_items)

    @cached_property
    def fingerprint(self) -> str:
        """A content hash (sha256, hex, first 16 chars) of every table, for lineage and cache keys.

        The features enter as their encodings (what the models read), so a change of any feature value,
        or of how features are encoded, changes the fingerprint.
        """
        h = hashlib.sha256()
        h.update(self.name.encode())
        for arr in (
            self.user,
            self.item,
            self.rating,
            self.timestamp,
            self.social,
            self.kg,
            self.fixed_split,
        ):
            h.update(b"|")
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        for ids in (self.user_ids, self.item_ids, self.entity_ids):
            h.update(b"|")
            if ids is not None:
                h.update("\x1f".join(map(str, ids)).encode())
        h.update("\x1f".join(self.relation_names).encode())
        for encoded in (self.encoded_user_features, self.encoded_item_features):
            h.update(b"|")
            h.update(encoded_digest(encoded))
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, int | str]:
        """Counts for reports and ``gnnrec data stats``."""
        return {
            "dataset": self.name,
            "fingerprint": self.fingerprint,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "social_edges": 0 if self.social is None else len(self.social),
            "kg_triples": 0 if self.kg is None else len(self.kg),
            "kg_relations": self.num_relations,
            "kg_entities": self.num_entities if self.kg is not None else 0,
            "user_features": 0 if self.encoded_user_features is None else self.encoded_user_features.width,
            "item_features": 0 if self.encoded_item_features is None else self.encoded_item_features.width,
        }


def _k_core(inter: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` interactions until none is left."""
    while True:
        ucount = inter.groupby("user")["item"].transform("size")
        icount = inter.groupby("item")["user"].transform("size")
        keep = (ucount >= k) & (icount >= k)
        if bool(keep.all()):
            return inter
        inter = inter[keep]


def build_dataset(
    raw: RawTables,
    *,
    min_rating: float | None = None,
    k_core: int = 0,
    aggregate_duplicates: bool = False,
) -> Dataset:
    """Turn validated raw tables into a :class:`Dataset` with contiguous integer ids.

    Args:
        raw: Tables from a loader, already checked by ``data_checks.validate``.
        min_rating: Keep only interactions with ``rating >= min_rating`` (implicit feedback); ``None``
            keeps all.
        k_core: Keep the k-core (every user and item with at least ``k_core`` interactions); 0 disables.
        aggregate_duplicates: Merge repeated (user, item) rows, summing ratings/weights and keeping the
            latest timestamp. Without it duplicates are an error (the contract rejects them earlier).

    Returns:
        The indexed dataset. Users and items are numbered in sorted raw-id order, so the numbering is
        deterministic. A user or item listed in a feature table but absent from every raw interaction (a
        catalogue item nobody has interacted with yet, a registered user without activity) keeps an id,
        so that models can score it from its features; ids that ``min_rating`` or ``k_core`` removed stay
        removed. Social edges and KG triples that mention users or items removed by filtering are dropped;
        KG entities that are not items are numbered after the items.
    """
    inter = raw.interactions
    for col in ("user", "item"):
        if col not in inter.columns:
            raise DataFormatError(
                f"The interactions table has no '{col}' column (columns: {list(inter.columns)})."
            )
    if aggregate_duplicates and inter.duplicated(["user", "item"]).any():
        agg: dict[str, str] = {}
        if "rating" in inter.columns:
            agg["rating"] = "sum"
        if "timestamp" in inter.columns:
            agg["timestamp"] = "max"
        if "split" in inter.columns:
            agg["split"] = "first"
        if agg:
            inter = inter.groupby(["user", "item"], as_index=False, sort=False).agg(agg)
        else:
            inter = inter.drop_duplicates(["user", "item"])
    if min_rating is not None:
        if "rating" not in inter.columns:
            raise DataFormatError(
                f"min_rating={min_rating} was asked for, but dataset '{raw.name}' has no ratings."
            )
        inter = inter[inter["rating"] >= min_rating]
    if k_core > 0:
        inter = _k_core(inter, k_core)
    if len(inter) == 0:
        raise DataFormatError(
            f"Dataset '{raw.name}' has no interactions left after filtering "
            f"(min_rating={min_rating}, k_core={k_core}). Lower the thresholds."
        )

    user_ids = _with_featured_ids(inter["user"], raw.interactions["user"], raw.user_features, "user")
    item_ids = _with_featured_ids(inter["item"], raw.interactions["item"], raw.item_features, "item")
    user = np.searchsorted(user_ids, inter["user"].to_numpy())
    item = np.searchsorted(item_ids, inter["item"].to_numpy())
    rating = inter["rating"].to_numpy(np.float32) if "rating" in inter.columns else None
    timestamp = inter["timestamp"].to_numpy(np.int64) if "timestamp" in inter.columns else None
    fixed_split = None
    if "split" in inter.columns:
        fixed_split = inter["split"].map(SPLIT_CODES).to_numpy(np.int8)

    user_index = pd.Index(user_ids)
    item_index = pd.Index(item_ids)

    social = None
    if raw.social is not None and len(raw.social):
        a = user_index.get_indexer(raw.social["user"].to_numpy())
        b = user_index.get_indexer(raw.social["friend"].to_numpy())
        ok = (a >= 0) & (b >= 0) & (a != b)
        pairs = np.stack([np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])], axis=1).astype(np.int64)
        social = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)

    kg = None
    relation_names: tuple[str, ...] = ()
    entity_ids = None
    if raw.kg is not None and len(raw.kg):
        kg, relation_names, entity_ids = _index_kg(raw, item_ids)

    user_features = _index_features(raw.user_features, "user", user_index)
    item_features = _index_features(raw.item_features, "item", item_index)

    return Dataset(
        name=raw.name,
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        rating=rating,
        timestamp=timestamp,
        user_ids=user_ids,
        item_ids=item_ids,
        social=social,
        kg=kg,
        relation_names=relation_names,
        entity_ids=entity_ids,
        user_features=user_features,
        item_features=item_features,
        fixed_split=fixed_split,
    )


def _index_kg(raw: RawTables, item_ids: np.ndarray) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Number KG entities so that entity ``i`` is item ``i``; other entities follow in sorted order."""
    assert raw.kg is not None
    kg = raw.kg
    heads = kg["head"].astype(str)
    tails = kg["tail"].astype(str)
    # Map entity id (string) -> internal item index. pandas' hash-based Index lookups are used throughout:
    # numpy's sort-based set routines on string arrays are an order of magnitude slower here.
    if raw.item_links is not None:
        links = raw.item_links
        link_items = pd.Index(item_ids).get_indexer(links["item"].to_numpy())
        ok = link_items >= 0
        linked = pd.Series(link_items[ok], index=links["entity"].astype(str).to_numpy()[ok])
        linked = linked[~linked.index.duplicated(keep="first")]
    else:
        linked = pd.Series(np.arange(len(item_ids)), index=[str(x) for x in item_ids])
    num_items = len(item_ids)
    mentioned = pd.Index(pd.unique(pd.concat([heads, tails], ignore_index=True)))
    others = mentioned.difference(linked.index).sort_values()
    entity_index = pd.Index(linked.index.append(others))
    entity_number = np.concatenate(
        [linked.to_numpy(np.int64), num_items + np.arange(len(others), dtype=np.int64)]
    )
    h = entity_number[entity_index.get_indexer(heads.to_numpy())]
    t = entity_number[entity_index.get_indexer(tails.to_numpy())]
    r_codes, relation_names = pd.factorize(kg["relation"].astype(str), sort=True)
    triples = np.unique(np.stack([h, r_codes.astype(np.int64), t], axis=1), axis=0)
    # Raw entity ids: items first (their linked entity, or the item id), then the others.
    item_entity = np.array([str(x) for x in item_ids], dtype=object)
    item_entity[linked.to_numpy()] = linked.index.to_numpy()
    entity_ids = np.concatenate([item_entity, others.to_numpy(dtype=object)])
    return triples, tuple(str(x) for x in relation_names), entity_ids


def _with_featured_ids(
    kept: pd.Series, raw_ids: pd.Series, features: pd.DataFrame | None, id_col: str
) -> np.ndarray:
    """Sorted unique ids: those of the kept interactions, plus featured ids with no raw interaction at all."""
    ids = np.unique(kept.to_numpy())
    if features is None or id_col not in features.columns or len(features) == 0:
        return ids
    featured = pd.Index(pd.unique(features[id_col].dropna()))
    never_seen = featured.difference(pd.Index(pd.unique(raw_ids.to_numpy())))
    if len(never_seen) == 0:
        return ids
    extra = never_seen.to_numpy()
    if ids.dtype.kind in "iu" and extra.dtype.kind == "f" and np.all(extra == np.round(extra)):
        extra = extra.astype(ids.dtype)  # an id column read as float because of a gap elsewhere
    return np.unique(np.concatenate([ids, extra.astype(ids.dtype, copy=False)]))


def _index_features(table: pd.DataFrame | None, id_col: str, index: pd.Index) -> pd.DataFrame | None:
    """Re-index a feature table by internal id, keeping only known ids (rows in internal-id order)."""
    if table is None:
        return None
    pos = index.get_indexer(table[id_col].to_numpy())
    out = table.loc[pos >= 0].drop(columns=[id_col]).copy()
    out.index = pd.Index(pos[pos >= 0], name=id_col)
    return out.sort_index()
