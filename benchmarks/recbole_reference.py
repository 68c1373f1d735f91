"""Run RecBole's own models on HetRec Last.fm, and export RecBole's own split for gnnrec to train on.

RecBole-GNN's published Last.fm table (the figures in ``quality.py``) comes from RecBole's trainer, its
random per-user 8:1:1 split and its models. This script reruns that reference on this machine:

* ``--export DIR`` writes the split RecBole makes (``eval_args`` RS [0.8, 0.1, 0.1], grouped by user, random
  order, ``seed`` 2020) as RecBole benchmark files ``DIR/lastfm.{train,valid,test}.inter``, raw HetRec ids.
  ``quality.py --recbole-split DIR`` then trains gnnrec's models on exactly that split, so the comparison
  with RecBole's code carries no split-to-split noise.
* ``--model NAME`` trains RecBole's model with RecBole-GNN's Last.fm settings (batch 4096, early stopping
  after 50 epochs without a better valid NDCG@10, full ranking, d = 64) and the learning rate the published
  table picked, then prints valid and test Recall/NDCG@10 as one JSON line (RecBole's log, on stdout,
  names the best epoch).

RecBole is not a gnnrec dependency and needs older numerical libraries, so it runs from its own virtual
environment (RecBole 1.2.1 on torch 2.13 needs numpy < 2 and scipy < 1.12)::

    python3 -m venv /tmp/rbvenv
    /tmp/rbvenv/bin/pip install recbole==1.2.1 torch==2.13.0 numpy==1.26.4 "pandas<2.3" scipy==1.10.1
    /tmp/rbvenv/bin/python benchmarks/recbole_reference.py --export /tmp/rbsplit/lastfm-rb2020
    /tmp/rbvenv/bin/python benchmarks/recbole_reference.py --model NGCF --threads 1

The HetRec folder is read in place (``--data``, default ``/work/shared/datasets/lastfm-hetrec``); the
converted atomic file, checkpoints and RecBole's logs go to ``--workdir`` (default ``/tmp/recbole-lastfm``),
never into the project.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

# RecBole-GNN results/social/lastfm.md: shared settings, and each model's picked learning rate.
SETTINGS: dict[str, Any] = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "artist_id",
    "load_col": {"inter": ["user_id", "artist_id"]},
    "epochs": 5000,
    "train_batch_size": 4096,
    "eval_batch_size": 409600000,
    "valid_metric": "NDCG@10",
    "stopping_step": 50,
    "embedding_size": 64,
    "metrics": ["Recall", "NDCG"],
    "topk": [10],
    "seed": 2020,
    "device": "cpu",
    "use_gpu": False,
    "show_progress": False,
    "log_wandb": False,
}
LEARNING_RATE = {"BPR": 5e-4, "NGCF": 5e-4, "LightGCN": 1e-3}
EXTRA = {"NGCF": {"hidden_size_list": [64, 64, 64]}, "LightGCN": {"n_layers": 3}}


def write_atomic(hetrec: Path, workdir: Path) -> Path:
    """HetRec ``user_artists.dat`` -> ``workdir/lastfm/lastfm.inter`` (user, artist; the weight dropped)."""
    folder = workdir / "lastfm"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (hetrec / "user_artists.dat").read_text(encoding="utf-8").splitlines()[1:]
    rows = ("\t".join(line.split("\t")[:2]) for line in lines if line.strip())
    (folder / "lastfm.inter").write_text(
        "user_id:token\tartist_id:token\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    return workdir


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/lastfm-hetrec"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recbole-lastfm"))
    parser.add_argument("--export", type=Path, default=None, help="write RecBole's split here and stop")
    parser.add_argument("--model", choices=list(LEARNING_RATE), default="NGCF")
    parser.add_argument("--config", type=json.loads, default={}, help="other RecBole settings (JSON)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--test-checkpoint",
        type=Path,
        default=None,
        help="score this saved RecBole checkpoint of --model on valid and test instead of training",
    )
    args = parser.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    torch.set_num_threads(args.threads)
    # RecBole writes ./log and ./log_tensorboard: keep them in the work folder, out of the project.
    args.data, args.export = args.data.resolve(), args.export and args.export.resolve()
    args.test_checkpoint = args.test_checkpoint and args.test_checkpoint.resolve()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    # RecBole 1.2.1 reloads its own best checkpoint (numpy scalars inside) with torch.load's old default;
    # torch >= 2.6 refuses that unless weights_only=False. The file is the one this run just wrote.
    original_load = torch.load
    torch.load = lambda *a, **k: original_load(*a, **{"weights_only": False, **k})  # type: ignore[assignment]
    settings = {
        **SETTINGS,
        "data_path": str(write_atomic(args.data, args.workdir)),
        "checkpoint_dir": str(args.workdir / "saved"),
        "learning_rate": LEARNING_RATE[args.model],
        **EXTRA.get(args.model, {}),
        **args.config,
    }
    config = Config(model=args.model, dataset="lastfm", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        for part, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
            inter = loader._dataset.inter_feat
            users = loader._dataset.id2token("user_id", inter["user_id"].numpy())
            items = loader._dataset.id2token("artist_id", inter["artist_id"].numpy())
            text = "".join(f"{u}\t{i}\n" for u, i in zip(users, items, strict=True))
            (args.export / f"lastfm.{part}.inter").write_text(
                "user_id:token\titem_id:token\n" + text, encoding="utf-8"
            )
            print(f"{part}: {len(users)} interactions -> {args.export / f'lastfm.{part}.inter'}")
        return

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.perf_counter()
    if args.test_checkpoint is None:
        _, valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=True)
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    else:
        valid = trainer.evaluate(valid_data, model_file=str(args.test_checkpoint), show_progress=False)
        test = trainer.evaluate(test_data, model_file=str(args.test_checkpoint), show_progress=False)
    print(
        json.dumps(
            {
                "model": args.model,
                "settings": {k: v for k, v in settings.items() if k not in ("data_path", "checkpoint_dir")},
                "valid": dict(valid),
                "test": dict(test),
                "seconds": time.perf_counter() - start,
            }
        )
    )


if __name__ == "__main__":
    main()
