"""How training and evaluation cost grow with users, items and edges (issue 13, "Internet scale on paper").

Data: synthetic graphs with **Gowalla's degree distributions** at several sizes. A point is a triple of
multipliers ``(u, i, e)`` on Gowalla's users, items and interactions (29,858 users, 40,981 items, 810,128
training + 217,242 test pairs, the LightGCN split); the five **diagonal** points ``s = 0.25, 0.5, 1, 2, 4``
scale all three together, and three **off-diagonal** points ``(1, 1, 2)``, ``(1, 2, 1)``, ``(2, 1, 1)``
(twice the edges, items or users, the rest as Gowalla) separate the roles of users, items and edges, which
the diagonal alone cannot (along it all three grow together).

* With ``--data-dir`` (the real Gowalla folder, read with ``DataConfig(dataset="lightgcn")`` and the fixed
  split) the generator **resamples the real degrees**: each synthetic user copies the (training, test)
  degrees of a random real user, multiplied by ``e / u`` (stochastic rounding, at least one training
  pair); each synthetic item gets as its weight the total degree of a random real item. A user's items are
  drawn without replacement with probability proportional to the item weights (a bipartite Chung-Lu
  graph: expected item degrees follow Gowalla's item degree distribution, scaled by ``e / i``); the
  user's ``test`` degree of them, chosen at random, form the test part. Items nobody drew are dropped, so
  the item count is slightly below ``i * 40,981`` (reported).
* Without ``--data-dir``: ``tasks.ingest.synthetic.make_synthetic`` at the scaled sizes (log-normal user
  activity, Zipf item popularity: a similar heavy tail, not Gowalla's own) and a random per-user 0.79/0.21
  train/test split, so the test share is Gowalla's. The JSON records which generator ran.

Measured at each point, with ``torch.set_num_threads(--threads)`` (1 by default), in one process unless said:

* **LightGCN step** (3 layers, d 64, BPR, one uniform negative, Adam; ``tasks.train.train``): seconds per
  step at batch ``--batch`` (32,768), from ``--steps`` steps: the trainer runs on a random subset of
  ``steps * batch`` training pairs over the **full** graph (every step propagates over all of it), two
  epochs of ``--steps`` steps, the second timed. **Seconds per epoch** at that batch are
  ``ceil(train pairs / batch) * step``, an extrapolation from the timed steps; at points whose training
  pairs are at most ``--full-epoch-max`` one whole epoch is also run and its time reported beside it, as a
  check of the extrapolation.
* **Evaluation**: ``tasks.evaluate.evaluate(model, split, "test", ks=(20,))`` on the trained LightGCN:
  propagation, full ranking of every item for every test user (chunks of 1024 users, training pairs masked),
  Recall/NDCG@20. One run.
* **GraphSAGE mini-batch step** (``models/graphsage.py``, fan-outs 25,10, mean, d 64; batch ``--sage-batch``
  of 1024 pairs) timed the same way as LightGCN's step, and the sampler alone
  (``models.graph_sampling.sample_neighbors`` on the same seeds a training batch uses, the batch's pairs
  excluded): sampled sub-graphs per second and input nodes per sub-graph.
* **Peak memory** of each of LightGCN training (the same steps), evaluation (ranking the first
  ``--eval-memory-users`` test users, 4096 by default: the peak is one chunk's scores beside the propagated
  embeddings whatever the number of chunks, so the subset keeps the 4x point short), and GraphSAGE
  training in a **fresh subprocess**, which rebuilds the data from a saved copy of the pairs: ``VmHWM`` is
  reset through ``/proc/self/clear_refs`` after the set-up, the figure is the peak minus the resident set
  just before the measured step (``delta``) and the whole-process peak (``peak``), as
  ``benchmarks/scale_speed.py`` does.

Fits (:func:`fit_power_law`): least squares of ``log y`` on ``log x`` (``y = a * x1^b1 * x2^b2 ...``), with
R^2 in log space: each quantity against edges along the diagonal, evaluation against users x items, and each
against (users, items, edges) over all points. Memory is also fitted as a linear model
(:func:`fit_linear`, bytes = ``c0 + c_U * U + c_I * I + c_E * E_train``), which is what the data
structures are. The fits are extrapolated to larger graphs (``TARGETS``) and the results written to
``--json`` and drawn to ``--png`` (measured points and fitted lines; time and memory panels).

Usage::

    .venv/bin/python benchmarks/scaling.py --data-dir /work/shared/datasets/gowalla --threads 1 \\
        --json /tmp/scaling.json --png benchmarks/scaling.png
    .venv/bin/python benchmarks/scaling.py --scales 0.25 0.5 --no-offdiagonal --png /tmp/quick.png
    .venv/bin/python benchmarks/scaling.py --from-json /tmp/scaling.json --png benchmarks/scaling.png  # refit
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_checks.tables import RawTables  # noqa: E402
from models.graph_sampling import BipartiteCSR, sample_neighbors  # noqa: E402
from tasks.config import DataConfig, SplitConfig  # noqa: E402
from tasks.evaluate import evaluate  # noqa: E402
from tasks.graphs import Graphs, build_graphs  # noqa: E402
from tasks.ingest import load_raw  # noqa: E402
from tasks.ingest.dataset import build_dataset  # noqa: E402
from tasks.ingest.synthetic import make_synthetic  # noqa: E402
from tasks.split import Split, split_dataset  # noqa: E402
from tasks.train import TrainConfig, train  # noqa: E402

GOWALLA_USERS, GOWALLA_ITEMS = 29_858, 40_981
GOWALLA_TRAIN, GOWALLA_TEST = 810_128, 217_242
DIAGONAL = (0.25, 0.5, 1.0, 2.0, 4.0)
OFF_DIAGONAL = ((1.0, 1.0, 2.0), (1.0, 2.0, 1.0), (2.0, 1.0, 1.0))
GiB = 2**30
# Sizes the fits are extrapolated to: (name, users, items, training edges).
TARGETS = (
    ("Gowalla x10", 298_580, 409_810, 8_101_280),
    ("Gowalla x100", 2_985_800, 4_098_100, 81_012_800),
    ("10M users, 1M items, 1B edges", 10_000_000, 1_000_000, 1_000_000_000),
    ("10M users, 10M items, 1B edges", 10_000_000, 10_000_000, 1_000_000_000),
)


# -- fitting ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient * prod(x_j ** exponents[j])``, fitted in log-log space.

    Attributes:
        names: What each variable is (``edges``, ``users`` ...).
        coefficient: ``a``.
        exponents: ``b_j``, one per variable.
        r2: Coefficient of determination of the fit of ``log y``.
        points: Number of points fitted.
    """

    names: tuple[str, ...]
    coefficient: float
    exponents: tuple[float, ...]
    r2: float
    points: int

    def predict(self, x: Sequence[float] | Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """``y`` at ``x`` (``[n]`` for one variable, ``[n, k]`` for ``k``)."""
        logs = np.log(_as_matrix(np.asarray(x, dtype=float), len(self.exponents)))
        return np.asarray(self.coefficient * np.exp(logs @ np.asarray(self.exponents)))

    def describe(self) -> str:
        terms = " * ".join(f"{n}^{b:.3f}" for n, b in zip(self.names, self.exponents, strict=True))
        return f"{self.coefficient:.4g} * {terms} (R^2 {self.r2:.4f}, {self.points} points)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "formula": self.describe(),
            "coefficient": self.coefficient,
            "exponents": dict(zip(self.names, self.exponents, strict=True)),
            "r2": self.r2,
            "points": self.points,
        }


