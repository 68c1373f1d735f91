"""``gnnrec run | retrain | recommend``: the pipeline from the command line.

* ``gnnrec run`` runs the ``train-and-promote`` flow (on a temporary local Prefect server unless
  ``PREFECT_API_URL`` points at one) and prints the leaderboard, the champion and where to look next.
* ``gnnrec retrain`` runs the ``retrain`` flow with the same options.
* ``gnnrec recommend --user ID --k 10`` loads ``models:/NAME@champion`` and prints its recommendations;
  ``--history ID,ID,...`` recommends for a new user from the items it interacted with, without retraining.

``run`` and ``retrain`` share one option list (:func:`_pipeline_command`). Every option defaults to "not
given": the parameters in effect are :class:`~tasks.pipeline_config.PipelineParams` (``retrain``: its
:func:`~tasks.pipeline_config.retrain_defaults`), then the ``--config`` file, then the flags given, all
validated together and checked (device, data folder, tracking server) before Prefect starts.
``--show-config`` prints them and exits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from flows.cli_common import (
    EXIT_INFRASTRUCTURE,
    AggregateDuplicatesOption,
    DataDirOption,
    DatasetOption,
    JsonOption,
    KCoreOption,
    MinInteractionsOption,
    MinRatingOption,
    NoDownloadOption,
    RatingScaleOption,
    RatiosOption,
    RecboleNameOption,
    SeedOption,
    SplitOption,
    error_boundary,
    fail,
    load_champion_or_exit,
    load_settings,
    parse_user_ids,
    probe_study_storage,
    quiet_engine_tracebacks,
)
from tasks.config import DatasetName, SplitMethod
from tasks.tune import SEARCHABLE_TRAIN_FIELDS

if TYPE_CHECKING:
    from tasks.pipeline_config import PipelineParams
    from tasks.register import MlflowSettings


def _info(alias: Any) -> Any:
    """The ``typer.Option`` of a shared ``Annotated`` alias: same flag and help, the caller's default."""
    return alias.__metadata__[0]


MlflowConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--mlflow-config",
        help="mlflow.yml with the tracking URI, registry and promotion settings "
        "(default: $GNNREC_MLFLOW_CONFIG or ./mlflow.yml).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        dir_okay=False,
        help="A run-config YAML file of pipeline settings (the fields of --show-config, e.g. 'epochs: 25', "
        "'data: {dataset: csv, data_dir: ./data}'); flags given override it.",
    ),
]
ShowConfigOption = Annotated[
    bool,
    typer.Option(
        "--show-config", help="Print the settings in effect (defaults, file, flags) as YAML and exit."
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads torch may use (default: the root option `gnnrec --threads N`, else the config's, "
        "else torch's one per core). On a shared or busy machine, 1 avoids threads waiting on each other.",
        show_default=False,
    ),
]

TRAIN_SPACE_HELP = (
    "Training settings Optuna searches beside the model's hyperparameters, as JSON: a field to the values "
    'to try, e.g. \'{"negative_sampler": ["uniform", "hard"], "sampler_pool_size": [16, 32, 64]}\'. '
    f"Fields: {', '.join(sorted(SEARCHABLE_TRAIN_FIELDS))} (lr_scale: a factor on --lr that grows with the "
    "square root of the batch size). Default: each model's own space; '{}' searches none."
)
RUN_HELP = (
    "Run train-and-promote end to end: validate, tune, train, evaluate, register, promote.\n\n"
    "Defaults come from one place, PipelineParams (see them with --show-config); --config FILE and the "
    "flags given override them. `make run` passes a small budget explicitly (2 trials, 25 epochs, 60 s "
    "per model, one thread).\n\n"
    "Exit 0 when the run finished; 1 when the data broke its contract (nothing trained or registered); 2 "
    "when the input or the options cannot be used; 3 when the tracking server or store failed."
)
RETRAIN_HELP = (
    "Run the retrain flow: reload, validate, warm-start, retrain, promote through the same gate.\n\n"
    "Same options as 'gnnrec run'; its defaults warm-start each model's study from its best known "
    "hyperparameters and run at most one new trial. Exit codes as 'gnnrec run'."
)


@dataclass(frozen=True)
class PipelineOptions:
    """The flags of ``run`` and ``retrain`` as given (``None``: not given, the config's value applies)."""

    dataset: DatasetName | None = None
    data_dir: Path | None = None
    recbole_name: str | None = None
    min_rating: float | None = None
    rating_scale: tuple[float, float] | None = None
    k_core: int | None = None
    aggregate_duplicates: bool | None = None
    no_download: bool | None = None
    min_interactions: int | None = None
    split: SplitMethod | None = None
    ratios: tuple[float, float, float] | None = None
    seed: int | None = None
    users: int | None = None
    items: int | None = None
    interactions: int | None = None
    models: str | None = None
    trials: int | None = None
    timeout: float | None = None
    epochs: int | None = None
    patience: int | None = None
    pruner: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    metric: str | None = None
    ks: tuple[int, ...] | None = None
    device: str | None = None
    train_space: str | None = None
    threads: int | None = None
    parallel: int | None = None
    dask_address: str | None = None
    mlflow_config: Path | None = None

    def overrides(self) -> dict[str, Any]:
        """The given flags as nested :class:`PipelineParams` fields (``--seed`` seeds data, split and run).

        Raises:
            typer.Exit: ``--train-space`` is not a JSON object (exit 2).
        """
        data = {
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "recbole_name": self.recbole_name,
            "min_rating": self.min_rating,
            "rating_scale": self.rating_scale,
            "k_core": self.k_core,
            "aggregate_duplicates": self.aggregate_duplicates,
            "download": None if self.no_download is None else not self.no_download,
            "synthetic_users": self.users,
            "synthetic_items": self.items,
            "synthetic_interactions": self.interactions,
            "synthetic_seed": self.seed,
        }
        split = {"method": self.split, "ratios": self.ratios, "seed": self.seed}
        top: dict[str, Any] = {
            "min_interactions": self.min_interactions,
            "models": None
            if self.models is None
            else tuple(m.strip() for m in self.models.split(",") if m.strip()),
            "n_trials": self.trials,
            "timeout_s": self.timeout,
            "epochs": self.epochs,
            "patience": self.patience,
            "pruner": self.pruner,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "metric": self.metric,
            "ks": self.ks,
            "device": self.device,
            "seed": self.seed,
            "threads": self.threads,
            "parallel": self.parallel,
            "dask_address": self.dask_address,
            "mlflow_config": self.mlflow_config,
            "train_space": None if self.train_space is None else _parse_train_space(self.train_space),
        }
        out = {k: v for k, v in top.items() if v is not None}
        for section, values in (("data", data), ("split", split)):
            given = {k: v for k, v in values.items() if v is not None}
            if given:
                out[section] = given
        return out


def _parse_train_space(text: str) -> dict[str, Any]:
    import json

    try:
        space = json.loads(text)
    except json.JSONDecodeError as err:
        fail(f'--train-space is not valid JSON ({err}); e.g. \'{{"negative_sampler": ["uniform", "hard"]}}\'')
    if not isinstance(space, dict):
        fail("--train-space must be a JSON object: a training setting to the list of values to try.")
    return space


def preflight(params: PipelineParams) -> None:
    """Refuse what cannot work before any work starts (before Prefect): exit 2 with one paragraph.

    The device must exist (``cuda`` without a GPU is refused), and a local source's data folder must exist.
    Unknown models and split ratios that do not sum to 1 are already refused by :class:`PipelineParams`.
    A Dask scheduler named by ``--dask-address`` must answer (else exit 3, before any store is touched).
    """
    from tasks.train import resolve_device

    try:
        resolve_device(params.device)
    except (RuntimeError, ValueError) as err:
        fail(f"{err}. Use --device cpu or auto.")
    folder = params.data.data_dir
    if params.data.dataset in ("csv", "recbole", "lightgcn") and folder is not None and not folder.exists():
        fail(f"The data folder {folder} does not exist (--data-dir).")
    if params.dask_address:
        from flows.parallel import DaskUnavailableError, probe_dask_scheduler

        try:
            probe_dask_scheduler(params.dask_address)
        except DaskUnavailableError as err:
            fail(str(err), EXIT_INFRASTRUCTURE)


def _print_outcome(outcome: Any, settings: MlflowSettings) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    rows = outcome.leaderboard
    table = Table(title=f"Leaderboard (selected on validation {outcome.metric}; test reported)")
    wanted = [
        "model",
        f"valid {outcome.metric}",
        f"test {outcome.metric}",
        "best epoch",
        "train s",
        "trials",
        "version",
        "status",
    ]
    columns = [c for c in wanted if rows and c in rows[0]]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(table)
    for row in rows:
        if row.get("status") == "failed":
            console.print(f"[red]{row['model']} failed:[/] {row.get('reason', '')}", highlight=False)
    decision = outcome.decision
    verb = "promoted" if decision.promoted else "kept"
    console.print(
        f"Champion: [bold]{decision.registered_model}@{decision.alias}[/] "
        f"= v{decision.champion_after} ({verb})"
    )
    console.print(f"  {decision.reason}")
    config_flag = (
        f" --mlflow-config {os.environ.get('GNNREC_MLFLOW_CONFIG')}"
        if os.environ.get("GNNREC_MLFLOW_CONFIG")
        else ""
    )
    console.print("\nWhere to look:")
    console.print(f"  MLflow store      {settings.tracking_uri}  (parent run {outcome.parent_run_id})")
    from tasks.register.settings import is_tracking_server

    if is_tracking_server(settings.tracking_uri):
        console.print(f"  MLflow UI         {settings.tracking_uri}")
    else:
        console.print(
            f"  MLflow UI         mlflow ui --backend-store-uri {settings.tracking_uri} "
            f"--default-artifact-root {settings.artifact_location} --host 127.0.0.1 --port 5000"
        )
    console.print("  Prefect UI        gnnrec ui   (Prefect server + deployments + MLflow UI on 127.0.0.1)")
    console.print(f"  Recommend         gnnrec recommend --user <raw user id> --k 10{config_flag}")
    console.print(f"  Serve over REST   gnnrec serve --port 5001{config_flag}")


def _outcome_json(outcome: Any, settings: MlflowSettings, seconds: float) -> str:
    """The run's outcome as one JSON object (leaderboard, decision, where the runs are)."""
    import dataclasses
    import json

    from data_checks.report import to_plain

    payload = {
        "leaderboard": outcome.leaderboard,
        "decision": dataclasses.asdict(outcome.decision),
        "champion": f"models:/{settings.registered_model_name}@{settings.promotion_alias}",
        "parent_run_id": outcome.parent_run_id,
        "tracking_uri": settings.tracking_uri,
        "metric": outcome.metric,
        "seconds": round(seconds, 1),
    }
    return json.dumps(to_plain(payload), indent=2)


def _flow(kind: Literal["train-and-promote", "retrain"]) -> Callable[[PipelineParams], Any]:
    if kind == "retrain":
        from flows.retrain import retrain

        return retrain
    from flows.train_and_promote import train_and_promote

    return train_and_promote


def _run_pipeline_command(
    kind: Literal["train-and-promote", "retrain"],
    options: PipelineOptions,
    *,
    config: Path | None,
    show_config: bool,
    ctx: typer.Context,
    as_json: bool,
) -> None:
    """Resolve the parameters, check them, run the flow in this process and print its outcome."""
    from tasks.pipeline_config import effective_params, retrain_defaults

    started = time.perf_counter()
    with error_boundary(as_json=as_json):
        overrides = options.overrides()
        root_threads = ctx.find_root().params.get("threads")
        if "threads" not in overrides and root_threads is not None:
            overrides["threads"] = int(root_threads)
        base = retrain_defaults() if kind == "retrain" else None
        params = effective_params(config, overrides, base=base)
        if show_config:
            import yaml

            typer.echo(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False).rstrip())
            return
        preflight(params)
        settings = load_settings(params.mlflow_config)
        probe_study_storage(params.study_storage or settings.study_storage)  # a wrong URL: exit 3 now
        if params.threads:
            from tasks.train import set_threads

            set_threads(params.threads)
        quiet_engine_tracebacks()
        from flows.prefect_server import start_temporary_server

        start_temporary_server()  # a temporary Prefect server that dies with this command, even on SIGKILL
        outcome = _flow(kind)(params)
    seconds = time.perf_counter() - started
    if as_json:
        typer.echo(_outcome_json(outcome, settings, seconds))
    else:
        _print_outcome(outcome, settings)
        typer.echo(f"\nDone in {seconds:.0f} s.")


