"""LightGCN speed at Gowalla scale (issue 3, bar b): seconds per epoch, evaluation vs bare matmul + topk.

Data: ``tasks.ingest.synthetic.make_synthetic`` with Gowalla's size (29,858 users, 40,981 items) and
``--num-interactions`` chosen so that the default random per-user 0.8/0.1/0.1 split (seed 2020) leaves about
810,128 training pairs (1,016,689 interactions give 810,127; the exact figures are printed), then
``split_dataset`` and ``build_graphs``.

Three measurements, all in one run:

* **Training.** ``tasks.train.train`` on LightGCN (3 layers, d 64, L2 1e-4, Adam, BPR, one uniform negative)
  for ``--epochs`` epochs at each of ``--batch-sizes`` with the validation part emptied (no evaluation in the
  loop) and no progress bar; seconds per epoch is ``TrainedModel.seconds_per_epoch`` (training only). The
  learning rate is the same for every batch size unless ``--scale-lr`` is given (then ``lr * B / 2048``): a
  larger batch takes fewer, larger steps per epoch, so it changes the optimisation, not only the speed; the
  mean training loss of the last epoch is printed beside each time so that this is visible.
* **Evaluation.** With the embeddings of the model trained at ``--eval-batch`` (default: the fastest batch
  size), interleaved ``--repeats`` times after one warm-up each:
  (a) bare: for each chunk of the evaluated users, ``user_emb[chunk] @ item_emb.T`` then ``topk(max K)``;
  (b) ``tasks.evaluate.full_ranking_metrics`` over the same embeddings and users, test part as truth and
  train + valid masked (what ``evaluate(model, split, "test")`` does after computing the embeddings);
  (c) ``tasks.evaluate.evaluate(model, split, "test")`` itself, propagation included, for reference.
  The bar is the ratio (b) / (a) (at most 1.5); wall and process CPU time are both reported.
* **Peak memory.** Each measured in a fresh subprocess: one epoch of training per batch size, and each of
  (a) and (b). The peak resident set (``VmHWM`` from ``/proc/self/status``) is reset by writing ``5`` to
  ``/proc/self/clear_refs`` after the set-up (data generation, loading), so the figure is the peak of the
  measured step alone; reported as that peak minus the resident set just before the step, and as the peak
  itself. ``ru_maxrss`` is not used: it carries the parent's peak across ``exec``.

Usage::

    .venv/bin/python benchmarks/scale_speed.py --threads 2 --json scale.json
    .venv/bin/python benchmarks/scale_speed.py --epochs 1 --batch-sizes 2048 32768 --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config import SplitConfig  # noqa: E402
from tasks.evaluate import evaluate, full_ranking_metrics  # noqa: E402
from tasks.graphs import Graphs, build_graphs  # noqa: E402
from tasks.ingest.dataset import build_dataset  # noqa: E402
from tasks.ingest.synthetic import make_synthetic  # noqa: E402
from tasks.split import Split, split_dataset  # noqa: E402
from tasks.train import TrainConfig, TrainedModel, train  # noqa: E402

USERS, ITEMS = 29_858, 40_981
GOWALLA_TRAIN = 810_128
DEFAULT_INTERACTIONS = 1_016_689  # gives 810,127 training pairs with the default split, seed 2020
KS = (10, 20)
REFERENCE_BATCH = 2048


# -- data -------------------------------------------------------------------------------------------------


def make_data(num_interactions: int, seed: int) -> tuple[Split, Graphs]:
    """The Gowalla-size synthetic split and its graphs (no social table: LightGCN does not use one)."""
    raw = make_synthetic(USERS, ITEMS, num_interactions, seed=seed, avg_friends=0)
    dataset = build_dataset(raw)
    split = split_dataset(dataset, SplitConfig(method="random", seed=seed))
    return split, build_graphs(dataset, split)


def without_valid(split: Split) -> Split:
    """The split with an empty validation part, so that training never evaluates."""
    return dataclasses.replace(split, valid=np.empty((0, 2), dtype=np.int64))


def test_truth_and_exclude(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Test pairs as truth, train + valid pairs masked (as ``evaluate(..., "test")`` does)."""
    truth = torch.as_tensor(split.test, dtype=torch.long)
    exclude = torch.as_tensor(np.concatenate([split.train, split.valid]), dtype=torch.long)
    return truth, exclude


def train_config(args: argparse.Namespace, batch_size: int, epochs: int) -> TrainConfig:
    lr = args.lr * batch_size / REFERENCE_BATCH if args.scale_lr else args.lr
    return TrainConfig(
        model="lightgcn",
        hparams={"embedding_dim": 64, "num_layers": 3, "reg_weight": 1e-4},
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device="cpu",
        seed=args.seed,
        progress=False,
    )


