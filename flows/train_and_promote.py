"""The ``train-and-promote`` flow: validate, build graphs, tune and train every model, register, promote.

The flow only wires the steps of :mod:`flows.steps`. It publishes three Prefect artifacts with stable keys:
``data-report`` (contract summary, dataset, split and graph statistics), ``leaderboard`` (a table of every
model's validation and test metrics, training time and trial count) and ``promotion-decision``.

A dataset that fails its contract stops the flow before any training, with the contract summary in the
``data-report`` artifact and in the failure message (a :class:`~tasks.prepare.DataContractError`); nothing
is written to MLflow. What is computed between the steps (training configs, leaderboard rows, the data
report) lives in plain functions in :mod:`tasks.report` and :mod:`tasks.pipeline_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import steps as t
from tasks.pipeline_config import PipelineParams
from tasks.prepare import DataContractError, require_passed

if TYPE_CHECKING:
    from data_checks import ValidationReport
    from tasks.register import MlflowSettings, PromotionDecision, RegisteredVersion

__all__ = ["DataContractError", "PipelineOutcome", "contract_failed", "run_pipeline", "train_and_promote"]


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


def _publish_data_report(report: ValidationReport, *parts: Any) -> None:
    """The ``data-report`` artifact; raises :class:`DataContractError` (before any training) on a failure."""
    from tasks.report import data_report_markdown

    create_markdown_artifact(
        markdown=data_report_markdown(report, *parts),
        key="data-report",
        description="Data report" if report.success else "Data contract failed",
    )
    require_passed(report)


def contract_failed(err: DataContractError) -> Any:
    """The Failed state a flow returns when its data breaks the contract, instead of raising.

    A raised error makes Prefect log a traceback for what is bad input, not a bug. The state carries the
    error, so calling the flow still raises the very :class:`DataContractError` (the CLI prints its
    summary and exits 1), and ``return_state=True`` gives a Failed state whose message is the summary.
    """
    from prefect.states import Failed

    get_run_logger().error("The data broke its contract; nothing was trained or registered.\n%s", err)
    return Failed(message=str(err), data=err)


def run_pipeline(params: PipelineParams, *, flow_name: str) -> PipelineOutcome:
    """The body shared by :func:`train_and_promote` and :func:`flows.retrain.retrain` (call it in a flow).

    Raises:
        DataContractError: When the data or its split fails the contract (before any training or MLflow
            write); the ``data-report`` artifact holds the summary.
    """
    from prefect.runtime import flow_run

    from tasks.pipeline_config import final_train_config
    from tasks.register import Lineage, load_mlflow_settings, split_key, trial_logger
    from tasks.report import leaderboard_row, rank_leaderboard, run_facts
    from tasks.train import set_threads
    from tasks.tune import study_name, trial_settings_key

    logger = get_run_logger()
    # Before any task: torch's worker threads read the thread count once, at their first parallel op.
    torch_threads = set_threads(params.threads)
    settings: MlflowSettings = load_mlflow_settings(params.mlflow_config)
    if params.study_storage:
        settings = settings.model_copy(update={"study_storage": params.study_storage})
    metric = params.metric or settings.selection_metric
    ks = params.ks_with(metric)

    # Data: load -> contract -> index -> split -> split contract -> graphs (as tasks.prepare.prepare_data).
    raw = t.load_data(params.data)
    report = t.validate_data(raw, params.data, params.allow_duplicates, params.min_interactions)
    if not report.success:
        _publish_data_report(report)
    dataset = t.build_dataset(raw, params.data, params.allow_duplicates)
    split = t.split_data(dataset, params.split)
    split_report = t.validate_split(split, raw.name)
    if not split_report.success:
        _publish_data_report(split_report, dataset)
    graphs = t.build_graphs(dataset, split)
    _publish_data_report(report, dataset, split, graphs)

    lineage = Lineage.of(dataset, split)
    run_name = f"{flow_name}-{flow_run.get_name() or 'local'}"
    parent = t.start_pipeline_run(
        settings,
        run_name,
        lineage,
        {"flow": flow_name, **params.model_dump(mode="json"), "torch_threads": torch_threads},
    )
    status = "FAILED"
    try:
        versions: list[RegisteredVersion] = []
        rows: list[dict[str, Any]] = []
        for family in params.models:
            # Per model: tune on validation -> retrain the best trial -> evaluate on test -> register.
            base = params.train_config(family, metric)
            study = study_name(
                dataset.fingerprint, split_key(split), family, trial_settings_key(base, params.train_space)
            )
            child = t.start_model_run(settings, parent, family, lineage)
            warm = t.warm_start_params(settings, family, study) if params.warm_start else None
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
                train_space=params.train_space,
                callbacks=[trial_logger(settings, model_run_id=child, family=family, lineage=lineage)],
            )
            trained = t.train_model(graphs, split, final_train_config(base, tuned, warm), dataset.fingerprint)
            test_metrics = t.evaluate_model(trained, split, "test", ks)
            version = t.register_model(
                settings,
                child,
                trained,
                test_metrics,
                dataset,
                split,
                lineage,
                run_facts(tuned, trained),
                metric,
                family,
            )
            versions.append(version)
            rows.append(leaderboard_row(family, version, test_metrics, trained, tuned))
            logger.info(
                "%s: valid %s %.4f, test %.4f (v%s)",
                family,
                metric,
                version.valid_value,
                version.test_value,
                version.version,
            )
        # Compare all -> promote the winner through the gate.
        rows = rank_leaderboard(rows, metric)
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
    try:
        return run_pipeline(params, flow_name="train-and-promote")
    except DataContractError as err:
        return contract_failed(err)
