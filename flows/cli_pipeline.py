"""``gnnrec run | retrain | recommend | serve | ui``: the pipeline from the command line.

* ``gnnrec run`` runs the ``train-and-promote`` flow (on a temporary local Prefect server unless
  ``PREFECT_API_URL`` points at one) and prints the leaderboard, the champion and where to look next.
* ``gnnrec recommend --user ID --k 10`` loads ``models:/NAME@champion`` and prints its recommendations;
  ``--history ID,ID,...`` recommends for a new user from the items it interacted with, without retraining.
* ``gnnrec serve`` serves the champion over REST (``mlflow models serve``) on 127.0.0.1.
* ``gnnrec ui`` starts a local Prefect server, the MLflow UI, and serves the two deployments
  (``train-and-promote/manual`` and ``retrain/weekly``), all on 127.0.0.1, until Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli_common import (
    EXIT_BAD_INPUT,
    AggregateDuplicatesOption,
    DataDirOption,
    DatasetOption,
    JsonOption,
    KCoreOption,
    MinInteractionsOption,
    MinRatingOption,
    NoDownloadOption,
    RatiosOption,
    RecboleNameOption,
    SeedOption,
    SplitOption,
    data_config,
    error_boundary,
    fail,
    split_config,
)
from tasks.config import DatasetName, SplitMethod
from tasks.tune import SEARCHABLE_TRAIN_FIELDS

if TYPE_CHECKING:
    from tasks.pipeline_config import PipelineParams
    from tasks.register import MlflowSettings

MlflowConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--mlflow-config",
        help="mlflow.yml with the tracking URI, registry and promotion settings "
        "(default: $GNNREC_MLFLOW_CONFIG or ./mlflow.yml).",
    ),
]


def _settings(mlflow_config: Path | None) -> MlflowSettings:
    """Load ``mlflow.yml`` and point MLflow at its stores; a missing or invalid file exits 2."""
    from tasks.register import configure_mlflow, load_mlflow_settings

    try:
        settings = load_mlflow_settings(mlflow_config)
    except (OSError, ValueError) as err:
        fail(f"Cannot use the MLflow settings: {' '.join(str(err).split())}")
    configure_mlflow(settings)
    return settings


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


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
    console.print(
        f"  MLflow UI         mlflow ui --backend-store-uri {settings.tracking_uri} "
        f"--default-artifact-root {settings.artifact_location} --host 127.0.0.1 --port 5000"
    )
    console.print("  Prefect UI        gnnrec ui   (Prefect server + deployments + MLflow UI on 127.0.0.1)")
    console.print(f"  Recommend         gnnrec recommend --user <raw user id> --k 10{config_flag}")
    console.print(f"  Serve over REST   gnnrec serve --port 5001{config_flag}")


# `make run` runs `gnnrec run` with these defaults, and issue 4 wants it under 10 minutes on a 2-core machine:
# the synthetic data at its MovieLens-100K-like size (943 users, 1682 items, 100k interactions), MF-BPR,
# LightGCN and NGCF, 2 trials per model, at most 25 epochs per training run, one torch thread. Measured: 113 s
# end to end (Prefect start-up included) on 2 cores shared with two other jobs (load average 5.4-5.8). One
# torch thread matters most there: with torch's two threads a single MF trial took 156 s under load 6, 1.2 s
# under load 3.
RUN_HELP = (
    "Run train-and-promote end to end: validate, tune, train, evaluate, register, promote.\n\n"
    "The defaults are a budget that finishes in about 2 minutes on 2 CPU cores, even shared with other "
    "jobs (113 s at load average 5.5): the synthetic data at its MovieLens-100K-like size (943 users, "
    "1682 items, 100,000 interactions), mf, lightgcn and ngcf, 2 Optuna trials per model (no new trial "
    "starts after 60 s of tuning), at most 25 epochs per training run, one torch thread. Raise --trials, "
    "--timeout and --epochs for a real search.\n\n"
    "Exit 0 when the run finished; 1 when the data broke its contract (nothing trained or registered); 2 "
    "when the input or the options cannot be used."
)
RETRAIN_HELP = (
    "Run the retrain flow: reload, validate, warm-start, retrain, promote through the same gate.\n\n"
    "Each model's study is warm-started from its best known hyperparameters and runs at most one new "
    "trial. Exit codes as 'gnnrec run'."
)

ModelsOption = Annotated[
    str, typer.Option("--models", help="Comma-separated model families.", show_default=True)
]
UsersOption = Annotated[int, typer.Option("--users", min=10, help="Synthetic users.", show_default=True)]
ItemsOption = Annotated[int, typer.Option("--items", min=10, help="Synthetic items.", show_default=True)]
InteractionsOption = Annotated[
    int, typer.Option("--interactions", min=100, help="Synthetic interactions.", show_default=True)
]
EpochsOption = Annotated[
    int, typer.Option("--epochs", min=1, help="Epoch cap per training run.", show_default=True)
]
LrOption = Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.", show_default=True)]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Training pairs per step.", show_default=True)
]
MetricOption = Annotated[
    str | None, typer.Option("--metric", help="Selection metric, e.g. ndcg@20 (default: mlflow.yml's).")
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.", show_default=True)
]
TrainSpaceOption = Annotated[
    str | None,
    typer.Option(
        "--train-space",
        help=(
            "Training settings Optuna searches beside the model's hyperparameters, as JSON: a field to "
            'the values to try, e.g. \'{"negative_sampler": ["uniform", "hard"], "sampler_pool_size": '
            f"[16, 32, 64]}}'. Fields: {', '.join(sorted(SEARCHABLE_TRAIN_FIELDS))}."
        ),
        show_default=False,
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=0,
        help=(
            "CPU threads torch may use; 0 keeps torch's default (every core). Default: the root option "
            "`gnnrec --threads N` when given, else one: on a shared or busy machine torch's threads wait on "
            "each other, which made training up to 100x slower here."
        ),
        show_default=False,
    ),
]


def _pipeline_params(
    *,
    dataset: DatasetName,
    data_dir: Path | None,
    recbole_name: str | None,
    min_rating: float | None,
    k_core: int,
    aggregate_duplicates: bool,
    no_download: bool,
    min_interactions: int,
    split: SplitMethod,
    ratios: tuple[float, float, float],
    seed: int,
    users: int,
    items: int,
    interactions: int,
    models: str,
    train_space: str | None = None,
    **settings: Any,
) -> PipelineParams:
    """The flow's typed parameters from the command's options (pydantic errors reach the boundary: exit 2).

    Unknown model families exit 2 with the list of known ones, before any work starts.
    """
    from models import UnknownModelError, get_model
    from tasks.pipeline_config import PipelineParams

    families = tuple(m.strip() for m in models.split(",") if m.strip())
    try:
        for family in families:
            get_model(family)
    except UnknownModelError as err:
        fail(str(err))
    data = data_config(
        dataset=dataset,
        data_dir=data_dir,
        recbole_name=recbole_name,
        min_rating=min_rating,
        k_core=k_core,
        aggregate_duplicates=aggregate_duplicates,
        no_download=no_download,
        seed=seed,
        synthetic_users=users,
        synthetic_items=items,
        synthetic_interactions=interactions,
    )
    if train_space:
        import json

        try:
            space = json.loads(train_space)
        except json.JSONDecodeError as err:
            fail(
                f"--train-space is not valid JSON ({err}); "
                'e.g. \'{"negative_sampler": ["uniform", "hard"]}\''
            )
        if not isinstance(space, dict):
            fail("--train-space must be a JSON object: a training setting to the list of values to try.")
        settings["train_space"] = space
    return PipelineParams(
        data=data,
        split=split_config(method=split, ratios=ratios, seed=seed),
        min_interactions=min_interactions,
        models=families,
        seed=seed,
        **{k: v for k, v in settings.items() if v is not None},
    )


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


def _threads_for_flows(threads: int | None, ctx: typer.Context) -> int:
    """The command's ``--threads``; else the root ``gnnrec --threads N`` when given, else 1 (0: leave)."""
    if threads is not None:
        return threads
    root = ctx.find_root().params.get("threads")
    return int(root) if root is not None else 1


