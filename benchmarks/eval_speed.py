"""Full-ranking evaluation speed at Gowalla size (issue 3, bar b): metrics vs bare chunked matmul + topk.

Random embeddings (29,858 users, 40,981 items, d=64) and random skewed (user, item) pairs: 810,128
training pairs to exclude and 100,000 truth pairs (every user has at least one). Two things are timed,
interleaved in the same process so that load from other processes hits both alike:

  (a) bare: for each chunk of users, ``user_emb[chunk] @ item_emb.T`` then ``topk(max K)``;
  (b) ``tasks.evaluate.full_ranking_metrics`` with the same embeddings and chunk size: the same matmul and
      topk, plus masking the excluded pairs, the hit look-up and all metrics for K in (10, 20).

Both wall time and process CPU time are reported; on a loaded machine the CPU-time ratio is the steadier.

Peak memory of each is measured in a fresh subprocess (peak resident set ``VmHWM`` after the run minus the
resident set just before it), because ``tracemalloc`` does not see torch's allocations and ``ru_maxrss``
carries the parent's peak across ``exec``.

    .venv/bin/python benchmarks/eval_speed.py --repeats 3 --chunks 1024 2048 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.evaluate import full_ranking_metrics  # noqa: E402

USERS, ITEMS, DIM = 29_858, 40_981, 64
TRAIN, TRUTH = 810_128, 100_000
KS = (10, 20)


def make_data(seed: int = 0) -> dict[str, torch.Tensor]:
    """Embeddings plus disjoint train/truth pairs with long-tailed user activity and item popularity."""
    gen = torch.Generator().manual_seed(seed)
    user_weight = torch.randn(USERS, generator=gen).exp()  # log-normal activity
    item_weight = 1.0 / torch.arange(1, ITEMS + 1, dtype=torch.float64) ** 0.8
    item_weight = item_weight[torch.randperm(ITEMS, generator=gen)]
    want = int((TRAIN + TRUTH) * 1.25)
    users = torch.multinomial(user_weight, want, replacement=True, generator=gen)
    items = torch.multinomial(item_weight, want, replacement=True, generator=gen)
    keys = torch.unique(users * ITEMS + items)
    keys = keys[torch.randperm(len(keys), generator=gen)]
    # One truth item per user first, so every user is evaluated.
    first_truth = torch.arange(USERS) * ITEMS + torch.randint(0, ITEMS, (USERS,), generator=gen)
    keys = keys[~torch.isin(keys, first_truth)]
    truth_keys = torch.cat([first_truth, keys[: TRUTH - USERS]])
    train_keys = keys[TRUTH - USERS : TRUTH - USERS + TRAIN]
    assert len(train_keys) == TRAIN, "not enough unique pairs drawn"

    def to_pairs(k: torch.Tensor) -> torch.Tensor:
        return torch.stack([k // ITEMS, k % ITEMS], 1)

    return {
        "user_emb": torch.randn(USERS, DIM, generator=gen),
        "item_emb": torch.randn(ITEMS, DIM, generator=gen),
        "train": to_pairs(train_keys),
        "truth": to_pairs(truth_keys),
    }


def run_bare(data: dict[str, torch.Tensor], chunk: int) -> tuple[float, float]:
    """Wall and process CPU seconds of the bare chunked matmul + topk."""
    user_emb, item_emb = data["user_emb"], data["item_emb"]
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for s in range(0, USERS, chunk):
            scores = user_emb[s : s + chunk] @ item_emb.T
            torch.topk(scores, max(KS), dim=1)
    return time.perf_counter() - start, time.process_time() - cpu


def run_metrics(data: dict[str, torch.Tensor], chunk: int) -> tuple[float, float, dict[str, float]]:
    """Wall and process CPU seconds of ``full_ranking_metrics``, and its values."""
    user_emb, item_emb = data["user_emb"], data["item_emb"]
    start, cpu = time.perf_counter(), time.process_time()
    metrics = full_ranking_metrics(
        lambda users: user_emb[users] @ item_emb.T,
        data["truth"],
        data["train"],
        USERS,
        ITEMS,
        KS,
        chunk_size=chunk,
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    assert metrics.users_evaluated == USERS
    return seconds, cpu_seconds, metrics.values


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident set (``VmHWM``), falling back to ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec`` and so can report the parent's peak in a fresh subprocess; ``VmHWM``
    belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(path: str, mode: str, chunk: int, threads: int) -> None:
    torch.set_num_threads(threads)
    data = torch.load(path)
    before = rss_bytes()
    if mode == "bare":
        run_bare(data, chunk)
    else:
        run_metrics(data, chunk)
    peak = peak_rss_bytes()
    print(
        json.dumps(
            {
                "peak_delta_mb": (peak - before) / 2**20,
                "peak_rss_mb": peak / 2**20,
                "before_mb": before / 2**20,
            }
        )
    )


def measure_memory(path: str, mode: str, chunk: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", path, "--mode", mode, "--chunks", str(chunk)]
        + ["--threads", str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="metrics", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.mode, args.chunks[0], args.threads)
        return

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = make_data()
    print(
        f"data: {USERS} users, {ITEMS} items, d={DIM}, train {len(data['train'])}, truth {len(data['truth'])}"
    )
    print(
        f"made in {time.perf_counter() - t0:.1f}s; threads={args.threads}; "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"load average at start: {os.getloadavg()}")

    results = []
    reference: dict[str, float] | None = None
    for chunk in args.chunks:
        bare, full, bare_cpu, full_cpu = [], [], [], []
        run_bare(data, chunk)  # warm-up: first-call kernel set-up is not what is being compared
        run_metrics(data, chunk)
        for _ in range(args.repeats):
            wall, cpu = run_bare(data, chunk)
            bare.append(wall)
            bare_cpu.append(cpu)
            seconds, cpu_seconds, values = run_metrics(data, chunk)
            full.append(seconds)
            full_cpu.append(cpu_seconds)
            if reference is None:
                reference = values
            assert all(abs(values[k] - reference[k]) < 1e-9 for k in values), "chunk size changed the metrics"
        row = {
            "chunk": chunk,
            "bare_s": statistics.median(bare),
            "metrics_s": statistics.median(full),
            "ratio_of_medians": statistics.median(full) / statistics.median(bare),
            "paired_ratios": [round(f / b, 3) for f, b in zip(full, bare, strict=True)],
            "bare_all": [round(x, 2) for x in bare],
            "metrics_all": [round(x, 2) for x in full],
            "cpu_ratio_of_medians": statistics.median(full_cpu) / statistics.median(bare_cpu),
            "bare_cpu_all": [round(x, 2) for x in bare_cpu],
            "metrics_cpu_all": [round(x, 2) for x in full_cpu],
        }
        results.append(row)
        print(json.dumps(row))

    if not args.no_memory:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "data.pt")
            torch.save(data, path)
            for row in results:
                for mode in ("bare", "metrics"):
                    mem = measure_memory(path, mode, int(row["chunk"]), args.threads)
                    row[f"{mode}_peak_delta_mb"] = round(mem["peak_delta_mb"], 1)
                print(
                    f"chunk {row['chunk']}: peak memory over baseline bare {row['bare_peak_delta_mb']} MB, "
                    f"metrics {row['metrics_peak_delta_mb']} MB"
                )

    best_bare = min(results, key=lambda r: r["bare_s"])
    best_full = min(results, key=lambda r: r["metrics_s"])
    print(f"load average at end: {os.getloadavg()}")
    print(
        f"best bare {best_bare['bare_s']:.2f}s (chunk {best_bare['chunk']}), best metrics "
        f"{best_full['metrics_s']:.2f}s (chunk {best_full['chunk']}), "
        f"ratio {best_full['metrics_s'] / best_bare['bare_s']:.3f}"
    )
    assert reference is not None
    print("metrics:", json.dumps({k: round(v, 5) for k, v in reference.items()}))


if __name__ == "__main__":
    main()