def _as_matrix(x: np.ndarray, k: int) -> np.ndarray:
    matrix = x.reshape(-1, 1) if x.ndim == 1 else x
    if matrix.shape[1] != k:
        raise ValueError(f"expected {k} variable(s), got an array of shape {x.shape}")
    return matrix


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else 1.0


def fit_power_law(x: Sequence[float] | np.ndarray, y: Sequence[float], names: Sequence[str]) -> PowerLaw:
    """Fit ``y = a * prod(x_j ** b_j)`` by least squares on ``log y = log a + sum b_j log x_j``.

    Args:
        x: Positive values, ``[n]`` for one variable or ``[n, k]``.
        y: Positive values ``[n]``.
        names: One name per variable.

    Raises:
        ValueError: for non-positive values, mismatched shapes, or fewer points than parameters.
    """
    xs = _as_matrix(np.asarray(x, dtype=float), len(names))
    ys = np.asarray(y, dtype=float)
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x rows but {len(ys)} y values")
    if len(ys) < len(names) + 1:
        raise ValueError(f"{len(ys)} points cannot fit {len(names) + 1} parameters")
    if (xs <= 0).any() or (ys <= 0).any():
        raise ValueError("a power law needs positive x and y")
    design = np.column_stack([np.ones(len(ys)), np.log(xs)])
    coef, *_ = np.linalg.lstsq(design, np.log(ys), rcond=None)
    return PowerLaw(
        names=tuple(names),
        coefficient=float(np.exp(coef[0])),
        exponents=tuple(float(b) for b in coef[1:]),
        r2=_r2(np.log(ys), design @ coef),
        points=len(ys),
    )


