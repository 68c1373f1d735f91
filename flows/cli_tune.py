"""``gnnrec tune-worker``: one more process (on this machine or another) running trials of one Optuna study.

Several workers share one study storage (PostgreSQL for workers on several machines; SQLite on one):

* ``gnnrec tune-worker --study NAME --storage URL`` joins a study that ``gnnrec run`` (or a first worker)
  created: the study records its budget and how to rebuild its data and objective, so nothing else is needed
  (``--data-dir`` where this machine keeps the files elsewhere).
* ``gnnrec tune-worker --config run.yml --model mf --storage URL`` creates the study ``gnnrec run`` would
  tune ``mf`` in with these settings (or joins it, when another worker created it first).

Every worker runs trials until the study holds its budget of finished trials, counted in the storage over
all workers; each seeds its sampler apart (``--worker N``); a worker killed mid-trial stops beating, and its
trial is marked FAIL and run again by another worker. Exit 3 when the storage cannot be used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_common import (
    EXIT_BAD_INPUT,
    DataDirOption,
    JsonOption,
    error_boundary,
    fail,
    probe_study_storage,
    stderr_console,
)


def tune_worker(
    ctx: typer.Context,
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="The study to join (mf-<data>-<split>-<settings>, as gnnrec run's log names it). Without it "
            "and without --config, the studies in the storage are listed.",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="The study storage every worker shares, a SQLAlchemy URL: postgresql://USER@HOST:5432/DB "
            "(workers on several machines) or sqlite:///PATH (one machine). Default: study_storage of "
            "--config, else of mlflow.yml.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            dir_okay=False,
            help="Create (or join) the study gnnrec run would tune --model in with this run-config YAML "
            "(the same fields as gnnrec run --config).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="With --config: the model family to tune.")
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            min=1,
            help="Finished trials the study should hold (all workers together); default: the study's own "
            "budget (with --config: its n_trials).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.0, help="Seconds this worker tunes at most (default: no limit)."),
    ] = None,
    worker: Annotated[
        int | None,
        typer.Option(
            "--worker",
            min=0,
            help="This worker's number, which seeds its sampler apart from the others' (default: one drawn "
            "from the host and process id; 0 is the study's creator's).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads torch may use (default: torch's).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run trials of one Optuna study beside other workers until the study holds its trial budget.

    Prints the study's best trial (the same whichever worker found it) and the trials this worker ran.
    Exit 0 when the budget is met (or --timeout passed); 2 when the study cannot be joined (no such study,
    its data differ here, bad options); 3 when the study storage cannot be opened or fails.
    """
    from tasks.reconcile import OpenRecords, closing_on_signals
    from tasks.tune_worker import StudyNotJoinableError, default_worker, join_study, start_study, studies_in

    console = stderr_console()
    if study is not None and config is not None:
        fail("Give --study NAME to join a study, or --config FILE --model NAME to start one, not both.")
    if config is not None and not model:
        fail("--config needs --model: the model family whose study to run.")
    if study is None and config is None and (model or trials):
        fail("Give --study NAME (a running study) or --config FILE --model NAME.")
    with error_boundary(as_json=as_json):
        root_threads = ctx.find_root().params.get("threads")
        wanted = threads or (int(root_threads) if root_threads else None)
        if wanted:
            from tasks.train import set_threads

            set_threads(wanted)
        params = _params(config, trials, timeout, data_dir, device) if config is not None else None
        url = storage or (params.study_storage if params is not None else None) or _mlflow_storage()
        probe_study_storage(url)
        if study is None and params is None:
            rows = studies_in(url)
            listing = "; ".join(f"{n} ({f}/{b if b is not None else '?'} trials)" for n, b, f in rows)
            fail(f"Give --study NAME. Studies in this storage: {listing or 'none yet (start gnnrec run)'}.")
        number = default_worker() if worker is None else worker

        def progress(event: Any) -> None:
            if event.event == "trial":
                console.print(f"worker {number}: {event.line()}", markup=False)

        records = OpenRecords()
        records.add_storage(url)  # on SIGTERM/SIGINT this worker's running trial is closed FAIL at once
        with closing_on_signals(records):
            try:
                if params is not None:
                    assert model is not None
                    result = start_study(params, model, url, worker=number, progress=progress)
                else:
                    assert study is not None
                    result = join_study(
                        study,
                        url,
                        worker=number,
                        data_dir=data_dir,
                        device=device,
                        n_trials=trials,
                        timeout_s=timeout,
                        progress=progress,
                    )
            except StudyNotJoinableError as err:
                fail(str(err))
    payload = {
        "study": result.study_name,
        "worker": number,
        "storage": _shown(url),
        "trials_finished_here": result.n_new_trials,
        "trials_finished": result.n_trials,
        "pruned": result.n_pruned,
        "best_trial": result.best_trial,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "metric": result.metric,
        "seconds": round(result.seconds, 2),
    }
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    typer.echo(
        f"Study {result.study_name}: {result.n_trials} finished trials ({result.n_new_trials} by worker "
        f"{number}); best {result.metric} {result.best_value:.4f} (trial {result.best_trial}) with "
        f"{json.dumps(result.best_params, default=str)}"
    )


def _params(
    config: Path, trials: int | None, timeout: float | None, data_dir: Path | None, device: str | None
) -> Any:
    """The run settings of ``--config`` with this command's flags over them, and the metric filled in."""
    from tasks.pipeline_config import effective_params

    overrides: dict[str, Any] = {"n_trials": trials, "timeout_s": timeout, "device": device}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        overrides["data"] = {"data_dir": data_dir}
    params = effective_params(config, overrides)
    if params.metric is None:  # as gnnrec run: mlflow.yml's selection metric (it names the study)
        from tasks.register.settings import load_mlflow_settings

        try:
            metric = load_mlflow_settings(params.mlflow_config).selection_metric
        except FileNotFoundError:
            from tasks.train import TrainConfig

            metric = TrainConfig.model_fields["metric"].default
        params = params.model_copy(update={"metric": metric})
    return params


def _mlflow_storage() -> str:
    from tasks.register.settings import load_mlflow_settings

    try:
        return load_mlflow_settings(None).study_storage
    except FileNotFoundError:
        fail("Give --storage URL (no mlflow.yml here names a study storage).", EXIT_BAD_INPUT)


def _shown(url: str) -> str:
    from tasks.tune_worker import _redacted

    return _redacted(url)
