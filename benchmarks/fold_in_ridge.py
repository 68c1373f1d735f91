"""How strong should the fold-in ridge be? New users' NDCG@20 for several ridges, on one trained model.

Trains one embedding model on a ``cold-users`` split (defaults: 10% of users held out, half of each one's
interactions revealed oldest first, seed 2020) for ``--max-seconds`` with the engine's own early stopping,
then scores the validation and test new users with :func:`models.base.fold_in` at each ``--ridges`` value,
and with the plain sum of the history's item embeddings (the limit of a strong ridge). Popularity is
printed beside them. The default ridge (``models.base.FOLD_IN_RIDGE``) was chosen on the validation column.

    PYTHONPATH=. .venv/bin/python benchmarks/fold_in_ridge.py --model mf --dataset movielens-100k \\
        --data-dir /work/shared/datasets/ml-100k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.base import EmbeddingRecommender, History, fold_in  # noqa: E402
from tasks.config import DataConfig, SplitConfig  # noqa: E402
from tasks.evaluate import evaluate, popularity_metrics  # noqa: E402
from tasks.graphs import build_graphs  # noqa: E402
from tasks.ingest import load_raw  # noqa: E402
from tasks.ingest.dataset import build_dataset  # noqa: E402
from tasks.split import split_dataset  # noqa: E402
from tasks.train import TrainConfig, train  # noqa: E402


def main() -> None:
    """Train once, then evaluate the new users under each fold-in ridge."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mf")
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ridges", type=float, nargs="+", default=[1e-3, 1e-1, 1.0, 10.0])
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = build_dataset(
        load_raw(DataConfig(dataset=args.dataset, data_dir=args.data_dir, download=False))
    )
    split = split_dataset(dataset, SplitConfig(method="cold-users", seed=args.seed))
    config = TrainConfig(
        model=args.model,
        lr=args.lr,
        max_seconds=args.max_seconds,
        device="cpu",
        seed=args.seed,
        progress=False,
    )
    trained = train(build_graphs(dataset, split), split, config)
    model = trained.model
    if not isinstance(model, EmbeddingRecommender):
        raise SystemExit(f"{args.model} is not an embedding model: it has no fold-in")
    print(f"{args.model} on {args.dataset}: best epoch {trained.best_epoch}, split {split.fingerprint}")
    for part in ("valid", "test"):
        print(f"popularity {part} NDCG@20 {popularity_metrics(split, part, ks=(20,))['ndcg@20']:.4f}")

    def with_rule(name: str, rule: object) -> None:
        model.score_history = rule  # type: ignore[method-assign]
        values = [evaluate(model, split, part, ks=(20,))["ndcg@20"] for part in ("valid", "test")]
        print(f"{name}: valid NDCG@20 {values[0]:.4f}, test {values[1]:.4f}")

    for ridge in args.ridges:

        def ridge_rule(history: History, ridge: float = ridge) -> torch.Tensor:
            _, item_emb = model._final()
            return model.score(fold_in(item_emb, history, ridge=ridge), item_emb)

        with_rule(f"ridge {ridge:g}", ridge_rule)

    def sum_rule(history: History) -> torch.Tensor:
        _, item_emb = model._final()
        users = torch.zeros(len(history), item_emb.shape[1]).index_add_(
            0, history.rows, item_emb[history.items]
        )
        return model.score(users, item_emb)

    with_rule("sum of history embeddings", sum_rule)


if __name__ == "__main__":
    main()
