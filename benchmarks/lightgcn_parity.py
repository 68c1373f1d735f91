"""LightGCN parity and speed against the published LightGCN-PyTorch code on its fixed Last.fm split.

Reference (LightGCN-PyTorch, https://github.com/gusye1234/LightGCN-PyTorch, defaults: 3 layers, d 64,
lr 0.001, L2 1e-4, batch 2048, seed 2020), run on this 2-core machine: after 100 epochs Recall@20 0.2151,
NDCG@20 0.1612, 75 s wall including its evaluations. Same split (data1.txt train / test1.txt test, 1-based
ids), same metric definitions (full ranking, train items masked, users with test items, recall = hits /
|test items|, NDCG ideal over min(|rel|, K)).

Two parts:

* ``parity``: train ``--epochs`` epochs with no validation part (nothing is selected on test), evaluate the
  test part once at the end; wall time covers training and that evaluation (data loading is reported apart).
* ``curve`` (with ``--curve-epochs``): a longer run whose test metrics are computed every ``--eval-every``
  epochs to show where training converges (reported as a curve; the test part is not used to pick anything).

Usage::

    .venv/bin/python benchmarks/lightgcn_parity.py --threads 2
    .venv/bin/python benchmarks/lightgcn_parity.py --threads 2 --curve-epochs 400 --eval-every 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from tasks.config import DataConfig, SplitConfig
from tasks.evaluate import evaluate, popularity_metrics
from tasks.graphs import build_graphs
from tasks.ingest import load_raw
from tasks.ingest.dataset import build_dataset
from tasks.split import split_dataset
from tasks.train import TrainConfig, train

REFERENCE = {"recall@20": 0.2151, "ndcg@20": 0.1612, "seconds": 75.0, "epochs": 100}
DEFAULT_DIR = Path("/work/shared/datasets/lastfm-splits/lightgcn-pytorch")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--reg-weight", type=float, default=1e-4)
    parser.add_argument("--sampling", choices=["pairs", "users"], default="pairs")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--curve-epochs", type=int, default=0, help="0 skips the convergence curve")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    raw = load_raw(DataConfig(dataset="lightgcn", data_dir=args.data_dir, one_based=True))
    dataset = build_dataset(raw)
    split = split_dataset(dataset, SplitConfig(method="fixed", seed=args.seed))
    graphs = build_graphs(dataset, split)
    data_seconds = time.perf_counter() - start
    print(
        f"data: {dataset.num_users} users, {dataset.num_items} items, train {len(split.train)}, "
        f"test {len(split.test)}, valid {len(split.valid)} ({data_seconds:.2f} s)"
    )
    config = TrainConfig(
        model="lightgcn",
        hparams={"embedding_dim": 64, "num_layers": 3, "reg_weight": args.reg_weight},
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        sampling=args.sampling,
        device="cpu",
        seed=args.seed,
        progress=False,
    )

    start = time.perf_counter()
    trained = train(graphs, split, config)
    test = evaluate(trained.model, split, "test", ks=(20,))
    wall = time.perf_counter() - start
    pop = popularity_metrics(split, "test", ks=(20,))
    parity = {
        "epochs": trained.epochs_run,
        "recall@20": test["recall@20"],
        "ndcg@20": test["ndcg@20"],
        "users_evaluated": test.users_evaluated,
        "wall_seconds": wall,
        "seconds_per_epoch": trained.seconds_per_epoch,
        "test_eval_seconds": test.seconds,
        "popularity_recall@20": pop["recall@20"],
        "popularity_ndcg@20": pop["ndcg@20"],
        "meets_quality": test["recall@20"] >= REFERENCE["recall@20"]
        and test["ndcg@20"] >= REFERENCE["ndcg@20"],
        "meets_time": wall <= REFERENCE["seconds"] / 3,
    }
    print("parity:", json.dumps(parity, indent=2))

    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": args.threads,
        "torch": torch.__version__,
        "config": config.model_dump(mode="json"),
        "data_seconds": data_seconds,
        "reference": REFERENCE,
        "parity": parity,
    }
    if args.curve_epochs:
        # Test metrics every eval_every epochs, read from the training history (patience never triggers).
        curve_split = dataclasses.replace(split, valid=split.test)
        curve_config = config.model_copy(
            update={
                "epochs": args.curve_epochs,
                "eval_every": args.eval_every,
                "patience": args.curve_epochs + 1,
                "ks": (20,),
                "metric": "ndcg@20",
            }
        )
        start = time.perf_counter()
        curve_run = train(graphs, curve_split, curve_config)
        curve = [
            {
                "epoch": int(h["epoch"]),
                "recall@20": h["recall@20"],
                "ndcg@20": h["ndcg@20"],
                "loss": h["loss"],
            }
            for h in curve_run.history
            if "ndcg@20" in h
        ]
        results["curve"] = curve
        results["curve_seconds"] = time.perf_counter() - start
        for point in curve:
            print(
                f"epoch {point['epoch']:4d}  recall@20 {point['recall@20']:.4f}  "
                f"ndcg@20 {point['ndcg@20']:.4f}  loss {point['loss']:.4f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
