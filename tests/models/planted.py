"""Tiny seeded graphs shared by the model and training tests (no files, no network)."""

from __future__ import annotations

import numpy as np
import torch

from tasks.config import SplitConfig
from tasks.graphs import Graphs, build_graphs
from tasks.ingest.dataset import Dataset, build_dataset
from tasks.ingest.synthetic import make_synthetic
from tasks.split import Split, split_dataset


def random_graphs(num_users: int = 12, num_items: int = 9, num_pairs: int = 40, seed: int = 0) -> Graphs:
    """Random bipartite training graph; every user and item has at least one edge."""
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.arange(num_users), rng.integers(0, num_users, num_pairs)])
    items = np.concatenate([rng.integers(0, num_items, num_users), rng.integers(0, num_items, num_pairs)])
    users = np.concatenate([users, rng.integers(0, num_users, num_items)])
    items = np.concatenate([items, np.arange(num_items)])
    return graphs_from_pairs(np.stack([users, items], 1), num_users, num_items)


def graphs_from_pairs(pairs: np.ndarray, num_users: int, num_items: int) -> Graphs:
    """Build :class:`Graphs` from training pairs with the real graph builder."""
    dataset = Dataset(
        name="toy",
        user=pairs[:, 0].astype(np.int64),
        item=pairs[:, 1].astype(np.int64),
        rating=None,
        timestamp=None,
        user_ids=np.arange(num_users),
        item_ids=np.arange(num_items),
    )
    empty = np.zeros((0, 2), np.int64)
    split = Split("fixed", 0, num_users, num_items, pairs.astype(np.int64), empty, empty)
    return build_graphs(dataset, split)


def planted(
    num_users: int = 240, num_items: int = 160, num_interactions: int = 4800, seed: int = 7
) -> tuple[Dataset, Split, Graphs]:
    """The synthetic source (planted communities + popularity), random 80/10/10 split, and its graphs."""
    dataset = build_dataset(make_synthetic(num_users, num_items, num_interactions, seed=seed))
    split = split_dataset(dataset, SplitConfig(method="random", seed=seed))
    return dataset, split, build_graphs(dataset, split)


def batch(num_users: int, num_items: int, size: int = 16, negatives: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (size,), generator=g)
    pos = torch.randint(0, num_items, (size,), generator=g)
    neg = torch.randint(0, num_items, (size, negatives), generator=g)
    return users, pos, neg
