"""Graph construction from the training part only: bipartite, social and knowledge graphs.

Every graph is built with vectorised numpy/torch operations (no Python loop over nodes or edges), so a
million-edge training set takes well under a second. The user-item graph sees ``split.train`` and nothing
else; the social graph and the knowledge graph do not hold interactions, so they are taken whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch_geometric.data import HeteroData

from models.graphs import KG_RELATION, RATED_BY, RATES, TRUSTS, Graphs, csr_from_sorted
from tasks.ingest.dataset import Dataset
from tasks.split import Split

__all__ = [
    "KG_RELATION",
    "RATED_BY",
    "RATES",
    "TRUSTS",
    "Graphs",
    "build_graphs",
    "symmetric_normalized_adjacency",
]

_QUANTILES = {"p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99}


def build_graphs(dataset: Dataset, split: Split) -> Graphs:
    """Build the bipartite, social and knowledge graphs of a dataset from its training part.

    Only ``split.train`` feeds the user-item graph; ``split.valid`` and ``split.test`` are never read.
    Repeated training pairs are merged, so the adjacency is binary.

    Args:
        dataset: The indexed dataset (for sizes, ``social`` and ``kg``).
        split: Its split; must have been made from this dataset.

    Returns:
        The graphs on the CPU, with statistics and the dataset's encoded user and item features
        (:attr:`Dataset.encoded_user_features`, encoded once per dataset). Move them with :meth:`Graphs.to`.

    Raises:
        ValueError: When the split and the dataset disagree on sizes, or an id is out of range.
    """
    num_users, num_items = dataset.num_users, dataset.num_items
    if (split.num_users, split.num_items) != (num_users, num_items):
        raise ValueError(
            f"The split has {split.num_users} users x {split.num_items} items but dataset "
            f"'{dataset.name}' has {num_users} x {num_items}; was it made from another dataset?"
        )
    train = np.asarray(split.train, dtype=np.int64).reshape(-1, 2)
    _check_range(train[:, 0], num_users, "split.train user")
    _check_range(train[:, 1], num_items, "split.train item")
    key = np.unique(train[:, 0] * num_items + train[:, 1])
    ui_users, ui_items = key // num_items, key % num_items
    ui_edge_index = torch.from_numpy(np.stack([ui_users, ui_items]))
    ui_adj = symmetric_normalized_adjacency(
        torch.from_numpy(np.stack([ui_users, ui_items + num_users])), num_users + num_items
    )
    stats: dict[str, Any] = {"user_item": _user_item_stats(ui_users, ui_items, num_users, num_items)}

    social_edge_index = social_adj = None
    stats["social"] = None
    if dataset.social is not None:
        pairs = np.asarray(dataset.social, dtype=np.int64).reshape(-1, 2)
        _check_range(pairs.ravel(), num_users, "dataset.social user")
        pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
        social_edge_index = torch.from_numpy(np.concatenate([pairs.T, pairs.T[::-1]], axis=1))
        social_adj = symmetric_normalized_adjacency(torch.from_numpy(pairs.T.copy()), num_users)
        stats["social"] = _undirected_stats(pairs[:, 0], pairs[:, 1], num_users)

    kg_edge_index = kg_edge_type = None
    num_entities, num_relations = num_items, 0
    stats["kg"] = None
    if dataset.kg is not None:
        triples = np.asarray(dataset.kg, dtype=np.int64).reshape(-1, 3)
        num_entities = dataset.num_entities
        base_relations = dataset.num_relations or (int(triples[:, 1].max()) + 1 if len(triples) else 0)
        _check_range(triples[:, [0, 2]].ravel(), num_entities, "dataset.kg entity")
        _check_range(triples[:, 1], base_relations, "dataset.kg relation")
        head, rel, tail = triples[:, 0], triples[:, 1], triples[:, 2]
        kg_edge_index = torch.from_numpy(
            np.stack([np.concatenate([head, tail]), np.concatenate([tail, head])])
        )
        kg_edge_type = torch.from_numpy(np.concatenate([rel, rel + base_relations]))
        num_relations = 2 * base_relations
        stats["kg"] = _kg_stats(head, rel, tail, num_entities, num_items, base_relations)

    hetero = HeteroData()
    hetero["user"].num_nodes = num_users
    hetero["item"].num_nodes = num_items
    hetero[RATES].edge_index = ui_edge_index
    hetero[RATED_BY].edge_index = ui_edge_index.flip(0)
    if social_edge_index is not None:
        hetero[TRUSTS].edge_index = social_edge_index
    if kg_edge_index is not None:
        hetero["entity"].num_nodes = num_entities
        hetero[KG_RELATION].edge_index = kg_edge_index
        hetero[KG_RELATION].edge_type = kg_edge_type

    user_encoded, item_encoded = dataset.encoded_user_features, dataset.encoded_item_features
    feature_names = {
        side: encoded.names
        for side, encoded in (("user", user_encoded), ("item", item_encoded))
        if encoded is not None
    }
    return Graphs(
        num_users=num_users,
        num_items=num_items,
        ui_edge_index=ui_edge_index,
        ui_adj=ui_adj,
        social_edge_index=social_edge_index,
        social_adj=social_adj,
        kg_edge_index=kg_edge_index,
        kg_edge_type=kg_edge_type,
        num_entities=num_entities,
        num_relations=num_relations,
        hetero=hetero,
        stats=stats,
        user_features=None if user_encoded is None else torch.from_numpy(user_encoded.values),
        item_features=None if item_encoded is None else torch.from_numpy(item_encoded.values),
        feature_names=feature_names,
        ui_edge_age=None if dataset.timestamp is None else _edge_ages(dataset, key, num_items),
    )


def _edge_ages(dataset: Dataset, key: np.ndarray, num_items: int) -> torch.Tensor:
    """Age in days at the training cut of each training pair ``key`` (``user * I + item``, sorted, unique).

    A pair's time is the earliest of its interactions (an indexed dataset holds each pair once, with its
    latest timestamp, so this is that timestamp). The cut is the latest of these training times, so
    held-out interactions set neither an age nor the cut.

    Returns:
        float32 ``[E]`` in the order of ``key``, every value ``>= 0``.
    """
    assert dataset.timestamp is not None
    all_key = dataset.user.astype(np.int64) * num_items + dataset.item.astype(np.int64)
    inside = np.isin(all_key, key)
    pair, time = all_key[inside], dataset.timestamp[inside].astype(np.int64)
    order = np.lexsort((time, pair))
    pair, time = pair[order], time[order]
    first = np.r_[True, pair[1:] != pair[:-1]] if pair.size else np.zeros(0, dtype=bool)
    earliest = time[first]
    if earliest.size != key.size:  # pragma: no cover - build_graphs checked the split against the dataset
        raise ValueError("some training pairs are not interactions of the dataset")
    cut = int(earliest.max()) if earliest.size else 0
    return torch.from_numpy(((cut - earliest) / 86400.0).astype(np.float32))


def symmetric_normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The symmetric-normalised adjacency ``D^-1/2 A D^-1/2`` of an undirected graph, as sparse CSR.

    ``A`` is binary: each edge is added in both directions and repeats are merged. A node without edges
    has degree 0 and an all-zero row and column (never NaN or inf). Runs on ``edge_index``'s device.

    Args:
        edge_index: Undirected edges, each given once or in both directions (a self-loop counts once).
        num_nodes: Number of nodes ``N``.

    Returns:
        Sparse CSR float32 ``[N, N]``, symmetric, with entry ``1 / sqrt(deg(u) deg(v))`` at every edge.

    Shapes:
        edge_index: long ``[2, E]``.
    """
    edge_index = edge_index.to(torch.long)
    row = torch.cat([edge_index[0], edge_index[1]])
    col = torch.cat([edge_index[1], edge_index[0]])
    key = torch.unique(row * num_nodes + col)  # sorted: row-major order, duplicates merged
    row, col = key // num_nodes, key % num_nodes
    deg = torch.bincount(row, minlength=num_nodes).to(torch.float32)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    return csr_from_sorted(row, col, inv_sqrt[row] * inv_sqrt[col], (num_nodes, num_nodes))


