"""``gnnrec run | retrain | recommend | serve | ui``: the pipeline from the command line.

* ``gnnrec run`` runs the ``train-and-promote`` flow (on a temporary local Prefect server unless
  ``PREFECT_API_URL`` points at one) and prints the leaderboard, the champion and where to look next.
* ``gnnrec recommend --user ID --k 10`` loads ``models:/NAME@champion`` and prints its recommendations.
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
    from tasks.register import configure_mlflow, load_mlflow_settings

    settings = load_mlflow_settings(mlflow_config)
    configure_mlflow(settings)
    return settings


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _run_flow(flow_fn: Any, params: PipelineParams) -> Any:
    """Run a pipeline flow, turning data and contract errors into one paragraph and exit code 2."""
    from flows.steps import DataContractError
    from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError

    try:
        return flow_fn(params)
    except (DataContractError, DataFormatError, DatasetNotAvailableError) as err:
        raise _fail(str(err)) from None


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
    ]
    columns = [c for c in wanted if rows and c in rows[0]]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    console.print(table)
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


def _params(**kwargs: Any) -> PipelineParams:
    from pydantic import ValidationError

    from tasks.config import DataConfig, SplitConfig
    from tasks.pipeline_config import PipelineParams

    data = {k.removeprefix("data_"): v for k, v in kwargs.items() if k.startswith("data_") and v is not None}
    try:
        return PipelineParams(
            data=DataConfig(**data),
            split=SplitConfig(seed=kwargs["seed"]),
            **{
                k: v
                for k, v in kwargs.items()
                if not k.startswith("data_") and k != "seed_split" and v is not None
            },
        )
    except ValidationError as err:
        raise _fail(f"Invalid run settings: {err}") from None


def run(
    dataset: Annotated[
        str, typer.Option(help="Source: synthetic, movielens-100k, lastfm-hetrec, recbole, ...")
    ] = ("synthetic"),
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the source's files.")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated model families.")] = "mf,lightgcn,ngcf",
    trials: Annotated[
        int, typer.Option(help="Optuna trials per model (finished trials the study keeps).")
    ] = 2,
    timeout: Annotated[float, typer.Option(help="Tuning seconds per model.")] = 60.0,
    epochs: Annotated[int, typer.Option(help="Epoch cap per training run.")] = 20,
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 200,
    items: Annotated[int, typer.Option(help="Synthetic items.")] = 300,
    interactions: Annotated[int, typer.Option(help="Synthetic interactions.")] = 8_000,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.005,
    batch_size: Annotated[int, typer.Option(help="Training pairs per step.")] = 1024,
    metric: Annotated[str | None, typer.Option(help="Selection metric (default: mlflow.yml's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of split, sampler and training.")] = 2020,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Run train-and-promote end to end: validate, tune, train, evaluate, register, promote."""
    from flows.train_and_promote import train_and_promote

    started = time.perf_counter()
    synthetic = dataset == "synthetic"
    params = _params(
        data_dataset=dataset,
        data_data_dir=data_dir,
        data_synthetic_users=users if synthetic else None,
        data_synthetic_items=items if synthetic else None,
        data_synthetic_interactions=interactions if synthetic else None,
        data_synthetic_seed=seed if synthetic else None,
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        n_trials=trials,
        timeout_s=timeout,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        metric=metric,
        seed=seed,
        device=device,
        mlflow_config=mlflow_config,
    )
    settings = _settings(mlflow_config)
    outcome = _run_flow(train_and_promote, params)
    _print_outcome(outcome, settings)
    typer.echo(f"\nDone in {time.perf_counter() - started:.0f} s.")


def retrain(
    dataset: Annotated[str, typer.Option(help="Source, as for `gnnrec run`.")] = "synthetic",
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the source's files.")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated model families.")] = "mf,lightgcn,ngcf",
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 200,
    items: Annotated[int, typer.Option(help="Synthetic items.")] = 300,
    interactions: Annotated[int, typer.Option(help="Synthetic interactions.")] = 8_000,
    epochs: Annotated[int, typer.Option(help="Epoch cap per training run.")] = 20,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.005,
    batch_size: Annotated[int, typer.Option(help="Training pairs per step.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed of split, sampler and training.")] = 2020,
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Run the retrain flow: reload, validate, warm-start, retrain, promote through the same gate."""
    from flows.retrain import retrain as retrain_flow

    synthetic = dataset == "synthetic"
    params = _params(
        data_dataset=dataset,
        data_data_dir=data_dir,
        data_synthetic_users=users if synthetic else None,
        data_synthetic_items=items if synthetic else None,
        data_synthetic_interactions=interactions if synthetic else None,
        data_synthetic_seed=seed if synthetic else None,
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        n_trials=1,
        warm_start=True,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        mlflow_config=mlflow_config,
    )
    settings = _settings(mlflow_config)
    _print_outcome(_run_flow(retrain_flow, params), settings)


def recommend(
    user: Annotated[list[str], typer.Option("--user", "-u", help="Raw user id (repeat for several).")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many items per user.")] = 10,
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Recommend the top-K unseen items for users, from the champion (models:/NAME@champion)."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    settings = _settings(mlflow_config)
    uri = f"models:/{settings.registered_model_name}@{settings.promotion_alias}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as err:
        raise _fail(f"No champion to recommend with ({uri}): {err.message} Run `gnnrec run` first.") from None
    ids: list[Any] = [int(u) if u.lstrip("-").isdigit() else u for u in user]
    if any(isinstance(u, str) for u in ids):
        ids = [str(u) for u in ids]
    try:
        out = model.predict(pd.DataFrame({"user": ids}), params={"k": k})
    except MlflowException as err:
        raise _fail(f"The champion rejected the input: {err.message}") from None
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
    settings = _settings(mlflow_config)
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
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port.")] = 5000,
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Start a local Prefect server, the MLflow UI, and serve the deployments, on 127.0.0.1, until Ctrl-C."""
    from flows.deploy import wait_for_http

    settings = _settings(mlflow_config)
    bin_dir = Path(sys.executable).parent
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    env = {**os.environ, "PREFECT_API_URL": api_url}
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
    app.command("run")(run)
    app.command("retrain")(retrain)
    app.command("recommend")(recommend)
    app.command("serve")(serve)
    app.command("ui")(ui)