# -- evaluation -------------------------------------------------------------------------------------------


def run_bare(
    user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, chunk: int
) -> tuple[float, float]:
    """Wall and process CPU seconds of the bare chunked matmul + topk over ``users``."""
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for s in range(0, len(users), chunk):
            scores = user_emb[users[s : s + chunk]] @ item_emb.T
            torch.topk(scores, max(KS), dim=1)
    return time.perf_counter() - start, time.process_time() - cpu


def run_metrics(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth: torch.Tensor,
    exclude: torch.Tensor,
    chunk: int,
) -> tuple[float, float, dict[str, float], int]:
    """Wall and CPU seconds of ``full_ranking_metrics`` on the test part, its metrics and users evaluated."""
    start, cpu = time.perf_counter(), time.process_time()
    metrics = full_ranking_metrics(
        lambda users: user_emb[users] @ item_emb.T,
        truth,
        exclude,
        USERS,
        ITEMS,
        KS,
        chunk_size=chunk,
    )
    return time.perf_counter() - start, time.process_time() - cpu, metrics.values, metrics.users_evaluated


# -- memory (fresh subprocesses) --------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux ``clear_refs`` 5); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """Run one measured step in this fresh process and print its peak memory as JSON."""
    torch.set_num_threads(args.threads)
    mode = args.mode
    if mode.startswith("train"):
        split, graphs = make_data(args.num_interactions, args.seed)
        config = train_config(args, int(mode.split(":")[1]), 1)
        step: Any = lambda: train(graphs, without_valid(split), config)  # noqa: E731
    else:
        saved = torch.load(args.memory_child)
        user_emb, item_emb = saved["user_emb"], saved["item_emb"]
        truth, exclude = saved["truth"], saved["exclude"]
        users = torch.unique(truth[:, 0])
        if mode == "bare":
            step = lambda: run_bare(user_emb, item_emb, users, args.chunk)  # noqa: E731
        else:
            step = lambda: run_metrics(user_emb, item_emb, truth, exclude, args.chunk)  # noqa: E731
    reset = reset_peak()
    before = rss_bytes()
    step()
    peak = peak_rss_bytes()
    record = {"peak_delta_mb": (peak - before) / 2**20, "peak_rss_mb": peak / 2**20, "reset": reset}
    print(json.dumps(record))


