"""Graph sampling speed at Gowalla scale (issue 11): GraphSAGE neighbour sampling and PinSage random walks.

Data: the real Gowalla training graph (29,858 users, 40,981 items, 810,128 training pairs), read with the
project's loader (``DataConfig(dataset="lightgcn")``, fixed split) from ``--data-dir``; only the training
pairs are used, as a :class:`models.graph_sampling.BipartiteCSR`.

Measurements, in one process:

* **CSR build**: seconds for ``BipartiteCSR.from_edge_index`` (once).
* **Neighbour sampling, user seeds**: ``sample_neighbors`` on batches of ``--batch-size`` seed users (a seeded
  shuffle of all users; ``--epochs`` passes, the last batch of a pass may be smaller) with ``--fan-outs``
  (default 10 10). Sampled sub-graphs per second, after one untimed warm-up batch; mean nodes per hop and
  edges per block.
* **Neighbour sampling, training batches**: what mini-batch GraphSAGE training with BPR samples: for
  ``--batch-size`` random training pairs, seeds are the users, their positive items and one uniform random
  item each (joint ids, up to ``3 * batch`` seeds), and the pairs themselves are excluded
  (``exclude_edges``) so the predicted edge does not leak. ``--train-batches`` batches.
* **Random walks**: ``random_walk_neighbors`` for every item, ``--walks`` walks of ``--walk-length`` hops,
  top ``--top``; ``--repeats`` runs, median and min seconds; how many items got a full top-T.
* **Machine**: ``nproc``, the CPU model, and the 1-minute load average at the start and the end (other
  processes sharing the cores slow every figure, and multi-threaded ones most).
* **Peak memory**: the process's peak resident set (``VmHWM``) at the end, and the resident set after the
  data was loaded, for scale.

Usage::

    .venv/bin/python benchmarks/sampling_speed.py --threads 1
    .venv/bin/python benchmarks/sampling_speed.py --threads 2 --json sampling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.graph_sampling import BipartiteCSR, random_walk_neighbors, sample_neighbors  # noqa: E402
from tasks.config import DataConfig, SplitConfig  # noqa: E402
from tasks.ingest import load_raw  # noqa: E402
from tasks.ingest.dataset import build_dataset  # noqa: E402
from tasks.split import split_dataset  # noqa: E402

DEFAULT_DIR = Path("/work/shared/datasets/gowalla")


def memory_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status`` in KiB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_train_pairs(data_dir: Path) -> tuple[torch.Tensor, int, int]:
    raw = load_raw(DataConfig(dataset="lightgcn", data_dir=data_dir))
    dataset = build_dataset(raw)
    split = split_dataset(dataset, SplitConfig(method="fixed"))
    return (
        torch.as_tensor(split.train, dtype=torch.long).t().contiguous(),
        dataset.num_users,
        dataset.num_items,
    )


def bench_user_batches(graph: BipartiteCSR, args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed)
    batches = [
        chunk
        for _ in range(args.epochs)
        for chunk in torch.randperm(graph.num_users, generator=gen).split(args.batch_size)
    ]
    sample_neighbors(graph, batches[0], args.fan_outs, generator=gen)  # warm-up
    nodes = [0.0] * (len(args.fan_outs) + 1)
    edges = [0.0] * len(args.fan_outs)
    start = time.perf_counter()
    for seeds in batches:
        sub = sample_neighbors(graph, seeds, args.fan_outs, generator=gen)
        for h, ids in enumerate(sub.node_ids):
            nodes[h] += ids.numel()
        for b, block in enumerate(sub.blocks):
            edges[b] += block.edge_index.shape[1]
    seconds = time.perf_counter() - start
    return {
        "batches": len(batches),
        "seconds": seconds,
        "subgraphs_per_second": len(batches) / seconds,
        "seconds_per_epoch": seconds / args.epochs,
        "mean_nodes_per_hop_input_first": [round(n / len(batches), 1) for n in nodes],
        "mean_edges_per_block": [round(e / len(batches), 1) for e in edges],
    }


def bench_training_batches(
    graph: BipartiteCSR, train: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(args.train_batches + 1):  # the first is a warm-up
        pairs = train[:, torch.randint(0, train.shape[1], (args.batch_size,), generator=gen)]
        negatives = torch.randint(0, graph.num_items, (args.batch_size,), generator=gen)
        seeds = torch.cat([pairs[0], graph.num_users + pairs[1], graph.num_users + negatives])
        batches.append((seeds, pairs))
    sample_neighbors(graph, batches[0][0], args.fan_outs, generator=gen, exclude_edges=batches[0][1])
    seeds_total, input_total = 0, 0
    start = time.perf_counter()
    for seeds, pairs in batches[1:]:
        sub = sample_neighbors(graph, seeds, args.fan_outs, generator=gen, exclude_edges=pairs)
        seeds_total += sub.seed_nodes.numel()
        input_total += sub.input_nodes.numel()
    seconds = time.perf_counter() - start
    return {
        "batches": args.train_batches,
        "seconds": seconds,
        "subgraphs_per_second": args.train_batches / seconds,
        "mean_distinct_seeds": round(seeds_total / args.train_batches, 1),
        "mean_input_nodes": round(input_total / args.train_batches, 1),
    }


def bench_walks(graph: BipartiteCSR, args: argparse.Namespace) -> dict[str, Any]:
    times = []
    for r in range(args.repeats):
        gen = torch.Generator().manual_seed(args.seed + 100 + r)
        start = time.perf_counter()
        neighbors, weights = random_walk_neighbors(
            graph, args.top, num_walks=args.walks, walk_length=args.walk_length, generator=gen
        )
        times.append(time.perf_counter() - start)
    found = (neighbors >= 0).sum(1)
    return {
        "items": graph.num_items,
        "walks_per_item": args.walks,
        "walk_length": args.walk_length,
        "top": args.top,
        "seconds_each": [round(t, 3) for t in times],
        "seconds_median": statistics.median(times),
        "seconds_min": min(times),
        "items_with_full_top": int((found == args.top).sum()),
        "mean_neighbours_found": round(float(found.double().mean()), 2),
        "weights_sum_ok": bool(torch.allclose(weights.sum(1)[found > 0], torch.ones(int((found > 0).sum())))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fan-outs", type=int, nargs="+", default=[10, 10])
    parser.add_argument("--epochs", type=int, default=2, help="passes over all users for the user batches")
    parser.add_argument("--train-batches", type=int, default=30)
    parser.add_argument("--walks", type=int, default=10)
    parser.add_argument("--walk-length", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    start = time.perf_counter()
    train, num_users, num_items = load_train_pairs(args.data_dir)
    load_seconds = time.perf_counter() - start
    rss_after_load = memory_kib("VmRSS")
    start = time.perf_counter()
    graph = BipartiteCSR.from_edge_index(train, num_users, num_items)
    csr_seconds = time.perf_counter() - start
    print(
        f"data: {num_users} users, {num_items} items, {train.shape[1]} training pairs "
        f"(load {load_seconds:.1f} s, CSR {csr_seconds:.3f} s)",
        flush=True,
    )

    users = bench_user_batches(graph, args)
    print("user batches:", json.dumps(users), flush=True)
    training = bench_training_batches(graph, train, args)
    print("training batches:", json.dumps(training), flush=True)
    walks = bench_walks(graph, args)
    print("random walks:", json.dumps(walks), flush=True)

    results = {
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            # other processes compete for the cores: the 1-minute load average at the start and the end
            "load_average_1min": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        },
        "threads": args.threads,
        "torch": torch.__version__,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"users": num_users, "items": num_items, "train_pairs": int(train.shape[1])},
        "csr_build_seconds": csr_seconds,
        "user_batches": users,
        "training_batches": training,
        "random_walks": walks,
        "rss_after_load_mib": round(rss_after_load / 1024, 1),
        "peak_rss_mib": round(memory_kib("VmHWM") / 1024, 1),
    }
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
