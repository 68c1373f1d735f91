"""Negative-sampler speed on a Gowalla-size graph (29,858 users, 40,981 items, 810,128 training pairs).

Times ``sample(users, 1)`` per batch for each sampler and batch size, users drawn as in training (the users
of random training pairs, so heavy users come up often). The hard sampler scores its pool with a d=64 dot
product. Also checks that no positive came back.

    .venv/bin/python benchmarks/sampler_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.samplers import make_negative_sampler  # noqa: E402

USERS, ITEMS, TRAIN, DIM = 29_858, 40_981, 810_128, 64


def make_pairs(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    user_weight = torch.randn(USERS, generator=gen).exp()  # log-normal activity
    item_weight = 1.0 / torch.arange(1, ITEMS + 1, dtype=torch.float64) ** 0.8
    users = torch.multinomial(user_weight, int(TRAIN * 1.2), replacement=True, generator=gen)
    items = torch.multinomial(item_weight, int(TRAIN * 1.2), replacement=True, generator=gen)
    keys = torch.unique(users * ITEMS + items)
    keys = keys[torch.randperm(len(keys), generator=gen)[:TRAIN]]
    return torch.stack([keys // ITEMS, keys % ITEMS], 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048, 8192])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = make_pairs()
    gen = torch.Generator().manual_seed(1)
    user_emb, item_emb = torch.randn(USERS, DIM, generator=gen), torch.randn(ITEMS, DIM, generator=gen)

    def score_fn(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (user_emb[users].unsqueeze(1) * item_emb[items]).sum(-1)

    max_deg = int(torch.bincount(pairs[:, 0]).max())
    print(f"{len(pairs)} training pairs, max user degree {max_deg}, threads={args.threads}")
    for name in ("uniform", "popularity", "hard"):
        start = time.perf_counter()
        sampler = make_negative_sampler(name, pairs, USERS, ITEMS)
        build = time.perf_counter() - start
        for batch in args.batch_sizes:
            rows = torch.randint(0, len(pairs), (args.batches, batch), generator=gen)
            sample_gen = torch.Generator().manual_seed(0)
            sampler.sample(pairs[rows[0], 0], 1, generator=sample_gen, score_fn=score_fn)  # warm-up
            leaked = 0
            start = time.perf_counter()
            for b in range(args.batches):
                users = pairs[rows[b], 0]
                neg = sampler.sample(users, 1, generator=sample_gen, score_fn=score_fn)
                if b % 20 == 0:
                    leaked += int(sampler.is_positive(users.unsqueeze(1), neg).sum())
            per_batch_ms = (time.perf_counter() - start) / args.batches * 1000
            row = {"sampler": name, "batch": batch, "ms_per_batch": round(per_batch_ms, 3)}
            row |= {"build_s": round(build, 3), "positives_returned": leaked}
            print(json.dumps(row))


if __name__ == "__main__":
    main()