def _pipeline_command(kind: Literal["train-and-promote", "retrain"]) -> Callable[..., None]:
    """The ``run`` (``kind="train-and-promote"``) or ``retrain`` command: one option list for both."""

    def command(
        ctx: typer.Context,
        config: ConfigOption = None,
        show_config: ShowConfigOption = False,
        dataset: Annotated[DatasetName | None, _info(DatasetOption)] = None,
        data_dir: DataDirOption = None,
        recbole_name: RecboleNameOption = None,
        min_rating: MinRatingOption = None,
        rating_scale: RatingScaleOption = None,
        k_core: Annotated[int | None, _info(KCoreOption)] = None,
        aggregate_duplicates: Annotated[bool | None, _info(AggregateDuplicatesOption)] = None,
        no_download: Annotated[bool | None, _info(NoDownloadOption)] = None,
        min_interactions: Annotated[int | None, _info(MinInteractionsOption)] = None,
        split: Annotated[SplitMethod | None, _info(SplitOption)] = None,
        ratios: Annotated[tuple[float, float, float] | None, _info(RatiosOption)] = None,
        seed: Annotated[int | None, _info(SeedOption)] = None,
        users: Annotated[int | None, typer.Option("--users", min=10, help="Synthetic users.")] = None,
        items: Annotated[int | None, typer.Option("--items", min=10, help="Synthetic items.")] = None,
        interactions: Annotated[
            int | None, typer.Option("--interactions", min=100, help="Synthetic interactions.")
        ] = None,
        models: Annotated[
            str | None, typer.Option("--models", help="Comma-separated model families.")
        ] = None,
        trials: Annotated[
            int | None,
            typer.Option(
                "--trials", min=0, help="Optuna trials per model (finished trials the study keeps)."
            ),
        ] = None,
        timeout: Annotated[
            float | None,
            typer.Option(
                "--timeout", min=0.0, help="Tuning seconds per model: no new trial starts after them."
            ),
        ] = None,
        epochs: Annotated[
            int | None, typer.Option("--epochs", min=1, help="Epoch cap per training run.")
        ] = None,
        patience: Annotated[
            int | None,
            typer.Option("--patience", min=1, help="Validations without improvement before a run stops."),
        ] = None,
        pruner: Annotated[
            str | None,
            typer.Option(
                "--pruner",
                help="How bad trials stop early: asha (default) or hyperband (successive halving on epochs), "
                "median, none.",
            ),
        ] = None,
        lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Adam learning rate.")] = None,
        batch_size: Annotated[
            int | None, typer.Option("--batch-size", min=1, help="Training pairs per step.")
        ] = None,
        metric: Annotated[
            str | None,
            typer.Option("--metric", help="Selection metric, e.g. ndcg@20 (default: mlflow.yml's)."),
        ] = None,
        ks: Annotated[
            list[int] | None,
            typer.Option(
                "--k", help="Evaluation cut-off K, repeatable; must include the metric's (default: config's)."
            ),
        ] = None,
        device: Annotated[
            str | None, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
        ] = None,
        train_space: Annotated[
            str | None,
            typer.Option(
                "--train-space",
                help=TRAIN_SPACE_HELP,
            ),
        ] = None,
        threads: ThreadsOption = None,
        parallel: Annotated[
            int | None,
            typer.Option(
                "--parallel",
                min=1,
                help="Models trained at once, each in a worker process of its own with one thread (a local "
                "Dask cluster of N workers); 1 (default) runs them one after another.",
            ),
        ] = None,
        dask_address: Annotated[
            str | None,
            typer.Option(
                "--dask-address",
                help="Run the models on the workers of a running Dask scheduler, e.g. tcp://host:8786 "
                "(exit 3 when none answers).",
            ),
        ] = None,
        mlflow_config: MlflowConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        options = PipelineOptions(
            dataset=dataset,
            data_dir=data_dir,
            recbole_name=recbole_name,
            min_rating=min_rating,
            rating_scale=rating_scale,
            k_core=k_core,
            aggregate_duplicates=aggregate_duplicates,
            no_download=no_download or None,
            min_interactions=min_interactions,
            split=split,
            ratios=ratios,
            seed=seed,
            users=users,
            items=items,
            interactions=interactions,
            models=models,
            trials=trials,
            timeout=timeout,
            epochs=epochs,
            patience=patience,
            pruner=pruner,
            lr=lr,
            batch_size=batch_size,
            metric=metric,
            ks=tuple(ks) if ks else None,
            device=device,
            train_space=train_space,
            threads=threads,
            parallel=parallel,
            dask_address=dask_address,
            mlflow_config=mlflow_config,
        )
        _run_pipeline_command(kind, options, config=config, show_config=show_config, ctx=ctx, as_json=as_json)

    command.__doc__ = RUN_HELP if kind == "train-and-promote" else RETRAIN_HELP
    return command


def recommend(
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="Raw user id (repeat for several).")
    ] = None,
    history: Annotated[
        list[str] | None,
        typer.Option(
            "--history",
            help=(
                "A new user's history: comma-separated raw item ids (repeat for several new users). Scored "
                "by the model's new-user rule, without retraining."
            ),
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many items per user.")] = 10,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help=(
                "Also say why: for each recommendation of a known user, the strongest knowledge-graph paths "
                "from an item of the user's history to it, with their attention weights (models with a "
                "KG, e.g. kgat)."
            ),
        ),
    ] = False,
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Recommend the top-K unseen items for known users or new users' histories, from the champion.

    Exit 2 when there is no champion or it rejects the input; 3 when the tracking server or store failed.
    """
    import pandas as pd

    users, histories = list(user or []), list(history or [])
    if not users and not histories:
        fail("Give --user ID (a known user) or --history ID,ID,... (a new user's items).")
    for given in histories:
        if not [t for t in given.split(",") if t.strip()]:
            fail("--history is empty: give at least one raw item id, e.g. --history 50,181,258.")
    with error_boundary():
        settings = load_settings(mlflow_config)
        uri, model = load_champion_or_exit(settings)
        # One frame for the known users, one per history (a new user has no id: labelled by its position).
        frames: list[tuple[str | None, pd.DataFrame]] = (
            [(None, pd.DataFrame({"user": parse_user_ids(users)}))] if users else []
        )
        frames += [(f"history {n}", pd.DataFrame({"history": [h]})) for n, h in enumerate(histories, 1)]
        outs = []
        for label, frame in frames:
            result = _predict(model, frame, k, explain)
            if label is not None:
                result["user"] = label
            outs.append(result)
        out = pd.concat(outs, ignore_index=True)
    from rich.console import Console
    from rich.table import Table

    explanations = out.pop("explanation") if "explanation" in out.columns else None
    table = Table(title=f"Top-{k} from {uri}")
    for column in out.columns:
        table.add_column(str(column))
    for row in out.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
    if explain and explanations is None:
        typer.echo("This champion was registered before explanations existed: register it again to explain.")
    if explanations is not None:
        typer.echo("Why (history item -[relation]-> ... -> recommended item, attention product):")
        for row, text in zip(out.itertuples(index=False), explanations, strict=True):
            paths = text.split(" | ") if text else ["no knowledge-graph path from the user's history"]
            typer.echo(f"  user {row.user}, #{row.rank} item {row.item}:")
            for path in paths:
                typer.echo(f"    {path}")
    if out["fallback"].any():
        typer.echo("Users marked fallback are unknown to the model: they get the most popular items.")


def _predict(model: Any, frame: Any, k: int, explain: bool = False) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(frame, params={"k": k, "explain": True} if explain else {"k": k})
    except (MlflowException, ValueError) as err:
        message = err.message if isinstance(err, MlflowException) else str(err)
        fail(f"The champion rejected the input: {' '.join(message.split())}")


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the root app."""
    from flows import cli_serve, cli_ui

    app.command("run", help=RUN_HELP)(_pipeline_command("train-and-promote"))
    app.command("retrain", help=RETRAIN_HELP)(_pipeline_command("retrain"))
    app.command("recommend")(recommend)
    app.command("serve")(cli_serve.serve)
    app.command("ui")(cli_ui.ui)