def _check_range(ids: np.ndarray, upper: int, what: str) -> None:
    """Raise ``ValueError`` unless every id is in ``[0, upper)``."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= upper):
        raise ValueError(f"{what} ids must lie in [0, {upper}), found {int(ids.min())}..{int(ids.max())}.")


def _degree_summary(degree: np.ndarray) -> dict[str, float]:
    """Min, quartiles, p90, p99, max and mean of a degree sequence (zeros when it is empty)."""
    if degree.size == 0:
        return {"min": 0.0, **dict.fromkeys(_QUANTILES, 0.0), "max": 0.0, "mean": 0.0}
    q = np.quantile(degree, list(_QUANTILES.values()))
    return {
        "min": float(degree.min()),
        **{name: float(v) for name, v in zip(_QUANTILES, q, strict=True)},
        "max": float(degree.max()),
        "mean": float(degree.mean()),
    }


def _components(row: np.ndarray, col: np.ndarray, num_nodes: int) -> dict[str, int]:
    """Connected components of an undirected graph (isolated nodes count as components of size 1)."""
    if num_nodes == 0:
        return {"components": 0, "largest_component": 0}
    adj = sp.coo_matrix((np.ones(row.size, dtype=np.int8), (row, col)), shape=(num_nodes, num_nodes))
    count, labels = connected_components(adj.tocsr(), directed=False)
    return {"components": int(count), "largest_component": int(np.bincount(labels).max())}


def _user_item_stats(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> dict[str, Any]:
    """Statistics of the bipartite graph; density is ``E / (U * I)``, components over users and items."""
    user_degree = np.bincount(users, minlength=num_users)
    item_degree = np.bincount(items, minlength=num_items)
    isolated_users = int((user_degree == 0).sum())
    isolated_items = int((item_degree == 0).sum())
    return {
        "nodes": num_users + num_items,
        "users": num_users,
        "items": num_items,
        "edges": int(users.size),
        "density": float(users.size / (num_users * num_items)) if num_users and num_items else 0.0,
        "degree": _degree_summary(np.concatenate([user_degree, item_degree])),
        "user_degree": _degree_summary(user_degree),
        "item_degree": _degree_summary(item_degree),
        "isolated": isolated_users + isolated_items,
        "isolated_users": isolated_users,
        "isolated_items": isolated_items,
        **_components(users, items + num_users, num_users + num_items),
    }


def _undirected_stats(a: np.ndarray, b: np.ndarray, num_nodes: int) -> dict[str, Any]:
    """Statistics of a simple undirected graph given once per edge; density is ``S / (N (N - 1) / 2)``."""
    degree = np.bincount(np.concatenate([a, b]), minlength=num_nodes)
    pairs = num_nodes * (num_nodes - 1) / 2
    return {
        "nodes": num_nodes,
        "edges": int(a.size),
        "density": float(a.size / pairs) if pairs else 0.0,
        "degree": _degree_summary(degree),
        "isolated": int((degree == 0).sum()),
        **_components(a, b, num_nodes),
    }


def _kg_stats(
    head: np.ndarray, rel: np.ndarray, tail: np.ndarray, num_entities: int, num_items: int, num_relations: int
) -> dict[str, Any]:
    """Statistics of the KG: ``edges`` counts triples, density is ``T / (R * N^2)``, degree is in + out.

    ``items_linked`` counts items (entities ``< I``) that appear in at least one triple.
    """
    degree = np.bincount(np.concatenate([head, tail]), minlength=num_entities)
    cells = num_relations * num_entities * num_entities
    return {
        "nodes": num_entities,
        "edges": int(head.size),
        "relations": num_relations,
        "density": float(head.size / cells) if cells else 0.0,
        "degree": _degree_summary(degree),
        "isolated": int((degree == 0).sum()),
        "items_linked": int((degree[:num_items] > 0).sum()),
        "relation_counts": [int(c) for c in np.bincount(rel, minlength=num_relations)],
        **_components(head, tail, num_entities),
    }
