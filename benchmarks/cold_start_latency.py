"""Cold-start serving latency (issue 11): how long one new user's recommendations take, from its history.

At MovieLens size (the synthetic source at 943 users, 1682 items, 100,000 interactions, or ML-100K with
``--data-dir``), a ``cold-users`` split holds ``--cold-fraction`` of the users out of training; every
registered model (or ``--models``) is trained briefly on the rest (``--epochs``; closed-form models are fit:
latency does not depend on how well a model is trained) and exported exactly as it is registered
(:func:`tasks.recommend.export_recommender`). Then, for each of ``--users`` held-out users, one at a time on
one CPU thread (``torch.set_num_threads(1)``):

* **score**: ``servable.score_history(indptr, items)``, the model's own new-user rule (fold-in for embedding
  models) over every item;
* **predict**: the served pyfunc's ``predict`` on a one-row frame ``{"history": "ID,ID,..."}``, ``k = 10``:
  raw id parsing, scoring, masking the history and the top-K, i.e. what ``gnnrec recommend --history`` and
  the REST endpoint do per user once the model is loaded.

Median and p95 of each, in milliseconds, per model; the issue's target is < 100 ms per user. Wall time is
what a caller waits; on a shared, loaded machine it includes time the process was not on a core, so the
process CPU time of ``predict`` (one thread: the work itself) is reported beside it.

    PYTHONPATH=. .venv/bin/python benchmarks/cold_start_latency.py --users 200 --json /tmp/cold.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import MODELS  # noqa: E402
from models.registry import get_model  # noqa: E402
from tasks.config import DataConfig, SplitConfig  # noqa: E402
from tasks.graphs import build_graphs  # noqa: E402
from tasks.ingest.dataset import Dataset, build_dataset  # noqa: E402
from tasks.ingest.synthetic import make_synthetic  # noqa: E402
from tasks.recommend import ServedRecommender, export_recommender  # noqa: E402
from tasks.split import split_dataset  # noqa: E402
from tasks.train import TrainConfig, train  # noqa: E402


def load(args: argparse.Namespace) -> Dataset:
    """ML-100K from ``--data-dir``, or the synthetic source at MovieLens size."""
    if args.data_dir is None:
        return build_dataset(make_synthetic(943, 1682, 100_000, seed=args.seed))
    from tasks.ingest import load_raw

    raw = load_raw(DataConfig(dataset="movielens-100k", data_dir=args.data_dir, download=False))
    return build_dataset(raw)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (linear interpolation), in the values' unit."""
    return float(np.quantile(np.asarray(values), q))


def measure(model_name: str, dataset: Dataset, args: argparse.Namespace) -> dict[str, object]:
    """Train ``model_name`` briefly, export it, and time score and predict for each held-out user."""
    split = split_dataset(
        dataset, SplitConfig(method="cold-users", cold_fraction=args.cold_fraction, seed=args.seed)
    )
    graphs = build_graphs(dataset, split)
    config = TrainConfig(model=model_name, epochs=args.epochs, lr=5e-3, device="cpu", progress=False)
    started = time.perf_counter()
    trained = train(graphs, split, config)
    train_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        served = ServedRecommender()
        served._load(export_recommender(trained.model, dataset, split, Path(tmp)))
    servable = served.servable
    users = np.unique(split.history[:, 0])[: args.users]
    score_ms: list[float] = []
    predict_ms: list[float] = []
    predict_cpu_ms: list[float] = []
    for user in users:
        items = np.sort(split.history[split.history[:, 0] == user, 1])
        indptr = np.array([0, len(items)], dtype=np.int64)
        raw = ",".join(str(i) for i in dataset.item_ids[items].tolist())
        frame = pd.DataFrame({"history": [raw]})
        t0 = time.perf_counter()
        servable.score_history(indptr, items)
        t1, c1 = time.perf_counter(), time.process_time()
        out = served.predict(None, frame, params={"k": 10})
        t2, c2 = time.perf_counter(), time.process_time()
        predict_cpu_ms.append((c2 - c1) * 1000)
        assert len(out) == 10 and not set(out["item"]) & set(dataset.item_ids[items].tolist())
        score_ms.append((t1 - t0) * 1000)
        predict_ms.append((t2 - t1) * 1000)
    lengths = [int((split.history[:, 0] == u).sum()) for u in users]
    return {
        "model": model_name,
        "servable": servable.kind,
        "new_users": get_model(model_name).new_users,
        "users": len(users),
        "history_median": statistics.median(lengths),
        "score_ms_median": round(statistics.median(score_ms), 3),
        "score_ms_p95": round(percentile(score_ms, 0.95), 3),
        "predict_ms_median": round(statistics.median(predict_ms), 3),
        "predict_ms_p95": round(percentile(predict_ms, 0.95), 3),
        "predict_cpu_ms_median": round(statistics.median(predict_cpu_ms), 3),
        "predict_cpu_ms_p95": round(percentile(predict_cpu_ms, 0.95), 3),
        "train_seconds": round(train_seconds, 1),
    }


def main() -> None:
    """Parse the flags, time every model, print a Markdown table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument("--users", type=int, default=200, help="held-out users timed, one at a time")
    parser.add_argument("--cold-fraction", type=float, default=0.25, help="users held out (>= --users)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (SGD models)")
    parser.add_argument("--data-dir", type=Path, default=None, help="ML-100K folder (default: synthetic)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load(args)
    rows = [measure(name, dataset, args) for name in (args.models or sorted(MODELS))]
    print(
        f"{dataset.name}: {dataset.num_users} users, {dataset.num_items} items, {dataset.num_interactions} "
        f"interactions; torch {torch.__version__}, 1 thread, {platform.processor() or platform.machine()}"
    )
    print(
        "| model | servable | users | median history | score median / p95 ms | predict median / p95 ms "
        "| predict CPU median / p95 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['servable']} | {r['users']} | {r['history_median']} | "
            f"{r['score_ms_median']} / {r['score_ms_p95']} | "
            f"{r['predict_ms_median']} / {r['predict_ms_p95']} | "
            f"{r['predict_cpu_ms_median']} / {r['predict_cpu_ms_p95']} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
