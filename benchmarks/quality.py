"""Quality of the registered models (MF-BPR, LightGCN, NGCF, ItemKNN, EASE...) on real data, and popularity.

* MovieLens 100K: every rating is a positive; random per-user 80/10/10 split, seed 2020.
* HetRec Last.fm 2K: every (user, artist) pair is a positive; random per-user 8:1:1 split, seed 2020 (the
  protocol of RecBole-GNN's published social-recommendation table: random 8:1:1, full ranking, @10, where
  LightGCN scored Recall@10 0.2064 / NDCG@10 0.1972, NGCF 0.1960 / 0.1898, BPR 0.1761 / 0.1674).
* With ``--datasets movielens-100k-kg lastfm-kg``: the same split on the knowledge-aware versions (RecBole's
  MovieLens 100K with its Freebase KG; KGCN's Last.fm, plays of KG-linked artists, with the Satori KG), for
  the KG models (``kgat``).
* With ``--datasets filmtrust``: FilmTrust ratings (every rating a positive) and its trust network, the same
  random per-user split, for the social models (``sociallgn``, ``socialgat``).

Full ranking over all items; train items masked (and validation items when scoring test). Each model trains
with early stopping on validation NDCG@10 and is reported on test at its best validation epoch, overall and
on the long tail (``test_long_tail``: only test items outside the ``--long-tail`` share, default 20%, of
most popular training items count as relevant; ``tasks.evaluate.evaluate(long_tail=...)``).

RecBole-GNN's Last.fm runs (``results/social/lastfm.md``) used the same 1892 users, 17632 items and 92834
pairs with no filtering, batch 4096, early stopping after 50 evaluations without a better valid NDCG@10
(one per epoch), at most 5000 epochs, d = 64, and learning rates picked on validation (LightGCN 1e-3 with 3
layers, NGCF and BPR 5e-4). ``--batch-size 4096 --eval-every 5 --patience 10`` is the nearest setting here.

Usage::

    .venv/bin/python benchmarks/quality.py --threads 1 --json benchmarks/quality.json

``--recbole-split DIR`` trains and scores on a split written as RecBole benchmark files instead, e.g. the one
``benchmarks/recbole_reference.py --export DIR`` takes from RecBole itself, so gnnrec and RecBole's own code
are compared on identical data (``--published-as lastfm-hetrec`` records the published figures beside).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.serving import Servable
from tasks.config import DataConfig, SplitConfig
from tasks.evaluate import evaluate, popularity_metrics, sparse_users
from tasks.graphs import Graphs, build_graphs
from tasks.ingest import load_raw
from tasks.ingest.dataset import build_dataset
from tasks.split import Split, split_dataset
from tasks.train import TrainConfig, train

DATASETS = {
    "movielens-100k": Path("/work/shared/datasets/ml-100k"),
    "lastfm-hetrec": Path("/work/shared/datasets/lastfm-hetrec"),
    "movielens-100k-kg": Path("/work/shared/datasets/ml-100k-kg"),
    "lastfm-kg": Path("/work/shared/datasets/lastfm-kg"),
    "filmtrust": Path("/work/shared/datasets/filmtrust"),
}
PUBLISHED = {
    "lastfm-hetrec": {
        "lightgcn": {"recall@10": 0.2064, "ndcg@10": 0.1972},
        "ngcf": {"recall@10": 0.1960, "ndcg@10": 0.1898},
        "mf": {"recall@10": 0.1761, "ndcg@10": 0.1674},
    }
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", nargs="+", default=["movielens-100k", "lastfm-hetrec"], choices=list(DATASETS)
    )
    parser.add_argument("--models", nargs="+", default=["mf", "lightgcn", "ngcf"])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--patience", type=int, default=5, help="evaluations without improvement")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=None, help="per model")
    parser.add_argument(
        "--hparams",
        type=json.loads,
        default={},
        help='per model, e.g. {"mf": {"reg_weight": 1e-3}}; a list of sets is a grid, the pick is the best '
        'valid NDCG@10, e.g. {"ease": [{"l2": 100}, {"l2": 500}]}',
    )
    parser.add_argument("--sampling", choices=["pairs", "users"], default="pairs")
    parser.add_argument(
        "--train",
        type=json.loads,
        default={},
        help='other TrainConfig fields, e.g. {"loss": "softmax", "num_negatives": 64} or {"seed": 1} '
        "(the training seed; --seed stays the split seed)",
    )
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument(
        "--split",
        choices=["random", "temporal", "cold-items"],
        default="random",
        help="per-user 80/10/10 random or temporal (oldest train, newest test), or cold-items (items held "
        "out whole, only they are ranked)",
    )
    parser.add_argument("--cold-fraction", type=float, default=0.2, help="with --split cold-items")
    parser.add_argument(
        "--recbole-split",
        type=Path,
        default=None,
        help="instead of --datasets: a folder of RecBole benchmark files (<name>.train/.valid/.test.inter), "
        "trained and scored on exactly that split, e.g. the split RecBole itself makes (see RESULTS.md)",
    )
    parser.add_argument(
        "--lightgcn-split",
        type=Path,
        default=None,
        help="instead of --datasets: the folder of a LightGCN/SocialLGN fixed split (train_set.txt, "
        "test_set.txt or train.txt, test.txt; + trust.txt); validation comes from train (--valid-from-train)",
    )
    parser.add_argument(
        "--valid-from-train",
        type=float,
        default=0.1,
        help="with --lightgcn-split: the per-user share of training pairs moved to validation (split seed)",
    )
    parser.add_argument(
        "--published-as",
        choices=list(PUBLISHED),
        default=None,
        help="with --recbole-split: which dataset's published figures the split is of",
    )
    parser.add_argument(
        "--eval-export",
        action="store_true",
        help="also score the test part with the exported servable (what MLflow serves: for EASE the "
        "pruned top-N matrix), reported as test_exported",
    )
    parser.add_argument(
        "--long-tail",
        type=float,
        default=0.2,
        help="also report test metrics on long-tail items only: truth items outside this share of most "
        "popular training items (test_long_tail)",
    )
    parser.add_argument(
        "--sparse-users",
        type=int,
        default=None,
        metavar="N",
        help="also report test metrics of the users with at most N training pairs (test_sparse_users)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="print every validation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results: dict[str, Any] = {
        "machine": platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "protocol": f"{args.split} split (80/10/10 per user; cold-items: {args.cold_fraction} of items), "
        "full ranking, train (+valid for test) masked, early stop on "
        "valid ndcg@10, test at the best valid epoch",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {},
    }
    sources: list[tuple[str, DataConfig, SplitConfig]] = [
        (
            name,
            DataConfig(dataset=name, data_dir=DATASETS[name], download=False),
            SplitConfig(
                method=args.split, ratios=(0.8, 0.1, 0.1), cold_fraction=args.cold_fraction, seed=args.seed
            ),
        )
        for name in args.datasets
    ]
    if args.recbole_split is not None:
        results["protocol"] = results["protocol"].replace("random per-user 80/10/10", "the given fixed split")
        sources = [
            (
                f"recbole-split:{args.recbole_split}",
                DataConfig(dataset="recbole", data_dir=args.recbole_split, download=False),
                SplitConfig(method="fixed", seed=args.seed),
            )
        ]
    if args.lightgcn_split is not None:
        results["protocol"] = (
            f"the given fixed train/test split, {args.valid_from_train} of each user's training pairs moved "
            "to validation (split seed), full ranking, early stop on valid ndcg@10, test at the best epoch"
        )
        sources = [
            (
                f"lightgcn-split:{args.lightgcn_split}",
                DataConfig(dataset="lightgcn", data_dir=args.lightgcn_split, download=False),
                SplitConfig(method="fixed", valid_from_train=args.valid_from_train, seed=args.seed),
            )
        ]
    for name, data_config, split_config in sources:
        raw = load_raw(data_config)
        dataset = build_dataset(raw)
        split = split_dataset(dataset, split_config)
        published = PUBLISHED.get(args.published_as or name, {})
        graphs = build_graphs(dataset, split)
        entry: dict[str, Any] = {"summary": dataset.summary(), "split": split.describe(), "models": {}}
        pop = popularity_metrics(split, "test", ks=(10, 20))
        pop_tail = popularity_metrics(split, "test", ks=(10, 20), long_tail=args.long_tail)
        entry["models"]["popularity"] = {"test": pop.values, "test_long_tail": pop_tail.values}
        print(
            f"{name}: {dataset.summary()} {split.describe()} | popularity test {_fmt(pop.values)} "
            f"long-tail {_fmt(pop_tail.values)}",
            flush=True,
        )
        for model in args.models:
            # A list of hyperparameter sets is a grid: each is trained, the best valid NDCG@10 is the pick.
            given = args.hparams.get(model, {})
            grid = given if isinstance(given, list) else [given]
            runs = []
            for hparams in grid:
                runs.append(_run_one(args, graphs, split, model, hparams, published.get(model)))
                if len(grid) > 1:
                    print(f"    grid {hparams}: valid ndcg@10 {runs[-1]['valid']['ndcg@10']:.4f}", flush=True)
            best = max(runs, key=lambda run: run["valid"]["ndcg@10"])
            entry["models"][model] = {**best, "grid": runs} if len(grid) > 1 else best
            print(
                f"  {model:9s} test {_fmt(best['test'])} | {best['hparams']} valid ndcg@10 "
                f"{best['valid']['ndcg@10']:.4f} | best epoch {best['best_epoch']}/{best['epochs_run']} "
                f"({best['stop_reason']}), {best['seconds']:.0f} s, {best['seconds_per_epoch']:.3f} s/epoch",
                flush=True,
            )
            print(f"  {model:9s} long-tail test {_fmt(best['test_long_tail'])}", flush=True)
            if best["test_sparse_users"] is not None:
                group = best["test_sparse_users"]
                print(
                    f"  {model:9s} test of the {group['users']} users with <= {group['max_train_pairs']} "
                    f"training pairs {_fmt({k: v for k, v in group.items() if '@' in k})}",
                    flush=True,
                )
            if best["explained_share"] is not None:
                print(f"  {model:9s} top-10 items with a KG path: {best['explained_share']:.1%}", flush=True)
            if best["test_exported"] is not None:
                print(f"  {model:9s} test {_fmt(best['test_exported'])} (exported servable)", flush=True)
            results["datasets"][name] = entry
            if args.json is not None:
                args.json.write_text(json.dumps(results, indent=2))
        results["datasets"][name] = entry
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


def _run_one(
    args: argparse.Namespace,
    graphs: Graphs,
    split: Split,
    model: str,
    hparams: dict[str, Any],
    published: dict[str, float] | None,
) -> dict[str, Any]:
    """Train one model with one hyperparameter set; its valid, test (and exported test) figures."""
    fields: dict[str, Any] = dict(
        model=model,
        hparams=hparams,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        sampling=args.sampling,
        patience=args.patience,
        eval_every=args.eval_every,
        metric="ndcg@10",
        ks=(10, 20),
        device="auto",
        seed=args.seed,
        max_seconds=args.max_seconds,
        progress=False,
    )
    fields.update(args.train)  # --train overrides, e.g. a training seed other than the split seed
    config = TrainConfig(**fields)
    start = time.perf_counter()
    trained = train(graphs, split, config, on_epoch=_print_valid if args.verbose else None)
    seconds = time.perf_counter() - start
    test = evaluate(trained.model, split, "test", ks=(10, 20))
    test_tail = evaluate(trained.model, split, "test", ks=(10, 20), long_tail=args.long_tail)
    sparse: dict[str, Any] | None = None
    if args.sparse_users is not None:
        chosen = sparse_users(split, args.sparse_users)
        subgroup = evaluate(trained.model, split, "test", ks=(10, 20), users=chosen)
        sparse = {"max_train_pairs": args.sparse_users, "users": subgroup.users_evaluated, **subgroup.values}
    assert trained.best_valid is not None
    exported = (
        evaluate(_ServableScorer(trained.model.export()), split, "test", ks=(10, 20)).values
        if args.eval_export
        else None
    )
    return {
        "hparams": trained.model.hparams,
        "train": args.train,
        "valid": trained.best_valid.values,
        "test": test.values,
        "test_long_tail": test_tail.values,
        "long_tail_users": test_tail.users_evaluated,
        "test_sparse_users": sparse,
        "explained_share": _explained_share(trained.model, split),
        "test_exported": exported,
        "best_epoch": trained.best_epoch,
        "epochs_run": trained.epochs_run,
        "stop_reason": trained.stop_reason,
        "seconds": seconds,
        "seconds_per_epoch": trained.seconds_per_epoch,
        "published": published,
    }


def _explained_share(model: Any, split: Split, users: int = 200, k: int = 10) -> float | None:
    """For a model that explains (KGAT): the share of the first ``users`` users' top-``k`` items (train
    and valid masked) that at least one KG path from the user's training items reaches; else ``None``."""
    make = getattr(model, "explainer", None)
    if make is None:
        return None
    explainer = make()
    chosen = torch.arange(min(users, split.num_users))
    with model.inference():
        scores = model.score_users(chosen).clone()
    seen = np.concatenate([split.train, split.valid])
    seen = seen[seen[:, 0] < len(chosen)]
    scores[torch.as_tensor(seen[:, 0]), torch.as_tensor(seen[:, 1])] = -torch.inf
    top = scores.topk(k, dim=1).indices
    reached = sum(
        bool(paths) for u in chosen.tolist() for paths in explainer.explain(u, top[u].tolist(), top=1)
    )
    return reached / (len(chosen) * k)


class _ServableScorer:
    """The exported servable behind the evaluator's interface (what a fresh process would serve)."""

    def __init__(self, servable: Servable) -> None:
        self.servable = servable

    def inference(self) -> AbstractContextManager[None]:
        return nullcontext()

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.servable.score_users(users.cpu().numpy()))


def _print_valid(epoch: int, record: dict[str, float]) -> None:
    print(
        f"    epoch {epoch}: loss {record['loss']:.4f}, valid recall@10 {record['recall@10']:.4f} "
        f"ndcg@10 {record['ndcg@10']:.4f} ({record['seconds']:.2f} s/epoch)",
        flush=True,
    )


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k} {values[k]:.4f}" for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"))


if __name__ == "__main__":
    main()
