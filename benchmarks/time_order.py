"""Does the order of a user's interactions matter for new users? Item-item co-occurrence with and without it.

On a ``--split cold-users`` split a new user reveals its oldest interactions and is evaluated on the later
ones. This script scores those users with four item-item models built from the training users' pairs, in
ItemKNN's form (``score = h W``, each history item ``j`` contributing its ``topk`` strongest ``W[j, i]``):

* ``symmetric``: ``W[j, i]`` = users who have both ``j`` and ``i`` (ItemKNN's co-occurrence);
* ``after``: users who had ``j`` strictly **before** ``i`` (what came after the history items);
* ``before``: users who had ``j`` strictly after ``i`` (the reverse, as a control);

each as a cosine (divided by ``sqrt(n_j n_i)``), with the neighbours kept per row (ItemKNN: each history
item keeps its ``topk`` candidates) or per column (each candidate keeps its ``topk`` strongest history
items). It shows how much of the new users' future an item-item reading of the time order predicts,
beside the ``context="older"`` option of PinSage and GraphSAGE (``benchmarks/RESULTS.md``).

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/time_order.py --data-dir ../shared/datasets/ml-100k
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from models.base import History
from tasks.config import DataConfig, SplitConfig
from tasks.evaluate import evaluate, popularity_metrics
from tasks.graphs import build_graphs
from tasks.ingest import load_raw
from tasks.ingest.dataset import build_dataset
from tasks.split import split_dataset


class ItemItemScorer:
    """Scores new users as ``h W`` for a dense item-item ``W`` (only what :func:`evaluate` calls)."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = torch.from_numpy(weights.astype(np.float32))

    @contextmanager
    def inference(self) -> Iterator[None]:
        yield

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("only new users (score_history) are evaluated here")

    def score_history(self, history: History) -> torch.Tensor:
        rows = torch.zeros(len(history), self.weights.shape[0])
        rows[history.rows, history.items] = 1.0
        return rows @ self.weights


def co_occurrences(
    users: np.ndarray, items: np.ndarray, ages: np.ndarray, num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(C, A)``: ``C[j, i]`` users with both ``j`` and ``i``; ``A[j, i]`` users with ``j`` before ``i``."""
    both = np.zeros((num_items, num_items), np.float64)
    after = np.zeros((num_items, num_items), np.float64)
    order = np.argsort(users, kind="stable")
    users, items, times = users[order], items[order], -ages[order]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        its, ts = items[a:b], times[a:b]
        both[np.ix_(its, its)] += 1.0
        after[np.ix_(its, its)] += ts[:, None] < ts[None, :]
    np.fill_diagonal(both, 0.0)
    return both, after


def keep_top(weights: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` largest entries (ItemKNN's neighbours), the rest zero (per column: ``.T``)."""
    if k >= weights.shape[1]:
        return weights
    out = np.zeros_like(weights)
    top = np.argpartition(-weights, k, axis=1)[:, :k]
    np.put_along_axis(out, top, np.take_along_axis(weights, top, axis=1), axis=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--topk", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset = build_dataset(
        load_raw(DataConfig(dataset=args.dataset, data_dir=args.data_dir, download=False))
    )
    split = split_dataset(dataset, SplitConfig(method="cold-users", seed=args.seed))
    graphs = build_graphs(dataset, split)
    if graphs.ui_edge_age is None:
        raise SystemExit(f"{args.dataset} has no timestamps: there is no order to compare")
    users, items = graphs.ui_edge_index.numpy()
    both, after = co_occurrences(users, items, graphs.ui_edge_age.numpy(), graphs.num_items)
    counts = np.bincount(items, minlength=graphs.num_items).astype(np.float64)
    norm = np.sqrt(np.outer(counts, counts)) + 1e-12
    results: dict[str, dict[str, float]] = {
        "popularity": {p: popularity_metrics(split, p, ks=(20,)).values["ndcg@20"] for p in ("valid", "test")}
    }
    for name, weights in (("symmetric", both), ("after", after), ("before", after.T)):
        cosine = weights / norm
        for per, kept in (("row", keep_top(cosine, args.topk)), ("column", keep_top(cosine.T, args.topk).T)):
            scorer = ItemItemScorer(kept)
            results[f"{name}, per {per}"] = {
                p: evaluate(scorer, split, p, ks=(20,)).values["ndcg@20"] for p in ("valid", "test")
            }
    print(f"{args.dataset} cold-users seed {args.seed}: {split.describe()['fingerprint']}")
    for name, values in results.items():
        print(f"  {name:18s} valid NDCG@20 {values['valid']:.4f}  test NDCG@20 {values['test']:.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
