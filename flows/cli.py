"""The ``gnnrec`` command line: one Typer app, each command group in its own module.

Command bodies import their heavy dependencies (torch, GX, Prefect, MLflow) lazily, so ``gnnrec --help``
answers at once.
"""

from __future__ import annotations

import os

import typer

# Telemetry off and a patient Prefect start-up wherever the CLI runs (setdefault: the user may override).
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)

from flows import cli_data, cli_models, cli_pipeline, cli_stack, cli_train, cli_tune  # noqa: E402

app = typer.Typer(
    name="gnnrec",
    help="Train, tune, compare and ship graph-neural-network recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads for torch (torch.set_num_threads). Default: torch's choice (one per core). On a "
        "machine that is busy with other work, fewer threads than cores avoid oversubscription, which "
        "can slow training 10-50x.",
    ),
) -> None:
    """Train, tune, compare and ship graph-neural-network recommenders."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


app.add_typer(cli_data.app, name="data")
app.add_typer(cli_stack.app, name="stack")
app.command("train")(cli_train.train)
app.command("models")(cli_models.models_command)
app.command("tune-worker")(cli_tune.tune_worker)
cli_pipeline.register(app)


if __name__ == "__main__":
    app()