def solve_power_law(law: PowerLaw, y: float) -> float:
    """The ``x`` at which a one-variable law reaches ``y``."""
    if len(law.exponents) != 1 or law.exponents[0] == 0:
        raise ValueError("solve_power_law needs a one-variable law with a non-zero exponent")
    return float((y / law.coefficient) ** (1.0 / law.exponents[0]))


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """``y = intercept + sum(coefficients[j] * x_j)`` by least squares; R^2 of ``y`` itself."""

    names: tuple[str, ...]
    intercept: float
    coefficients: tuple[float, ...]
    r2: float

    def predict(self, x: Sequence[float] | Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        matrix = _as_matrix(np.asarray(x, dtype=float), len(self.coefficients))
        return np.asarray(self.intercept + matrix @ np.asarray(self.coefficients))

    def as_dict(self) -> dict[str, Any]:
        return {
            "intercept": self.intercept,
            "coefficients": dict(zip(self.names, self.coefficients, strict=True)),
            "r2": self.r2,
        }


def fit_linear(x: Sequence[float] | np.ndarray, y: Sequence[float], names: Sequence[str]) -> LinearFit:
    """Least-squares ``y = c0 + sum c_j x_j``."""
    xs = _as_matrix(np.asarray(x, dtype=float), len(names))
    ys = np.asarray(y, dtype=float)
    if len(ys) < len(names) + 1:
        raise ValueError(f"{len(ys)} points cannot fit {len(names) + 1} parameters")
    design = np.column_stack([np.ones(len(ys)), xs])
    coef, *_ = np.linalg.lstsq(design, ys, rcond=None)
    return LinearFit(tuple(names), float(coef[0]), tuple(float(c) for c in coef[1:]), _r2(ys, design @ coef))


# -- data -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DegreeProfile:
    """Gowalla's degrees: per user (training, test) and per item (all pairs)."""

    user_train: np.ndarray
    user_test: np.ndarray
    item: np.ndarray


def gowalla_profile(data_dir: Path) -> DegreeProfile:
    """Per-user training and test degrees and per-item degrees of the real LightGCN Gowalla split."""
    dataset = build_dataset(load_raw(DataConfig(dataset="lightgcn", data_dir=data_dir)))
    split = split_dataset(dataset, SplitConfig(method="fixed"))
    return DegreeProfile(
        user_train=np.bincount(split.train[:, 0], minlength=dataset.num_users),
        user_test=np.bincount(split.test[:, 0], minlength=dataset.num_users),
        item=np.bincount(np.concatenate([split.train[:, 1], split.test[:, 1]]), minlength=dataset.num_items),
    )


def _stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low = np.floor(x)
    return (low + (rng.random(len(x)) < x - low)).astype(np.int64)


def resample_pairs(
    profile: DegreeProfile, mult: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (user, item, is_test) of a bipartite Chung-Lu graph with the profile's degree distributions.

    ``mult`` = (users, items, edges) multipliers on the profile's sizes. Users copy a random profile user's
    (training, test) degrees times ``edges / users``; items a random profile item's degree as weight; each
    user's items are distinct, drawn with probability proportional to the weights (a few top-up rounds
    replace the duplicates of a draw, the last ones uniform over the items the user lacks).
    """
    rng = np.random.default_rng(seed)
    num_users = round(mult[0] * len(profile.user_train))
    num_items = round(mult[1] * len(profile.item))
    density = mult[2] / mult[0]
    who = rng.integers(0, len(profile.user_train), num_users)
    d_train = np.maximum(_stochastic_round(profile.user_train[who] * density, rng), 1)
    d_test = _stochastic_round(profile.user_test[who] * density, rng)
    d_train = np.minimum(d_train, num_items)
    d_test = np.minimum(d_test, num_items - d_train)
    want = d_train + d_test
    weights = profile.item[rng.integers(0, len(profile.item), num_items)].astype(np.float64)
    cdf = np.cumsum(weights / weights.sum())
    keys = np.empty(0, dtype=np.int64)
    need = want.copy()
    for round_ in range(8):
        users = np.repeat(np.arange(num_users), need)
        if round_ < 6:
            items = np.minimum(np.searchsorted(cdf, rng.random(len(users))), num_items - 1)
        else:
            items = rng.integers(0, num_items, len(users))
        keys = np.unique(np.concatenate([keys, users * num_items + items]))
        need = want - np.bincount(keys // num_items, minlength=num_users)
        if not need.any():
            break
    user, item = keys // num_items, keys % num_items
    # a random rank within each user; the user's first d_test are its test pairs
    order = np.lexsort((rng.random(len(keys)), user))
    rank = np.empty(len(keys), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=num_users))[:-1]])
    rank[order] = np.arange(len(keys)) - starts[user[order]]
    is_test = rank < d_test[user]
    return user, item, is_test


def synthetic_pairs(mult: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Without the real data: ``make_synthetic`` at the scaled sizes, 21% of each user's pairs as test."""
    num_users = round(mult[0] * GOWALLA_USERS)
    num_items = round(mult[1] * GOWALLA_ITEMS)
    total = round(mult[2] * (GOWALLA_TRAIN + GOWALLA_TEST))
    raw = make_synthetic(num_users, num_items, total, seed=seed, avg_friends=0)
    dataset = build_dataset(raw)
    test_share = GOWALLA_TEST / (GOWALLA_TRAIN + GOWALLA_TEST)
    split = split_dataset(dataset, SplitConfig(method="random", ratios=(1 - test_share, 0.0, test_share)))
    pairs = np.concatenate([split.train, split.test])
    is_test = np.concatenate([np.zeros(len(split.train), bool), np.ones(len(split.test), bool)])
    return pairs[:, 0], pairs[:, 1], is_test


def build(user: np.ndarray, item: np.ndarray, is_test: np.ndarray) -> tuple[Split, Graphs]:
    """The project's fixed split and graphs of the pairs (``build_dataset`` renumbers the ids)."""
    interactions = pd.DataFrame(
        {"user": user, "item": item, "split": np.where(is_test, "test", "train").astype(str)}
    )
    dataset = build_dataset(RawTables(name="gowalla-synthetic", interactions=interactions))
    split = split_dataset(dataset, SplitConfig(method="fixed"))
    return split, build_graphs(dataset, split)


def without_valid(split: Split) -> Split:
    return dataclasses.replace(split, valid=np.empty((0, 2), dtype=np.int64))


def step_split(split: Split, pairs: int, seed: int) -> Split:
    """The split with ``pairs`` random training pairs (the graph is built from all of them beforehand)."""
    rng = np.random.default_rng(seed)
    take = rng.choice(len(split.train), size=min(pairs, len(split.train)), replace=False)
    return dataclasses.replace(without_valid(split), train=split.train[np.sort(take)])


# -- measurements -----------------------------------------------------------------------------------------


def lightgcn_config(args: argparse.Namespace, epochs: int) -> TrainConfig:
    return TrainConfig(
        model="lightgcn",
        hparams={"embedding_dim": 64, "num_layers": 3, "reg_weight": 1e-4},
        epochs=epochs,
        batch_size=args.batch,
        lr=1e-3,
        device="cpu",
        seed=args.seed,
        progress=False,
    )


def sage_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model="graphsage",
        hparams={"embedding_dim": 64, "fan_outs": "25,10", "aggregator": "mean"},
        epochs=2,
        batch_size=args.sage_batch,
        lr=1e-3,
        device="cpu",
        seed=args.seed,
        progress=False,
    )


