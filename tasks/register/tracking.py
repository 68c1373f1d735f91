"""Runs, params, metrics and per-epoch history: the parent, model and trial runs of a pipeline."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tasks.reconcile import TAG_FAILURE
from tasks.register.lineage import TAG_FAMILY, TAG_PARENT, TAG_ROLE, TAG_RUN_NAME, Lineage
from tasks.register.settings import MlflowSettings, configure_mlflow, mlflow_client

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient


def metric_key(name: str, part: str | None = None) -> str:
    """The MLflow name of a metric: ``metric_key("ndcg@20", "valid") == "valid_ndcg_at_20"``."""
    clean = name.replace("@", "_at_")
    return f"{part}_{clean}" if part else clean


def start_pipeline_run(
    settings: MlflowSettings, *, run_name: str, lineage: Lineage, params: Mapping[str, Any]
) -> str:
    """Open the parent run of one flow run.

    Args:
        settings: Tracking settings.
        run_name: Shown in the MLflow UI (the Prefect flow run's name is a good choice).
        lineage: Data lineage tags.
        params: Pipeline parameters, logged flat as params (``split.seed``, ``models``...).

    Returns:
        The run id. Close it with :func:`end_run`.
    """
    experiment_id = configure_mlflow(settings)
    client = mlflow_client(settings)
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={**lineage.tags(), TAG_ROLE: "pipeline", TAG_RUN_NAME: run_name},
    )
    log_params(client, run.info.run_id, params)
    return str(run.info.run_id)


def start_model_run(settings: MlflowSettings, *, parent_run_id: str, family: str, lineage: Lineage) -> str:
    """Open the child run of one model family under the pipeline's parent run; returns its id."""
    experiment_id = configure_mlflow(settings)
    run = mlflow_client(settings).create_run(
        experiment_id,
        run_name=family,
        tags={**lineage.tags(), TAG_PARENT: parent_run_id, TAG_FAMILY: family, TAG_ROLE: "model"},
    )
    return str(run.info.run_id)


def end_run(settings: MlflowSettings, run_id: str, status: str = "FINISHED") -> None:
    """Close a run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    mlflow_client(settings).set_terminated(run_id, status=status)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix=f"{name}."))
        else:
            text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
            out[name] = text[:6000]
    return out


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log nested ``params`` flat (``train.lr``), ``@`` written ``_at_``, 100 per request."""
    from mlflow.entities import Param

    flat = _flatten(params)
    items = [Param(k.replace("@", "_at_"), v) for k, v in flat.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log the finite numeric ``metrics`` at ``step`` (``@`` written ``_at_``); others are skipped."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(k.replace("@", "_at_"), float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    for start in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[start : start + 500])


def epoch_metric_key(key: str) -> str:
    """The MLflow name of a per-epoch value: ``loss`` -> ``epoch_loss``, ``ndcg@20`` -> its validation curve.

    ``ndcg@20`` per epoch is ``epoch_valid_ndcg_at_20``: the prefix keeps the curves apart from the final
    metrics (``valid_ndcg_at_20``, ``test_ndcg_at_20``).
    """
    return f"epoch_valid_{metric_key(key)}" if "@" in key else f"epoch_{metric_key(key)}"


def log_history(client: MlflowClient, run_id: str, history: Sequence[Mapping[str, Any]]) -> None:
    """Per-epoch values as step metrics named by :func:`epoch_metric_key` (step = the row's epoch)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items: list[Metric] = []
    for position, row in enumerate(history):
        step = int(row.get("epoch", position))
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(float(value)):
                items.append(Metric(epoch_metric_key(key), float(value), now, step))
    for start in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[start : start + 500])


def trial_logger(
    settings: MlflowSettings, *, model_run_id: str, family: str, lineage: Lineage
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback that logs each finished trial as a run nested under the model's child run.

    The nested run holds the trial's parameters, its per-epoch curves (from the trial's ``history`` user
    attribute, see :func:`tasks.tune.tune`), its final value and its state (tag ``optuna.state``), and it
    starts and ends when the trial did. A complete trial is closed ``FINISHED``; so is a pruned one (it ran
    as asked and its curve is valid up to the epoch where the pruner stopped it; ``optuna.state`` says
    ``PRUNED``); a failed one (an error such as a NaN loss, or a non-finite objective) is closed ``FAILED``
    with the reason in the tag ``gnnrec.failure``.
    """

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        client = mlflow_client(settings)
        experiment_id = configure_mlflow(settings)
        run = client.create_run(
            experiment_id,
            start_time=_millis(trial.datetime_start),
            run_name=f"{family}-trial-{trial.number}",
            tags={
                **lineage.tags(),
                TAG_PARENT: model_run_id,
                TAG_FAMILY: family,
                TAG_ROLE: "trial",
                "optuna.study": study.study_name,
                "optuna.trial": str(trial.number),
                "optuna.state": trial.state.name,
            },
        )
        run_id = run.info.run_id
        log_params(client, run_id, trial.params)
        log_history(client, run_id, trial.user_attrs.get("history", []))
        final: dict[str, float] = {}
        if trial.value is not None:
            final["objective"] = float(trial.value)
        elif trial.intermediate_values:
            final["objective"] = float(trial.intermediate_values[max(trial.intermediate_values)])
        final["epochs_run"] = float(len(trial.user_attrs.get("history", [])))
        if trial.duration is not None:
            final["trial_seconds"] = trial.duration.total_seconds()
        log_metrics(client, run_id, final)
        status = "FINISHED" if trial.state.name in ("COMPLETE", "PRUNED") else "FAILED"
        if status == "FAILED":
            reason = trial.user_attrs.get("fail_reason") or trial.system_attrs.get("fail_reason")
            client.set_tag(run_id, TAG_FAILURE, str(reason or f"the trial ended {trial.state.name}")[:5000])
        client.set_terminated(run_id, status=status, end_time=_millis(trial.datetime_complete))

    return log_trial


def _millis(moment: Any) -> int | None:
    """A datetime as MLflow's milliseconds since the epoch (``None`` stays ``None``: MLflow uses now)."""
    return None if moment is None else int(moment.timestamp() * 1000)


@contextmanager
def pipeline_run(
    settings: MlflowSettings, *, run_name: str, lineage: Lineage, params: Mapping[str, Any]
) -> Iterator[str]:
    """Context manager around :func:`start_pipeline_run` that closes the run as finished or failed."""
    run_id = start_pipeline_run(settings, run_name=run_name, lineage=lineage, params=params)
    try:
        yield run_id
    except BaseException:
        end_run(settings, run_id, "FAILED")
        raise
    end_run(settings, run_id, "FINISHED")
