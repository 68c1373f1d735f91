"""New users' NDCG@20 of a GraphSAGE or PinSage run at several popularity exponents, on one trained model.

Trains each given configuration once on a ``cold-users`` split (defaults: 10% of users held out, half of
each one's interactions revealed oldest first, seed 2020) with the engine's early stopping on the validation
new users at ``popularity_exponent`` 0, then scores the validation and test new users of that one state at
each ``--exponents`` value (:meth:`models.graphsage.GraphBuffers.popularity_debiased`; inference only, so
one training serves the whole grid). Pick the exponent on validation; test is printed beside it.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/cold_users_grid.py --dataset movielens-100k \\
      --data-dir ../shared/datasets/ml-100k \\
      '{"model": "graphsage", "hparams": {"user_ids": false}, "max_seconds": 200}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import DataConfig, SplitConfig  # noqa: E402
from tasks.evaluate import evaluate, popularity_metrics  # noqa: E402
from tasks.graphs import build_graphs  # noqa: E402
from tasks.ingest import load_raw  # noqa: E402
from tasks.ingest.dataset import build_dataset  # noqa: E402
from tasks.split import split_dataset  # noqa: E402
from tasks.train import TrainConfig, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="TrainConfig fields as JSON (model, hparams, ...)")
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--exponents", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = build_dataset(
        load_raw(DataConfig(dataset=args.dataset, data_dir=args.data_dir, download=False))
    )
    split = split_dataset(dataset, SplitConfig(method="cold-users", seed=args.seed))
    graphs = build_graphs(dataset, split)
    popular = popularity_metrics(split, "test", ks=(20,))["ndcg@20"]
    print(f"split {split.fingerprint}, popularity test NDCG@20 {popular:.4f}", flush=True)
    for spec in args.configs:
        fields = json.loads(spec)
        start = time.perf_counter()
        config = TrainConfig(device="cpu", progress=False, seed=args.seed, lr=args.lr, **fields)
        trained = train(graphs, split, config)
        model = trained.model
        if not hasattr(model, "popularity_exponent"):
            raise SystemExit(f"{config.model} has no popularity_exponent")
        rows = {}
        for exponent in args.exponents:
            model.popularity_exponent = exponent
            valid, test = (evaluate(model, split, p, ks=(20,))["ndcg@20"] for p in ("valid", "test"))
            rows[exponent] = {
                "valid": round(valid, 4),
                "test": round(test, 4),
                "x_pop": round(test / popular, 3),
            }
        summary = {
            "config": fields,
            "best_epoch": trained.best_epoch,
            "epochs": trained.epochs_run,
            "stop": trained.stop_reason,
            "seconds": round(time.perf_counter() - start),
            "by_exponent": rows,
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