def measure_memory(args: argparse.Namespace, mode: str, path: str = "-") -> dict[str, Any]:
    command = [sys.executable, __file__, "--memory-child", path, "--mode", mode]
    command += ["--threads", str(args.threads), "--chunk", str(args.chunk), "--seed", str(args.seed)]
    command += ["--num-interactions", str(args.num_interactions), "--lr", str(args.lr)]
    command += ["--scale-lr"] if args.scale_lr else []
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--num-interactions", type=int, default=DEFAULT_INTERACTIONS)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048, 8192, 16384, 32768])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scale-lr", action="store_true", help="lr * batch / 2048 (linear scaling)")
    parser.add_argument("--eval-batch", type=int, default=None, help="whose embeddings are evaluated")
    parser.add_argument("--chunk", type=int, default=1024, help="users per evaluation chunk")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved evaluation repeats")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="metrics", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(f"machine {machine}, nproc {os.cpu_count()}, torch {torch.__version__}, threads {args.threads}")
    print(f"load average at start: {os.getloadavg()}")

    start = time.perf_counter()
    split, graphs = make_data(args.num_interactions, args.seed)
    data_seconds = time.perf_counter() - start
    print(
        f"data: {USERS} users, {ITEMS} items, {args.num_interactions} interactions -> "
        f"train {len(split.train)} "
        f"(Gowalla {GOWALLA_TRAIN}, diff {len(split.train) - GOWALLA_TRAIN:+d}), valid {len(split.valid)}, "
        f"test {len(split.test)}; adjacency nnz {graphs.ui_adj._nnz()}; built in {data_seconds:.1f} s"
    )

    # Training: seconds per epoch at each batch size.
    train_split = without_valid(split)
    training: list[dict[str, Any]] = []
    models: dict[int, TrainedModel] = {}
    for batch in args.batch_sizes:
        config = train_config(args, batch, args.epochs)
        trained = train(graphs, train_split, config)
        models[batch] = trained
        row = {
            "batch_size": batch,
            "lr": config.lr,
            "steps_per_epoch": -(-len(split.train) // batch),
            "seconds_per_epoch": trained.seconds_per_epoch,
            "epoch_seconds": [round(h["seconds"], 2) for h in trained.history],
            "last_loss": trained.history[-1]["loss"],
        }
        training.append(row)
        print(
            f"batch {batch:6d} (lr {config.lr:g}, {row['steps_per_epoch']} steps): "
            f"{row['seconds_per_epoch']:.2f} s/epoch {row['epoch_seconds']}, loss {row['last_loss']:.4f}",
            flush=True,
        )
    best = min(training, key=lambda r: r["seconds_per_epoch"])
    eval_batch = args.eval_batch if args.eval_batch is not None else int(best["batch_size"])
    model = models[eval_batch].model

    # Evaluation: bare vs metrics vs evaluate(), interleaved.
    with torch.no_grad():
        user_emb, item_emb = model.embeddings()
    truth, exclude = test_truth_and_exclude(split)
    eval_users = torch.unique(truth[:, 0])
    run_bare(user_emb, item_emb, eval_users, args.chunk)  # warm-ups
    _, _, values, n_eval = run_metrics(user_emb, item_emb, truth, exclude, args.chunk)
    evaluate(model, split, "test", KS, chunk_size=args.chunk)
    bare, bare_cpu, full, full_cpu, whole = [], [], [], [], []
    for _ in range(args.repeats):
        wall, cpu = run_bare(user_emb, item_emb, eval_users, args.chunk)
        bare.append(wall)
        bare_cpu.append(cpu)
        wall, cpu, again, _ = run_metrics(user_emb, item_emb, truth, exclude, args.chunk)
        assert again == values, "metrics changed between repeats"
        full.append(wall)
        full_cpu.append(cpu)
        whole.append(evaluate(model, split, "test", KS, chunk_size=args.chunk).seconds)
    evaluation = {
        "embeddings_of_batch": eval_batch,
        "chunk": args.chunk,
        "users_evaluated": n_eval,
        "bare_s": statistics.median(bare),
        "metrics_s": statistics.median(full),
        "evaluate_s": statistics.median(whole),
        "ratio": statistics.median(full) / statistics.median(bare),
        "paired_ratios": [round(f / b, 3) for f, b in zip(full, bare, strict=True)],
        "cpu_ratio": statistics.median(full_cpu) / statistics.median(bare_cpu),
        "bare_all": [round(x, 2) for x in bare],
        "metrics_all": [round(x, 2) for x in full],
        "evaluate_all": [round(x, 2) for x in whole],
        "test_metrics": {k: round(v, 5) for k, v in values.items()},
    }
    print(json.dumps({k: v for k, v in evaluation.items() if k != "test_metrics"}))
    print("test metrics:", json.dumps(evaluation["test_metrics"]))

    memory: dict[str, Any] = {}
    if not args.no_memory:
        for batch in args.batch_sizes:
            memory[f"train_{batch}"] = measure_memory(args, f"train:{batch}")
            print(f"peak memory, one epoch at batch {batch}: {memory[f'train_{batch}']}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "eval.pt")
            torch.save({"user_emb": user_emb, "item_emb": item_emb, "truth": truth, "exclude": exclude}, path)
            for mode in ("bare", "metrics"):
                memory[mode] = measure_memory(args, mode, path)
                print(f"peak memory, evaluation {mode}: {memory[mode]}", flush=True)
    print(f"load average at end: {os.getloadavg()}")

    ref = next((r for r in training if r["batch_size"] == REFERENCE_BATCH), None)

    def mb(key: str) -> str:
        return f"{memory[key]['peak_delta_mb']:.0f}" if key in memory else "-"

    print(
        "\n| threads | s/epoch @2048 | best batch | s/epoch @best | bare s | metrics s | ratio | "
        "peak MB train @2048 / @best | peak MB bare / metrics |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.threads} | {ref['seconds_per_epoch']:.2f} | " if ref else f"| {args.threads} | - | ",
        end="",
    )
    train_ref, train_best = mb(f"train_{REFERENCE_BATCH}"), mb(f"train_{best['batch_size']}")
    print(
        f"{best['batch_size']} | {best['seconds_per_epoch']:.2f} | {evaluation['bare_s']:.2f} | "
        f"{evaluation['metrics_s']:.2f} | {evaluation['ratio']:.2f} | "
        f"{train_ref} / {train_best} | {mb('bare')} / {mb('metrics')} |"
    )
    if args.json is not None:
        results = {
            "machine": machine,
            "threads": args.threads,
            "torch": torch.__version__,
            "num_interactions": args.num_interactions,
            "train_pairs": len(split.train),
            "valid_pairs": len(split.valid),
            "test_pairs": len(split.test),
            "epochs": args.epochs,
            "training": training,
            "evaluation": evaluation,
            "memory": memory,
            "load_average_end": os.getloadavg(),
        }
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