def _run_and_report(
    flow_fn: Any, params: PipelineParams, *, threads: int | None, ctx: typer.Context, as_json: bool
) -> None:
    """Run a pipeline flow in this process and print its outcome (a table for people, or one JSON object)."""
    started = time.perf_counter()
    settings = _settings(params.mlflow_config)
    threads = _threads_for_flows(threads, ctx)
    if threads:
        from tasks.train import set_threads

        set_threads(threads)
        params = params.model_copy(update={"threads": threads})  # recorded on the MLflow parent run
    from flows.prefect_server import start_temporary_server

    start_temporary_server()  # a temporary Prefect server that dies with this command, even on SIGKILL
    outcome = flow_fn(params)
    seconds = time.perf_counter() - started
    if as_json:
        typer.echo(_outcome_json(outcome, settings, seconds))
    else:
        _print_outcome(outcome, settings)
        typer.echo(f"\nDone in {seconds:.0f} s.")


def run(
    ctx: typer.Context,
    dataset: DatasetOption = "synthetic",
    data_dir: DataDirOption = None,
    recbole_name: RecboleNameOption = None,
    min_rating: MinRatingOption = None,
    k_core: KCoreOption = 0,
    aggregate_duplicates: AggregateDuplicatesOption = False,
    no_download: NoDownloadOption = False,
    min_interactions: MinInteractionsOption = 10,
    split: SplitOption = "random",
    ratios: RatiosOption = (0.8, 0.1, 0.1),
    seed: SeedOption = 2020,
    users: UsersOption = 943,
    items: ItemsOption = 1682,
    interactions: InteractionsOption = 100_000,
    models: ModelsOption = "mf,lightgcn,ngcf",
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            min=0,
            help="Optuna trials per model (finished trials the study keeps).",
            show_default=True,
        ),
    ] = 2,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.0,
            help="Tuning seconds per model: no new trial starts after them.",
            show_default=True,
        ),
    ] = 60.0,
    epochs: EpochsOption = 25,
    lr: LrOption = 0.005,
    batch_size: BatchSizeOption = 2048,
    metric: MetricOption = None,
    device: DeviceOption = "auto",
    train_space: TrainSpaceOption = None,
    threads: ThreadsOption = None,
    mlflow_config: MlflowConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run train-and-promote end to end: validate, tune, train, evaluate, register, promote."""
    from flows.train_and_promote import train_and_promote

    with error_boundary(as_json=as_json):
        params = _pipeline_params(
            dataset=dataset,
            data_dir=data_dir,
            recbole_name=recbole_name,
            min_rating=min_rating,
            k_core=k_core,
            aggregate_duplicates=aggregate_duplicates,
            no_download=no_download,
            min_interactions=min_interactions,
            split=split,
            ratios=ratios,
            seed=seed,
            users=users,
            items=items,
            interactions=interactions,
            models=models,
            train_space=train_space,
            n_trials=trials,
            timeout_s=timeout,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            metric=metric,
            device=device,
            mlflow_config=mlflow_config,
        )
        _run_and_report(train_and_promote, params, threads=threads, ctx=ctx, as_json=as_json)


def retrain(
    ctx: typer.Context,
    dataset: DatasetOption = "synthetic",
    data_dir: DataDirOption = None,
    recbole_name: RecboleNameOption = None,
    min_rating: MinRatingOption = None,
    k_core: KCoreOption = 0,
    aggregate_duplicates: AggregateDuplicatesOption = False,
    no_download: NoDownloadOption = False,
    min_interactions: MinInteractionsOption = 10,
    split: SplitOption = "random",
    ratios: RatiosOption = (0.8, 0.1, 0.1),
    seed: SeedOption = 2020,
    users: UsersOption = 943,
    items: ItemsOption = 1682,
    interactions: InteractionsOption = 100_000,
    models: ModelsOption = "mf,lightgcn,ngcf",
    epochs: EpochsOption = 25,
    lr: LrOption = 0.005,
    batch_size: BatchSizeOption = 2048,
    metric: MetricOption = None,
    device: DeviceOption = "auto",
    train_space: TrainSpaceOption = None,
    threads: ThreadsOption = None,
    mlflow_config: MlflowConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the retrain flow: reload, validate, warm-start, retrain, promote through the same gate."""
    from flows.retrain import retrain as retrain_flow

    with error_boundary(as_json=as_json):
        params = _pipeline_params(
            dataset=dataset,
            data_dir=data_dir,
            recbole_name=recbole_name,
            min_rating=min_rating,
            k_core=k_core,
            aggregate_duplicates=aggregate_duplicates,
            no_download=no_download,
            min_interactions=min_interactions,
            split=split,
            ratios=ratios,
            seed=seed,
            users=users,
            items=items,
            interactions=interactions,
            models=models,
            train_space=train_space,
            n_trials=1,
            warm_start=True,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            metric=metric,
            device=device,
            mlflow_config=mlflow_config,
        )
        _run_and_report(retrain_flow, params, threads=threads, ctx=ctx, as_json=as_json)


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
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Recommend the top-K unseen items for known users or new users' histories, from the champion."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from tasks.register import check_champion

    users, histories = list(user or []), list(history or [])
    if not users and not histories:
        raise _fail("Give --user ID (a known user) or --history ID,ID,... (a new user's items).")
    for given in histories:
        if not [t for t in given.split(",") if t.strip()]:
            raise _fail("--history is empty: give at least one raw item id, e.g. --history 50,181,258.")
    settings = _settings(mlflow_config)
    uri = f"models:/{settings.registered_model_name}@{settings.promotion_alias}"
    champion = check_champion(settings)  # a missing or broken champion is reported with its fix
    if not champion.ok:
        raise _fail(champion.message())
    model = champion.model
    ids: list[Any] = [int(u) if u.lstrip("-").isdigit() else u for u in users]
    if any(isinstance(u, str) for u in ids):
        ids = [str(u) for u in ids]
    # One frame for the known users, one per history (a new user has no id: it is labelled by its position).
    frames: list[tuple[str | None, pd.DataFrame]] = [(None, pd.DataFrame({"user": ids}))] if ids else []
    frames += [(f"history {n}", pd.DataFrame({"history": [h]})) for n, h in enumerate(histories, 1)]
    outs = []
    try:
        for label, frame in frames:
            result = model.predict(frame, params={"k": k})
            if label is not None:
                result["user"] = label
            outs.append(result)
    except (MlflowException, ValueError) as err:
        message = err.message if isinstance(err, MlflowException) else str(err)
        raise _fail(f"The champion rejected the input: {' '.join(message.split())}") from None
    out = pd.concat(outs, ignore_index=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Top-{k} from {uri}")
    for column in out.columns:
        table.add_column(str(column))
    for row in out.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
    if out["fallback"].any():
        typer.echo("Users marked fallback are unknown to the model: they get the most popular items.")


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5001,
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Serve the champion over REST (POST /invocations) with `mlflow models serve`."""
    from tasks.register import check_champion

    settings = _settings(mlflow_config)
    champion = check_champion(settings)  # before starting a server that could only fail on every request
    if not champion.ok:
        raise _fail(champion.message())
    command = serve_command(settings, host=host, port=port)
    typer.echo(
        f"Serving models:/{settings.registered_model_name}@{settings.promotion_alias} on http://{host}:{port}"
    )
    typer.echo(
        'Try: curl -s -X POST -H "Content-Type: application/json" '
        f'-d \'{{"dataframe_split": {{"columns": ["user"], "data": [[1]]}}, "params": {{"k": 5}}}}\' '
        f"http://{host}:{port}/invocations"
    )
    raise typer.Exit(subprocess.call(command, env=serve_env(settings)))


def serve_env(settings: MlflowSettings) -> dict[str, str]:
    """Environment for ``mlflow models serve``: the store's URIs, and this environment's bin on PATH.

    MLflow starts ``uvicorn`` by name, so the project's ``bin`` folder must be on PATH even when the venv is
    not activated (``make run``, ``.venv/bin/gnnrec serve``).
    """
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
    }


def serve_command(settings: MlflowSettings, *, host: str, port: int) -> list[str]:
    """The ``mlflow models serve`` command line for the champion (local environment, no conda/venv)."""
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        f"models:/{settings.registered_model_name}@{settings.promotion_alias}",
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
    ]


def ui(
    ctx: typer.Context,
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port.")] = 5000,
    mlflow_config: MlflowConfigOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Start a local Prefect server, the MLflow UI, and serve the deployments, on 127.0.0.1, until Ctrl-C.

    The deployments' flow runs are processes of their own: ``--threads`` becomes their default ``threads``
    parameter (the Run form can change it).
    """
    from flows.deploy import wait_for_http

    settings = _settings(mlflow_config)
    bin_dir = Path(sys.executable).parent
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    env = {**os.environ, "PREFECT_API_URL": api_url}
    threads = _threads_for_flows(threads, ctx)
    if threads:
        env["GNNREC_THREADS"] = str(threads)
    if mlflow_config is not None:
        env["GNNREC_MLFLOW_CONFIG"] = str(mlflow_config.resolve())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "prefect"),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prefect_port),
                ],
                env=env,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "mlflow"),
                    "ui",
                    "--backend-store-uri",
                    settings.tracking_uri,
                    "--default-artifact-root",
                    settings.artifact_location,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
                ],
                env=env,
            )
        )
        if not wait_for_http(f"{api_url}/health", timeout_s=120):
            raise _fail("The Prefect server did not start within 120 s.", 1)
        procs.append(subprocess.Popen([sys.executable, "-m", "flows.deploy"], env=env))
        typer.echo(
            f"Prefect UI: http://127.0.0.1:{prefect_port}  (Deployments -> train-and-promote/manual -> Run)"
        )
        typer.echo(f"MLflow UI:  http://127.0.0.1:{mlflow_port}")
        typer.echo("Ctrl-C stops all three.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the root app."""
    app.command("run", help=RUN_HELP)(run)
    app.command("retrain", help=RETRAIN_HELP)(retrain)
    app.command("recommend")(recommend)
    app.command("serve")(serve)
    app.command("ui")(ui)
