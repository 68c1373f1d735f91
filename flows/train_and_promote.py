"""The ``train-and-promote`` flow: validate, build graphs, tune and train every model, register, promote.

The flow only wires the steps of :mod:`flows.steps`. It publishes three Prefect artifacts with stable keys:
``data-report`` (contract summary, dataset, split and graph statistics), ``leaderboard`` (a table of every
model's validation and test metrics, training time and trial count) and ``promotion-decision``.

A dataset that fails its contract stops the flow before any training, with the contract summary in the
``data-report`` artifact and in the failure message; nothing is written to MLflow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import steps as t
from tasks.pipeline_config import PipelineParams

if TYPE_CHECKING:
    from tasks.register import MlflowSettings, PromotionDecision, RegisteredVersion


@dataclass(frozen=True)
class PipelineOutcome:
    """What a pipeline run produced.

    Attributes:
        leaderboard: One row per model (validation and test metrics, times, trials, registered version).
        decision: The promotion decision.
        versions: The registered versions of this run.
        parent_run_id: The MLflow parent run.
        tracking_uri: Where the runs are.
        registered_model: The registered model's name.
        metric: The selection metric.
    """

    leaderboard: list[dict[str, Any]]
    decision: PromotionDecision
    versions: list[RegisteredVersion] = field(default_factory=list)
    parent_run_id: str = ""
    tracking_uri: str = ""
    registered_model: str = ""
    metric: str = ""


def _data_report(report: Any, dataset: Any = None, split: Any = None, graphs: Any = None) -> str:
    status = "passed" if report.success else "**FAILED**"
    lines = [f"# Data report: contract {status}", "", "## Data contract (Great Expectations)", "", "```"]
    lines += [report.summary(), "```"]
    docs = getattr(report, "docs_path", None)
    if docs:
        lines += ["", f"Data Docs: `{docs}`"]
    if dataset is not None:
        lines += ["", "## Dataset", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in dataset.summary().items()]
    if split is not None:
        lines += ["", "## Split", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in split.describe().items()]
    if graphs is not None:
        lines += ["", "## Graphs", "", "```json", json.dumps(graphs.stats, indent=2, default=str), "```"]
    return "\n".join(lines)


def _fmt(value: float) -> float:
    return round(float(value), 5) if math.isfinite(value) else float("nan")


def run_pipeline(params: PipelineParams, *, flow_name: str) -> PipelineOutcome:
    """The body shared by :func:`train_and_promote` and :func:`flows.retrain.retrain` (call it in a flow).

    Raises:
        DataContractError: When the data fails its contract (before any training or MLflow write).
    """
    from prefect.runtime import flow_run

    from tasks.register import Lineage, load_mlflow_settings, split_key
    from tasks.train import TrainConfig
    from tasks.tune import study_name

    logger = get_run_logger()
    settings: MlflowSettings = load_mlflow_settings(params.mlflow_config)
    if params.study_storage:
        settings = settings.model_copy(update={"study_storage": params.study_storage})
    metric = params.metric or settings.selection_metric
    ks = params.ks_with(metric)

    raw = t.load_data(params.data)
    report = t.validate_data(raw, params.allow_duplicates, params.min_interactions)
    if not report.success:
        create_markdown_artifact(
            markdown=_data_report(report), key="data-report", description="Data contract failed"
        )
        raise t.DataContractError(
            f"The data failed its contract; stopped before training. Summary:\n{report.summary()}"
        )
    dataset = t.build_dataset(raw, params.data)
    split = t.split_data(dataset, params.split)
    graphs = t.build_graphs(dataset, split)
    create_markdown_artifact(
        markdown=_data_report(report, dataset, split, graphs), key="data-report", description="Data report"
    )
    lineage = Lineage.of(dataset, split)
    run_name = f"{flow_name}-{flow_run.get_name() or 'local'}"
    parent = t.start_pipeline_run(
        settings, run_name, lineage, {"flow": flow_name, **params.model_dump(mode="json")}
    )
    status = "FAILED"
    try:
        versions: list[RegisteredVersion] = []
        rows: list[dict[str, Any]] = []
        for family in params.models:
            base = TrainConfig(
                model=family,
                epochs=params.epochs,
                metric=metric,
                ks=ks,
                device=params.device,
                seed=params.seed,
                progress=False,
                **params.train_overrides(),
            )
            study = study_name(dataset.fingerprint, split_key(split), family)
            child = t.start_model_run(settings, parent, family, lineage)
            warm = t.warm_start_params(settings, family, study) if params.warm_start else None
            from tasks.register import trial_logger

            tuned = t.tune_model(
                graphs,
                split,
                base,
                study=study,
                storage=settings.study_storage,
                n_trials=params.n_trials,
                extra_trials=params.extra_trials,
                timeout_s=params.timeout_s,
                seed=params.seed,
                warm_start=warm,
                callbacks=[trial_logger(settings, model_run_id=child, family=family, lineage=lineage)],
            )
            hparams = tuned.best_hparams if tuned.best_params else (warm or {})
            final_config = base.model_copy(update={"hparams": {**base.hparams, **hparams}})
            trained = t.train_model(graphs, split, final_config, dataset.fingerprint)
            test_metrics = t.evaluate_model(trained, split, "test", ks)
            train_seconds = float(sum(row.get("seconds", 0.0) for row in trained.history))
            version = t.register_model(
                settings,
                child,
                trained,
                test_metrics,
                dataset,
                split,
                lineage,
                {
                    "tune_seconds": tuned.seconds,
                    "trials": float(tuned.n_trials),
                    "new_trials": float(tuned.n_new_trials),
                    "pruned_trials": float(tuned.n_pruned),
                    "train_seconds": train_seconds,
                },
                metric,
                family,
            )
            versions.append(version)
            rows.append(
                {
                    "model": family,
                    f"valid {metric}": _fmt(version.valid_value),
                    f"test {metric}": _fmt(version.test_value),
                    **{f"test {k}": _fmt(v) for k, v in sorted(test_metrics.values.items()) if k != metric},
                    "best epoch": int(trained.best_epoch),
                    "train s": round(train_seconds, 2),
                    "tune s": round(tuned.seconds, 2),
                    "trials": tuned.n_trials,
                    "new trials": tuned.n_new_trials,
                    "version": version.version,
                }
            )
            logger.info(
                "%s: valid %s %.4f, test %.4f (v%s)",
                family,
                metric,
                version.valid_value,
                version.test_value,
                version.version,
            )
        rows.sort(
            key=lambda r: -float(r[f"valid {metric}"]) if math.isfinite(r[f"valid {metric}"]) else math.inf
        )
        create_table_artifact(
            table=rows, key="leaderboard", description=f"Models by validation {metric} (test reported)"
        )
        t.log_leaderboard(settings, parent, rows, metric)
        decision = t.promote(settings, versions)
        create_markdown_artifact(
            markdown=decision.to_markdown(), key="promotion-decision", description="Champion promotion"
        )
        logger.info("Promotion: %s", decision.reason)
        status = "FINISHED"
    finally:
        t.end_run(settings, parent, status)
    return PipelineOutcome(
        leaderboard=rows,
        decision=decision,
        versions=versions,
        parent_run_id=parent,
        tracking_uri=settings.tracking_uri,
        registered_model=settings.registered_model_name,
        metric=metric,
    )


@flow(name="train-and-promote", log_prints=True)
def train_and_promote(params: PipelineParams = PipelineParams()) -> PipelineOutcome:  # noqa: B008
    """Validate the data, tune, train and evaluate every model, register them and promote the best.

    Args:
        params: Dataset, split, models, trial and time budget, selection metric, seed and stores.

    Returns:
        The leaderboard, the registered versions and the promotion decision.
    """
    return run_pipeline(params, flow_name="train-and-promote")