def timed_steps(graphs: Graphs, split: Split, config: TrainConfig, steps: int) -> tuple[float, Any]:
    """Seconds per step: two epochs of ``steps`` batches over the full graph, the second timed."""
    trained = train(graphs, step_split(split, steps * config.batch_size, config.seed), config)
    return trained.history[-1]["seconds"] / steps, trained


def sampler_rate(graphs: Graphs, split: Split, args: argparse.Namespace) -> dict[str, float]:
    """Sub-graphs per second of ``sample_neighbors`` on GraphSAGE training seeds (users, pos, negs)."""
    csr = BipartiteCSR.from_edge_index(graphs.ui_edge_index, graphs.num_users, graphs.num_items)
    gen = torch.Generator().manual_seed(args.seed)
    train_pairs = torch.as_tensor(split.train, dtype=torch.long).t()
    batches = []
    for _ in range(args.sampler_batches + 1):
        pairs = train_pairs[:, torch.randint(0, train_pairs.shape[1], (args.sage_batch,), generator=gen)]
        negatives = torch.randint(0, graphs.num_items, (args.sage_batch,), generator=gen)
        seeds = torch.cat([pairs[0], graphs.num_users + pairs[1], graphs.num_users + negatives])
        batches.append((seeds, pairs))
    sample_neighbors(csr, batches[0][0], [25, 10], generator=gen, exclude_edges=batches[0][1])
    inputs = 0
    start = time.perf_counter()
    for seeds, pairs in batches[1:]:
        inputs += sample_neighbors(
            csr, seeds, [25, 10], generator=gen, exclude_edges=pairs
        ).input_nodes.numel()
    seconds = time.perf_counter() - start
    return {
        "subgraphs_per_second": args.sampler_batches / seconds,
        "mean_input_nodes": inputs / args.sampler_batches,
        "input_share_of_nodes": inputs / args.sampler_batches / (graphs.num_users + graphs.num_items),
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
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
    """In this fresh process: rebuild the data, reset the peak, run one measured step, print the peak."""
    torch.set_num_threads(args.threads)
    saved = np.load(args.memory_child)
    split, graphs = build(saved["user"], saved["item"], saved["is_test"])
    if args.mode == "lightgcn":
        config = lightgcn_config(args, 2)
        part = step_split(split, args.steps * args.batch, args.seed)
        step: Any = lambda: train(graphs, part, config)  # noqa: E731
    elif args.mode == "graphsage":
        config = sage_config(args)
        part = step_split(split, args.steps * args.sage_batch, args.seed)
        step = lambda: train(graphs, part, config)  # noqa: E731
    else:
        from models.registry import get_model

        model = get_model("lightgcn").from_graphs(graphs, embedding_dim=64, num_layers=3)
        # The peak is one chunk's scores beside the propagated embeddings, the same for any number of
        # chunks: the first --eval-memory-users test users are ranked (all of them with 0).
        users = np.unique(split.test[:, 0])
        subset = users[: args.eval_memory_users] if args.eval_memory_users > 0 else None
        step = lambda: evaluate(model, split, "test", (20,), users=subset)  # noqa: E731
    reset = reset_peak()
    before = rss_bytes()
    step()
    peak = peak_rss_bytes()
    print(
        json.dumps({"delta_bytes": peak - before, "peak_bytes": peak, "before_bytes": before, "reset": reset})
    )


def measure_memory(args: argparse.Namespace, path: str, mode: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        path,
        "--mode",
        mode,
        "--threads",
        str(args.threads),
    ]
    command += ["--steps", str(args.steps), "--batch", str(args.batch), "--sage-batch", str(args.sage_batch)]
    command += ["--seed", str(args.seed), "--eval-memory-users", str(args.eval_memory_users)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure_point(
    args: argparse.Namespace, mult: tuple[float, float, float], profile: DegreeProfile | None, tmp: str
) -> dict[str, Any]:
    start = time.perf_counter()
    if profile is not None:
        user, item, is_test = resample_pairs(profile, mult, args.seed)
    else:
        user, item, is_test = synthetic_pairs(mult, args.seed)
    split, graphs = build(user, item, is_test)
    row: dict[str, Any] = {
        "mult": list(mult),
        "users": graphs.num_users,
        "items": graphs.num_items,
        "train_pairs": len(split.train),
        "test_pairs": len(split.test),
        "data_seconds": time.perf_counter() - start,
        "load_average_start": os.getloadavg()[0],
    }
    print(
        f"point {mult}: {row['users']} users, {row['items']} items, {row['train_pairs']} train, "
        f"{row['test_pairs']} test pairs (built in {row['data_seconds']:.1f} s)",
        flush=True,
    )

    step, trained = timed_steps(graphs, split, lightgcn_config(args, 2), args.steps)
    steps_per_epoch = math.ceil(len(split.train) / args.batch)
    row["lightgcn_step_s"] = step
    row["lightgcn_steps_per_epoch"] = steps_per_epoch
    row["lightgcn_epoch_s"] = step * steps_per_epoch
    if len(split.train) <= args.full_epoch_max:
        full = train(graphs, without_valid(split), lightgcn_config(args, 1))
        row["lightgcn_full_epoch_s"] = full.seconds_per_epoch
    print(
        f"  lightgcn: {step:.3f} s/step at batch {args.batch}, epoch ({steps_per_epoch} steps) "
        f"{row['lightgcn_epoch_s']:.1f} s (full epoch run: {row.get('lightgcn_full_epoch_s', '-')})",
        flush=True,
    )

    metrics = evaluate(trained.model, split, "test", (20,))
    row["eval_s"] = metrics.seconds
    row["eval_users"] = metrics.users_evaluated
    print(f"  evaluate: {metrics.seconds:.1f} s over {metrics.users_evaluated} users", flush=True)

    sage_step, _ = timed_steps(graphs, split, sage_config(args), args.steps)
    row["sage_step_s"] = sage_step
    row["sage_epoch_s"] = sage_step * math.ceil(len(split.train) / args.sage_batch)
    row["sampler"] = sampler_rate(graphs, split, args)
    print(
        f"  graphsage: {sage_step:.3f} s/step at batch {args.sage_batch}; sampler {row['sampler']}",
        flush=True,
    )

    if not args.no_memory:
        path = os.path.join(tmp, "pairs.npz")
        np.savez(path, user=user, item=item, is_test=is_test)
        del split, graphs, trained
        for mode in ("lightgcn", "evaluate", "graphsage"):
            row[f"memory_{mode}"] = measure_memory(args, path, mode)
            print(
                f"  peak memory {mode}: delta {row[f'memory_{mode}']['delta_bytes'] / 2**20:.0f} MiB, "
                f"peak {row[f'memory_{mode}']['peak_bytes'] / 2**20:.0f} MiB",
                flush=True,
            )
    row["load_average_end"] = os.getloadavg()[0]
    return row


# -- fits, extrapolation, figure --------------------------------------------------------------------------


def _memory_field(mode: str, field: str) -> Callable[[dict[str, Any]], float]:
    return lambda row: float(row[f"memory_{mode}"][field])


def fits(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Power laws along the diagonal and over all points, linear memory models, extrapolations."""
    diagonal = [r for r in rows if r["mult"][0] == r["mult"][1] == r["mult"][2]]
    uie = np.array([[r["users"], r["items"], r["train_pairs"]] for r in rows], dtype=float)
    edges = np.array([r["train_pairs"] for r in diagonal], dtype=float)
    ui = np.array([r["users"] * r["items"] for r in diagonal], dtype=float)
    out: dict[str, Any] = {"diagonal": {}, "all_points": {}, "memory_linear": {}}
    quantities: dict[str, Callable[[dict[str, Any]], float]] = {
        "lightgcn_step_s": lambda r: r["lightgcn_step_s"],
        "lightgcn_epoch_s": lambda r: r["lightgcn_epoch_s"],
        "eval_s": lambda r: r["eval_s"],
        "sage_step_s": lambda r: r["sage_step_s"],
        "sage_epoch_s": lambda r: r["sage_epoch_s"],
    }
    if "memory_lightgcn" in rows[0]:
        for mode in ("lightgcn", "evaluate", "graphsage"):
            quantities[f"memory_{mode}_delta"] = _memory_field(mode, "delta_bytes")
            quantities[f"memory_{mode}_peak"] = _memory_field(mode, "peak_bytes")
    for name, get in quantities.items():
        y_diag = [get(r) for r in diagonal]
        if len(diagonal) >= 2:
            out["diagonal"][name] = {"vs_edges": fit_power_law(edges, y_diag, ["edges"]).as_dict()}
            if name == "eval_s":
                out["diagonal"][name]["vs_users_x_items"] = fit_power_law(
                    ui, y_diag, ["users*items"]
                ).as_dict()
        if len(rows) >= 4 and len(rows) > len(diagonal):
            out["all_points"][name] = fit_power_law(uie, [get(r) for r in rows], ["users", "items", "edges"])
        if name.startswith("memory_") and len(rows) >= 3 and len(rows) > len(diagonal):
            out["memory_linear"][name] = fit_linear(uie, [get(r) for r in rows], ["users", "items", "edges"])
    out["extrapolation"] = extrapolate(out)
    for name, law in list(out["all_points"].items()):
        out["all_points"][name] = law.as_dict()
    for name, lin in list(out["memory_linear"].items()):
        out["memory_linear"][name] = lin.as_dict()
    return out


def extrapolate(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's predicted cost from the all-points power laws and the linear memory models."""
    rows = []
    for name, users, items, edges in TARGETS:
        row: dict[str, Any] = {"target": name, "users": users, "items": items, "edges": edges}
        for q, law in out["all_points"].items():
            if isinstance(law, PowerLaw):
                row[q] = float(law.predict([[users, items, edges]])[0])
        for q, lin in out["memory_linear"].items():
            if isinstance(lin, LinearFit):
                row[f"{q}_linear"] = float(lin.predict([[users, items, edges]])[0])
        for q, laws in out["diagonal"].items():  # as if the target were Gowalla-shaped (users, items ~ edges)
            law = laws["vs_edges"]
            row[f"{q}_by_edges"] = law["coefficient"] * edges ** law["exponents"]["edges"]
        rows.append(row)
    return rows


def draw(rows: list[dict[str, Any]], result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diagonal = [r for r in rows if r["mult"][0] == r["mult"][1] == r["mult"][2]]
    off = [r for r in rows if r not in diagonal]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.2))
    grid = np.geomspace(min(r["train_pairs"] for r in rows) / 1.3, 4e9, 200)
    series = [
        ("lightgcn_epoch_s", "LightGCN epoch (batch 32768, full graph)", "C0"),
        ("lightgcn_step_s", "LightGCN step", "C1"),
        ("eval_s", "full-ranking evaluation", "C2"),
        ("sage_epoch_s", "GraphSAGE epoch (batch 1024)", "C3"),
        ("sage_step_s", "GraphSAGE step", "C4"),
    ]
    for key, label, color in series:
        law = result["fits"]["diagonal"].get(key, {}).get("vs_edges")
        b = f", b={law['exponents']['edges']:.2f}" if law else ""
        ax_t.scatter(
            [r["train_pairs"] for r in diagonal], [r[key] for r in diagonal], color=color, label=f"{label}{b}"
        )
        ax_t.scatter([r["train_pairs"] for r in off], [r[key] for r in off], color=color, marker="x")
        if law:
            ax_t.plot(
                grid, law["coefficient"] * grid ** law["exponents"]["edges"], color=color, lw=1, ls="--"
            )
    for hours, text in ((1 / 60, "1 min"), (1, "1 h"), (24, "1 day")):
        ax_t.axhline(hours * 3600, color="grey", lw=0.6, ls=":")
        ax_t.text(grid[0], hours * 3600 * 1.1, text, color="grey", fontsize=8)
    ax_t.set(
        xscale="log",
        yscale="log",
        xlabel="training edges",
        ylabel="seconds (1 thread)",
        title="Time: dots Gowalla-shaped, x off-diagonal, dashed fit",
    )
    ax_t.legend(fontsize=7, loc="upper left")
    if "memory_lightgcn" in rows[0]:
        for mode, label, color in (
            ("lightgcn", "LightGCN training", "C0"),
            ("evaluate", "evaluation", "C2"),
            ("graphsage", "GraphSAGE training", "C3"),
        ):
            key = f"memory_{mode}_peak"
            ys = [r[f"memory_{mode}"]["peak_bytes"] / GiB for r in diagonal]
            ax_m.scatter(
                [r["train_pairs"] for r in diagonal], ys, color=color, label=f"{label} (process peak)"
            )
            ax_m.scatter(
                [r["train_pairs"] for r in off],
                [r[f"memory_{mode}"]["peak_bytes"] / GiB for r in off],
                color=color,
                marker="x",
            )
            # the linear model along Gowalla's shape (users and items in Gowalla's ratio to edges); memory
            # has a fixed part (interpreter, libraries, data), which a power law would bend
            lin = result["fits"]["memory_linear"].get(key)
            law = result["fits"]["diagonal"].get(key, {}).get("vs_edges")
            if lin:
                c = lin["coefficients"]
                per_edge = (c["users"] * GOWALLA_USERS + c["items"] * GOWALLA_ITEMS) / GOWALLA_TRAIN + c[
                    "edges"
                ]
                ax_m.plot(grid, (lin["intercept"] + per_edge * grid) / GiB, color=color, lw=1, ls="--")
            elif law:
                fitted = law["coefficient"] * grid ** law["exponents"]["edges"]
                ax_m.plot(grid, fitted / GiB, color=color, lw=1, ls="--")
        ax_m.axhline(24, color="grey", lw=0.6, ls=":")
        ax_m.text(grid[0], 26, "24 GiB", color="grey", fontsize=8)
        ax_m.set(
            xscale="log",
            yscale="log",
            xlabel="training edges",
            ylabel="GiB",
            title="Peak RSS (fresh process each); dashed: linear fit",
        )
        ax_m.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict[str, Any]) -> str:
    """The measurements per point, the fitted laws and the extrapolations as Markdown tables."""
    mib = 2**20
    lines = [
        "| point (U, I, E mult.) | users | items | train pairs | LightGCN s/step | s/epoch (steps) | "
        "full epoch s | evaluate s | SAGE s/step | SAGE s/epoch | sub-graphs/s (input share) | "
        "peak MiB LightGCN / eval / SAGE (delta) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["points"]:
        full = r.get("lightgcn_full_epoch_s")
        mem = "-"
        if "memory_lightgcn" in r:
            peaks = [r[f"memory_{m}"] for m in ("lightgcn", "evaluate", "graphsage")]
            mem = " / ".join(f"{p['peak_bytes'] / mib:.0f}" for p in peaks)
            mem += " (" + " / ".join(f"{p['delta_bytes'] / mib:.0f}" for p in peaks) + ")"
        sampler = r["sampler"]
        lines.append(
            f"| {tuple(r['mult'])} | {r['users']:,} | {r['items']:,} | {r['train_pairs']:,} | "
            f"{r['lightgcn_step_s']:.3f} | {r['lightgcn_epoch_s']:.1f} ({r['lightgcn_steps_per_epoch']}) | "
            f"{'-' if full is None else f'{full:.1f}'} | {r['eval_s']:.1f} | {r['sage_step_s']:.3f} | "
            f"{r['sage_epoch_s']:.0f} | {sampler['subgraphs_per_second']:.1f} "
            f"({sampler['input_share_of_nodes']:.2f}) | {mem} |"
        )
    fitted = result["fits"]
    lines += [
        "",
        "| quantity | diagonal: vs edges | over all points: vs users, items, edges |",
        "|---|---|---|",
    ]
    for name, laws in fitted["diagonal"].items():
        extra = f"; vs U*I: {laws['vs_users_x_items']['formula']}" if "vs_users_x_items" in laws else ""
        every = fitted["all_points"].get(name, {}).get("formula", "-")
        lines.append(f"| {name} | {laws['vs_edges']['formula']}{extra} | {every} |")
    if fitted["memory_linear"]:
        lines += [
            "",
            "| memory (bytes) | intercept | per user | per item | per training edge | R^2 |",
            "|---|---|---|---|---|---|",
        ]
        for name, lin in fitted["memory_linear"].items():
            c = lin["coefficients"]
            lines.append(
                f"| {name} | {lin['intercept'] / mib:.0f} MiB | {c['users']:.0f} | {c['items']:.0f} | "
                f"{c['edges']:.1f} | "
                f"{lin['r2']:.4f} |"
            )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="real Gowalla (LightGCN split) for degrees"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--scales", type=float, nargs="+", default=list(DIAGONAL))
    parser.add_argument("--no-offdiagonal", action="store_true", help="only the diagonal points")
    parser.add_argument("--batch", type=int, default=32768, help="LightGCN batch")
    parser.add_argument("--sage-batch", type=int, default=1024, help="GraphSAGE batch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--sampler-batches", type=int, default=10)
    parser.add_argument(
        "--full-epoch-max",
        type=int,
        default=1_000_000,
        help="also run a whole LightGCN epoch where the training pairs are at most this",
    )
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--eval-memory-users", type=int, default=4096, help="test users ranked in the evaluation memory child"
    )
    parser.add_argument("--from-json", type=Path, default=None, help="only refit and redraw these points")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="lightgcn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(
        f"machine {platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, "
        f"threads {args.threads}, load {os.getloadavg()}",
        flush=True,
    )
    if args.from_json is not None:
        result: dict[str, Any] = json.loads(args.from_json.read_text())
        rows = result["points"]
    else:
        profile = gowalla_profile(args.data_dir) if args.data_dir is not None else None
        points = [(s, s, s) for s in args.scales] + ([] if args.no_offdiagonal else list(OFF_DIAGONAL))
        rows = []
        result = {
            "generator": "resampled Gowalla degrees" if profile is not None else "make_synthetic",
            "machine": {"nproc": os.cpu_count(), "platform": platform.platform()},
            "threads": args.threads,
            "torch": torch.__version__,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "points": rows,
        }
        with tempfile.TemporaryDirectory() as tmp:
            for mult in points:
                rows.append(measure_point(args, mult, profile, tmp))
                if args.json is not None:  # after every point, so that a stopped run keeps what it measured
                    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["fits"] = fits(rows)
    if args.from_json is None:
        result["wall_seconds"] = time.perf_counter() - started
    print(json.dumps(result["fits"], indent=2, default=str))
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.png is not None:
        draw(rows, result, args.png)


if __name__ == "__main__":
    main()
