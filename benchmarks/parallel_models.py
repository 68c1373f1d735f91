"""Wall time of train-and-promote with the models one after another, and two at once on a Dask LocalCluster.

Two models of about equal cost tune (a few Optuna trials), train, test and register on small synthetic data,
first sequentially (``parallel: 1``, torch on one thread), then with ``parallel: 2`` (a LocalCluster of two
worker processes with one thread each, started inside the flow and included in the time). Each mode runs in
stores of its own (MLflow, Optuna, Prefect results), so neither reads the other's cache. The figure is the
flow's wall time (the Prefect server is started once, before both); the goal of issue 14 is a ratio
parallel / sequential of at most 0.6 on a 2-core machine.

Each model's per-trial values are compared between the two modes: the same seed must give the same trials
whichever runner ran them.

Usage::

    .venv/bin/python benchmarks/parallel_models.py --models lightgcn,gcn --json benchmarks/parallel.json
    .venv/bin/python benchmarks/parallel_models.py --users 1500 --items 2000 --interactions 80000 \
        --malloc-check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def _settings(folder: Path) -> Path:
    path = folder / "mlflow.yml"
    path.write_text(
        "tracking_uri: sqlite:///store/mlflow.db\n"
        "artifact_location: store/artifacts\n"
        "experiment_name: gnnrec-bench\n"
        "registered_model_name: recsys\n"
        "selection_metric: ndcg@20\n"
        "registry_stage: Production\n"
        "min_margin: 0.001\n"
        "study_storage: sqlite:///store/optuna.db\n"
    )
    return path


def _trials(storage: str) -> dict[str, list[float | None]]:
    import optuna

    out: dict[str, list[float | None]] = {}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        out[name.split("-")[0]] = [t.value for t in study.trials]
    return out


def run_mode(root: Path, name: str, args: argparse.Namespace, parallel: int) -> dict[str, Any]:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.train_and_promote import train_and_promote
    from tasks.config import DataConfig, SplitConfig
    from tasks.pipeline_config import PipelineParams
    from tasks.register import load_mlflow_settings

    folder = root / name
    folder.mkdir()
    os.chdir(folder)
    config = _settings(folder)
    params = PipelineParams(
        data=DataConfig(
            synthetic_users=args.users,
            synthetic_items=args.items,
            synthetic_interactions=args.interactions,
            synthetic_seed=args.seed,
        ),
        split=SplitConfig(seed=args.seed),
        models=tuple(args.models.split(",")),
        n_trials=args.trials,
        timeout_s=args.timeout,
        epochs=args.epochs,
        seed=args.seed,
        device="cpu",
        threads=1,
        parallel=parallel,
        mlflow_config=config,
    )
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: folder / "prefect-results"}):
        started = time.perf_counter()
        outcome = train_and_promote(params)
        seconds = time.perf_counter() - started
    storage = load_mlflow_settings(config).study_storage
    return {
        "mode": name,
        "parallel": parallel,
        "seconds": round(seconds, 1),
        "models": {
            row["model"]: {k: row[k] for k in row if k in ("train s", "trials", "status", "version")}
            for row in outcome.leaderboard
        },
        "registered": sorted(v.family for v in outcome.versions),
        "champion": f"{outcome.decision.challenger_family} v{outcome.decision.challenger_version}",
        "trials": _trials(storage),
    }


def _train_seconds(args: argparse.Namespace) -> dict[str, Any]:
    """Wall and CPU seconds of one LightGCN training (one thread) where this function runs."""
    import torch

    from tasks.config import DataConfig, SplitConfig
    from tasks.prepare import prepare_data
    from tasks.train import TrainConfig, set_threads, train

    set_threads(1)
    data = DataConfig(
        synthetic_users=args.users,
        synthetic_items=args.items,
        synthetic_interactions=args.interactions,
        synthetic_seed=args.seed,
    )
    prepared = prepare_data(data, SplitConfig(seed=args.seed))
    wall, cpu = time.perf_counter(), time.process_time()
    config = TrainConfig(model="lightgcn", epochs=8, seed=args.seed, device="cpu", progress=False)
    train(prepared.graphs, prepared.split, config)
    return {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "torch_threads": torch.get_num_threads(),
    }


def malloc_check(args: argparse.Namespace) -> dict[str, Any]:
    """The same training in this process, in a Dask worker with Dask's defaults, and with ours."""
    import dask
    from distributed import Client, LocalCluster

    from flows.parallel import WORKER_DASK_CONFIG

    out: dict[str, Any] = {"flow process": _train_seconds(args)}
    # Ours first: Dask's nanny exports its setting into this process's environment, where later workers
    # inherit it.
    for name, config in (("gnnrec worker", WORKER_DASK_CONFIG), ("dask default worker", {})):
        with dask.config.set(config):
            kwargs = {"n_workers": 1, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
            with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
                out[name] = client.submit(_train_seconds, args, pure=False).result()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="lightgcn,gcn", help="Two model families of about equal cost.")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--interactions", type=int, default=16000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--timeout", type=float, default=300.0, help="Tuning seconds per model.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--malloc-check",
        action="store_true",
        help="Only time one LightGCN training in this process and in Dask workers (with and without Dask's "
        "MALLOC_TRIM_THRESHOLD_) and print that.",
    )
    args = parser.parse_args()
    if args.malloc_check:
        print(json.dumps(malloc_check(args), indent=2))
        return
    args.json = args.json.resolve() if args.json else None  # the runs change the working directory

    from flows.prefect_server import start_temporary_server

    start_temporary_server()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="gnnrec-parallel-") as tmp:
        sequential = run_mode(Path(tmp), "sequential", args, parallel=1)
        uptime_mid = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        parallel = run_mode(Path(tmp), "parallel-2", args, parallel=2)
        os.chdir("/")
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    ratio = parallel["seconds"] / sequential["seconds"]
    result = {
        "args": vars(args) | {"json": str(args.json)},
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "uptime": [uptime_before, uptime_mid, uptime_after],
        "sequential": sequential,
        "parallel": parallel,
        "ratio": round(ratio, 3),
        "same_trials": sequential["trials"] == parallel["trials"],
        "goal": "ratio <= 0.6",
        "met": ratio <= 0.6,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
