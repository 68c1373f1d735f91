"""``gnnrec train``: train one model with literature defaults and report validation and test metrics.

Load -> validate (the data contract; exit 1 when it breaks) -> index -> split -> graphs -> train with early
stopping on the validation part -> full-ranking evaluation on validation and test, with the popularity floor
beside. No tuning here (that is ``gnnrec tune``). Exit codes as every command: 0 ok, 1 contract failed, 2
unusable input.

Data-parallel training: ``--nproc N`` spawns N training processes on this machine; under ``torchrun``
(``torchrun --nproc-per-node N -m flows.cli train ...``) every rank runs this command, trains its replica,
and only rank 0 evaluates and prints.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_common import (
    EXIT_BAD_INPUT,
    AggregateDuplicatesOption,
    ColdFractionOption,
    DataDirOption,
    DatasetOption,
    FoldInOption,
    JsonOption,
    KCoreOption,
    MinRatingOption,
    NoDownloadOption,
    RatingScaleOption,
    RatiosOption,
    RecboleNameOption,
    SeedOption,
    SplitOption,
    error_boundary,
    fail,
    stderr_console,
)
from tasks.config import DatasetName, SplitMethod

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Model to train (mf, lightgcn, ngcf, ...).", show_default=True)
]
EpochsOption = Annotated[
    int | None, typer.Option("--epochs", min=1, help="Maximum epochs (early stopping usually ends sooner).")
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="Where to train: auto (CUDA when present), cpu, cuda or cuda:N.",
        show_default=True,
    ),
]
HparamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--hparam",
        "-p",
        help="Model hyperparameter KEY=VALUE (JSON value), repeatable: -p num_layers=2 -p reg_weight=1e-3",
    ),
]


def parse_hparams(items: list[str] | None) -> dict[str, Any]:
    """``["num_layers=2", "alpha=[0.5,0.5,0]"]`` -> ``{"num_layers": 2, "alpha": [0.5, 0.5, 0]}``.

    Values are parsed as JSON, falling back to the plain string.

    Raises:
        ValueError: for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--hparam takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def peak_memory(device: str) -> dict[str, float | None]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory, in MiB."""
    import torch

    # ru_maxrss is in KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 1024**2 if sys.platform == "darwin" else rss / 1024
    cuda = None
    if device.startswith("cuda") and torch.cuda.is_available():
        cuda = torch.cuda.max_memory_allocated(torch.device(device)) / 1024**2
    return {"rss_mib": round(rss_mib, 1), "cuda_allocated_mib": None if cuda is None else round(cuda, 1)}


def train(
    model: ModelOption = "lightgcn",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            dir_okay=False,
            help="A run-config YAML file (as for 'gnnrec run'): its data, split, epochs, lr, batch size, "
            "patience, metric, ks, device and seed apply; flags given override it.",
        ),
    ] = None,
    dataset: Annotated[DatasetName | None, DatasetOption.__metadata__[0]] = None,
    data_dir: DataDirOption = None,
    recbole_name: RecboleNameOption = None,
    min_rating: MinRatingOption = None,
    rating_scale: RatingScaleOption = None,
    k_core: Annotated[int | None, KCoreOption.__metadata__[0]] = None,
    aggregate_duplicates: Annotated[bool | None, AggregateDuplicatesOption.__metadata__[0]] = None,
    no_download: NoDownloadOption = False,
    split: Annotated[SplitMethod | None, SplitOption.__metadata__[0]] = None,
    ratios: Annotated[tuple[float, float, float] | None, RatiosOption.__metadata__[0]] = None,
    valid_from_train: Annotated[
        float | None,
        typer.Option(
            "--valid-from-train",
            min=0.0,
            max=0.99,
            help="For --split fixed without validation: per-user fraction of train moved to validation.",
        ),
    ] = None,
    cold_fraction: Annotated[float | None, ColdFractionOption.__metadata__[0]] = None,
    fold_in: Annotated[float | None, FoldInOption.__metadata__[0]] = None,
    seed: Annotated[int | None, SeedOption.__metadata__[0]] = None,
    epochs: EpochsOption = None,
    device: DeviceOption = None,
    hparam: HparamOption = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Training pairs per step.")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Adam learning rate.")] = None,
    loss: Annotated[
        Literal["bpr", "softmax"] | None, typer.Option("--loss", help="BPR or sampled softmax.")
    ] = None,
    negative_sampler: Annotated[
        Literal["uniform", "popularity", "hard"] | None,
        typer.Option("--negative-sampler", help="How negatives are drawn."),
    ] = None,
    num_negatives: Annotated[
        int | None, typer.Option("--num-negatives", min=1, help="Negatives per positive.")
    ] = None,
    sampling: Annotated[
        Literal["pairs", "users"] | None,
        typer.Option("--sampling", help="Epoch positives: every pair shuffled, or users drawn uniformly."),
    ] = None,
    patience: Annotated[
        int | None, typer.Option("--patience", min=1, help="Evaluations without improvement before stopping.")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option("--eval-every", min=1, help="Epochs between evaluations.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Validation metric for early stopping (default ndcg@20).")
    ] = None,
    ks: Annotated[
        list[int] | None, typer.Option("--k", help="Cut-off K, repeatable (default: the config's ks).")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", min=0.0, help="Stop training after this wall time.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", dir_okay=False, help="Write a resumable checkpoint here.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from --checkpoint when it exists.")
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train with N processes on this machine (data-parallel, torch.distributed: gloo on CPU, "
            "NCCL with one GPU per process): each trains on its shard of the pairs, gradients averaged, "
            "same global batch. Torch threads are divided among them. SGD models only.",
        ),
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Train one model, then print validation and test metrics.

    Defaults come from the pipeline's one config (PipelineParams, or --config FILE): the same data, split,
    epochs, learning rate, batch size and patience as 'gnnrec run'. Prints one JSON object with --json:
    model, hyperparameters, dataset, split, validation and test metrics with the popularity floor beside
    them, epochs run, seconds per epoch, evaluation seconds and peak memory.
    """
    from models import UnknownModelError, get_model
    from tasks.compat import ModelDataMismatchError, check_requirements
    from tasks.distributed import launched_world_size
    from tasks.evaluate import evaluate, popularity_metrics, unsupported_split
    from tasks.pipeline_config import effective_params
    from tasks.prepare import prepare_data
    from tasks.train import TrainConfig, data_parallel_refusal, resolve_device, train_data_parallel
    from tasks.train import train as train_model

    console = stderr_console()
    with error_boundary(as_json=as_json):
        try:
            hparams = parse_hparams(hparam)
            get_model(model).resolve_hparams(hparams)
        except (UnknownModelError, ValueError, TypeError) as exc:
            fail(str(exc), EXIT_BAD_INPUT)
        given = {
            "data": {
                "dataset": dataset,
                "data_dir": data_dir,
                "recbole_name": recbole_name,
                "min_rating": min_rating,
                "rating_scale": rating_scale,
                "k_core": k_core,
                "aggregate_duplicates": aggregate_duplicates,
                "download": False if no_download else None,
                "synthetic_seed": seed,
            },
            "split": {
                "method": split,
                "ratios": ratios,
                "valid_from_train": valid_from_train,
                "cold_fraction": cold_fraction,
                "fold_in": fold_in,
                "seed": seed,
            },
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "patience": patience,
            "metric": metric,
            "ks": tuple(ks) if ks else None,
            "device": device,
            "seed": seed,
        }
        overrides = {
            key: ({k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value)
            for key, value in given.items()
            if value is not None
        }
        params = effective_params(config, overrides)
        try:
            resolve_device(params.device)
        except RuntimeError as exc:
            fail(f"{exc}. Use --device cpu or auto.", EXIT_BAD_INPUT)
        launched = launched_world_size()
        if nproc > 1 and launched > 1:
            fail(
                f"--nproc {nproc} inside a torchrun launch of {launched} processes: give the processes to "
                "torchrun (--nproc-per-node) or to --nproc, not to both",
                EXIT_BAD_INPUT,
            )
        refusal = data_parallel_refusal(get_model(model), max(nproc, launched))
        if refusal is not None:
            fail(f"{refusal} ({'without --nproc' if nproc > 1 else 'not under torchrun'}).", EXIT_BAD_INPUT)
        if max(nproc, launched) > 1 and (params.device or "").startswith("cuda:"):
            fail(
                f"--device {params.device} names one GPU, but each training process takes its own "
                "(cuda:LOCAL_RANK); use --device cuda or auto",
                EXIT_BAD_INPUT,
            )
        reason = unsupported_split(get_model(model), params.split.method)
        if reason is not None:
            fail(reason, EXIT_BAD_INPUT)
        extras = {
            "loss": loss,
            "negative_sampler": negative_sampler,
            "num_negatives": num_negatives,
            "sampling": sampling,
            "eval_every": eval_every,
            "max_seconds": max_seconds,
        }
        metric_name = params.metric or TrainConfig.model_fields["metric"].default
        train_config = TrainConfig.model_validate(
            {
                **params.train_config(model, metric_name).model_dump(),
                "hparams": hparams,
                "progress": True,
                **{k: v for k, v in extras.items() if v is not None},
            }
        )
        config_data, splitting = params.data, params.split
        dataset_name = config_data.dataset

        with console.status(f"Loading, checking, splitting {dataset_name} and building graphs..."):
            prepared = prepare_data(config_data, splitting)
        graphs, parts = prepared.graphs, prepared.split
        try:
            check_requirements([model], graphs, prepared.dataset.name, {model: hparams})
        except ModelDataMismatchError as exc:
            fail(str(exc), EXIT_BAD_INPUT)

        if nproc > 1:
            trained = train_data_parallel(
                graphs, parts, train_config, nproc, checkpoint_path=checkpoint, resume=resume
            )
        else:
            trained = train_model(graphs, parts, train_config, checkpoint_path=checkpoint, resume=resume)
        if trained.rank != 0:
            return  # a torchrun rank other than 0: rank 0 evaluates and prints

        eval_device = trained.device
        valid = evaluate(trained.model, parts, "valid", train_config.ks) if len(parts.valid) else None
        test = evaluate(trained.model, parts, "test", train_config.ks)
        pop_valid = popularity_metrics(parts, "valid", train_config.ks) if len(parts.valid) else None
        pop_test = popularity_metrics(parts, "test", train_config.ks)

    payload: dict[str, Any] = {
        "model": model,
        "hparams": trained.model.hparams,
        "dataset": prepared.dataset.summary(),
        "split": parts.describe(),
        "training": train_config.model_dump(mode="json", exclude={"progress"}),
        "device": trained.device,
        "processes": trained.world_size,
        "new_users": trained.model.new_users if len(parts.history) else None,
        "valid": None if valid is None else valid.to_dict(),
        "test": test.to_dict(),
        "popularity": {
            "valid": None if pop_valid is None else pop_valid.to_dict(),
            "test": pop_test.to_dict(),
        },
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "stop_reason": trained.stop_reason,
        "seconds_per_epoch": round(trained.seconds_per_epoch, 4),
        "training_seconds": round(sum(h["seconds"] for h in trained.history), 3),
        "evaluation_seconds": {
            "during_training": round(sum(h.get("eval_seconds", 0.0) for h in trained.history), 3),
            "valid": None if valid is None else round(valid.seconds, 4),
            "test": round(test.seconds, 4),
        },
        "data_seconds": round(sum(prepared.timings.values()), 3),
        "peak_memory": peak_memory(str(eval_device)),
    }
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        _print_summary(payload, train_config.ks)


def _print_summary(payload: dict[str, Any], ks: tuple[int, ...]) -> None:
    """Metrics side by side (model vs popularity, valid and test) and the run's facts, for people."""
    console = Console()
    table = Table(
        title=f"{payload['model']} on {payload['dataset']['dataset']} ({payload['split']['method']} split)"
    )
    table.add_column("metric")
    columns = [("valid", payload["valid"]), ("test", payload["test"])]
    columns += [
        ("popularity valid", payload["popularity"]["valid"]),
        ("popularity test", payload["popularity"]["test"]),
    ]
    shown = [(name, values) for name, values in columns if values is not None]
    for name, _ in shown:
        table.add_column(name, justify="right")
    for k in sorted(set(ks)):
        for metric in ("recall", "ndcg", "hit", "precision", "mrr"):
            key = f"{metric}@{k}"
            table.add_row(key, *(f"{values[key]:.4f}" for _, values in shown))
    console.print(table)
    memory = payload["peak_memory"]
    console.print(
        f"{payload['epochs_run']} epochs ({payload['stop_reason']}, best {payload['best_epoch']}) on "
        f"{payload['device']}, {payload['seconds_per_epoch']:.3f} s/epoch; evaluation "
        f"{payload['evaluation_seconds']['test']:.3f} s (test); peak RSS {memory['rss_mib']:.0f} MiB"
        + (
            f", CUDA {memory['cuda_allocated_mib']:.0f} MiB"
            if memory["cuda_allocated_mib"] is not None
            else ""
        ),
        markup=False,
    )
