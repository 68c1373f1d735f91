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
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows import steps as t
from flows.parallel import model_branch_runner, probe_dask_scheduler, worker_threads
from tasks.compat import check_requirements
from tasks.pipeline_config import PipelineParams
from tasks.prepare import DataContractError, require_passed

if TYPE_CHECKING:
    from data_checks import ValidationReport
    from tasks.register import MlflowSettings, PromotionDecision, RegisteredVersion

__all__ = [
    "DataContractError",
    "PipelineOutcome",
    "contract_failed",
    "model_task_runner",
    "run_pipeline",
    "train_and_promote",
]


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
        failed: The models that failed, with the reason (their rows on the leaderboard say ``failed``).
    """

    leaderboard: list[dict[str, Any]]
    decision: PromotionDecision
    versions: list[RegisteredVersion] = field(default_factory=list)
    parent_run_id: str = ""
    tracking_uri: str = ""
    registered_model: str = ""
    metric: str = ""
    failed: dict[str, str] = field(default_factory=dict)


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
        RuntimeError: When every model failed (the leaderboard says why for each).
    """
    from prefect.runtime import flow_run

    from flows.prefect_server import crash_flow_run
    from tasks.reconcile import OpenRecords, closing_on_signals
    from tasks.register import Lineage, load_mlflow_settings
    from tasks.train import set_threads

    if params.dask_address:
        probe_dask_scheduler(params.dask_address)  # before any work: a scheduler that is not there fails now
    # Before any task: torch's worker threads read the thread count once, at their first parallel op.
    torch_threads = set_threads(params.threads)
    settings: MlflowSettings = load_mlflow_settings(params.mlflow_config)
    if params.study_storage:
        settings = settings.model_copy(update={"study_storage": params.study_storage})
    metric = params.metric or settings.selection_metric

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
    check_requirements(params.models, graphs, dataset.name)  # before any tuning: refuse, naming each model

    # Records a killed earlier run left RUNNING are closed first; this run's are closed on any exit.
    t.reconcile_stale(settings)
    records = OpenRecords()
    records.add_storage(settings.study_storage)
    flow_run_id = flow_run.get_id()
    with closing_on_signals(records, before_exit=lambda signum: crash_flow_run(flow_run_id, signum)):
        parent = t.start_pipeline_run(
            settings,
            f"{flow_name}-{flow_run.get_name() or 'local'}",
            Lineage.of(dataset, split),
            {"flow": flow_name, **params.model_dump(mode="json"), "torch_threads": torch_threads},
            _prefect_links(),
        )
        records.add_run(settings.tracking_uri, parent)
        try:
            outcome = _models(params, settings, metric, dataset, split, graphs, parent, records)
        except BaseException:
            records.close_all("FAILED")  # the children still open, then the parent
            raise
        t.end_run(settings, parent, "FINISHED")
        records.closed_run(parent)
    return outcome


def _prefect_links() -> dict[str, str]:
    """Tags that link an MLflow run to this Prefect flow run (its id, and its UI page when known)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_API_URL
    from prefect.utilities.urls import url_for

    run_id = flow_run.get_id()
    if not run_id:
        return {}
    links = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.get_name())}
    # PREFECT_UI_URL when set; else the UI beside the API (a temporary server has none: the id stays).
    api = (PREFECT_API_URL.value() or "").removesuffix("/api")
    url = url_for("flow-run", obj_id=run_id, default_base_url=api or None)
    if url:
        links["prefect.flow_run_url"] = url
    return links


def _failure(state: Any) -> str:
    """One line saying why a task run failed: its exception's type and message, else the state's message."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 (the result itself may be unreadable: say that)
        error = err
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(state.message or state.name)


def _models(
    params: PipelineParams,
    settings: MlflowSettings,
    metric: str,
    dataset: Any,
    split: Any,
    graphs: Any,
    parent: str,
    records: Any,
) -> PipelineOutcome:
    """Per model: tune -> train the best -> test -> register, each model a branch that may fail alone.

    With ``parallel: 1`` each stage is submitted for every model still standing, on the flow's one-worker
    runner; with ``parallel: N`` or ``dask_address`` each model's whole chain is one task
    (:func:`flows.steps.model_branch`) on a Dask worker of its own (:mod:`flows.parallel`). Either way the
    branches are collected as states, so one model's failure
    (bad hyperparameters, a NaN loss, a device that is not there) closes its MLflow run FAILED and puts a
    ``failed`` row with the reason on the leaderboard, while the others are registered and compared.
    """
    from tasks.register import Lineage, split_key
    from tasks.report import failed_leaderboard_row, leaderboard_row, rank_leaderboard, table_rows
    from tasks.tune import study_name, trial_settings_key

    logger = get_run_logger()
    ks = params.ks_with(metric)
    lineage = Lineage.of(dataset, split)
    families = list(params.models)
    failed: dict[str, str] = {}

    def collect(futures: dict[str, Any]) -> dict[str, Any]:
        done: dict[str, Any] = {}
        for family, future in futures.items():
            future.wait()
            state = future.state
            if state.is_completed():
                done[family] = state.result()
            else:
                failed[family] = _failure(state)
                logger.error("%s failed; the other models go on. %s", family, failed[family])
        return done

    base = {f: params.train_config(f, metric) for f in families}
    studies = {
        f: study_name(
            dataset.fingerprint, split_key(split), f, trial_settings_key(base[f], params.train_space_for(f))
        )
        for f in families
    }
    children: dict[str, str] = {}
    for family in families:
        children[family] = t.start_model_run(settings, parent, family, lineage)
        records.add_run(settings.tracking_uri, children[family])
    warm = {f: t.warm_start_params(settings, f, studies[f]) if params.warm_start else None for f in families}
    with model_branch_runner(params) as runner:
        if runner is None:
            tuned, trained, tested, versions = _stages_in_flow(
                params,
                settings,
                metric,
                ks,
                dataset,
                split,
                graphs,
                lineage,
                base,
                studies,
                children,
                warm,
                collect,
            )
        else:
            branches = _branches_on_workers(
                runner,
                params,
                settings,
                metric,
                ks,
                dataset,
                split,
                lineage,
                base,
                studies,
                children,
                warm,
                collect,
            )
            tuned = {f: b.tuned for f, b in branches.items()}
            trained = {f: b.trained for f, b in branches.items()}
            tested = {f: b.tested for f, b in branches.items()}
            versions = {f: b.version for f, b in branches.items()}
    rows: list[dict[str, Any]] = []
    for family in families:
        if family in versions:
            version = versions[family]
            records.closed_run(children[family])  # registering closed it FINISHED
            rows.append(leaderboard_row(family, version, tested[family], trained[family], tuned[family]))
            logger.info(
                "%s: valid %s %.4f, test %.4f (v%s)",
                family,
                metric,
                version.valid_value,
                version.test_value,
                version.version,
            )
        else:
            t.fail_model_run(settings, children[family], family, failed[family])
            records.closed_run(children[family])
            rows.append(failed_leaderboard_row(family, metric, failed[family], children[family]))

    # Compare all -> promote the winner through the gate.
    rows = rank_leaderboard(rows, metric)
    create_table_artifact(
        table=table_rows(rows),
        key="leaderboard",
        description=f"Models by validation {metric} (test reported)",
    )
    _publish_mlflow_links(settings, parent, rows)
    t.log_leaderboard(settings, parent, rows, metric)
    registered = [versions[f] for f in families if f in versions]
    if not registered:
        raise RuntimeError(
            "Every model failed, nothing was registered: "
            + "; ".join(f"{family}: {reason}" for family, reason in failed.items())
        )
    decision = t.promote(settings, registered, dataset, split)
    create_markdown_artifact(
        markdown=decision.to_markdown(), key="promotion-decision", description="Champion promotion"
    )
    logger.info("Promotion: %s", decision.reason)
    if failed:
        logger.warning("%d of %d models failed: %s", len(failed), len(families), ", ".join(failed))
    return PipelineOutcome(
        leaderboard=rows,
        decision=decision,
        versions=registered,
        parent_run_id=parent,
        tracking_uri=settings.tracking_uri,
        registered_model=settings.registered_model_name,
        metric=metric,
        failed=dict(failed),
    )


def _branches_on_workers(
    runner: Any,
    params: PipelineParams,
    settings: MlflowSettings,
    metric: str,
    ks: tuple[int, ...],
    dataset: Any,
    split: Any,
    lineage: Any,
    base: dict[str, Any],
    studies: dict[str, str],
    children: dict[str, str],
    warm: dict[str, Any],
    collect: Any,
) -> dict[str, Any]:
    """Each model's whole chain (:func:`flows.steps.model_branch`) on a Dask worker; waits for all of them."""
    from tasks.register import trial_logger

    threads = worker_threads(params)
    return cast(
        "dict[str, Any]",
        collect(
            {
                family: runner.submit(
                    t.model_branch,
                    parameters={
                        "dataset": dataset,
                        "split": split,
                        "base_config": base[family],
                        "settings": settings,
                        "run_id": children[family],
                        "lineage": lineage,
                        "study": studies[family],
                        "n_trials": params.n_trials,
                        "extra_trials": params.extra_trials,
                        "timeout_s": params.timeout_s,
                        "seed": params.seed,
                        "warm_start": warm[family],
                        "callbacks": [
                            trial_logger(
                                settings, model_run_id=children[family], family=family, lineage=lineage
                            )
                        ],
                        "train_space": params.train_space_for(family),
                        "pruner": params.pruner,
                        "source": study_source(params),
                        "ks": ks,
                        "metric": metric,
                        "threads": threads,
                    },
                )
                for family in params.models
            }
        ),
    )


def study_source(params: PipelineParams) -> dict[str, Any]:
    """What the studies record so that ``gnnrec tune-worker --study NAME`` can rebuild their data."""
    from tasks.tune_worker import objective_source

    return objective_source(
        params.data,
        params.split,
        allow_duplicates=params.allow_duplicates,
        min_interactions=params.min_interactions,
    )


def _stages_in_flow(
    params: PipelineParams,
    settings: MlflowSettings,
    metric: str,
    ks: tuple[int, ...],
    dataset: Any,
    split: Any,
    graphs: Any,
    lineage: Any,
    base: dict[str, Any],
    studies: dict[str, str],
    children: dict[str, str],
    warm: dict[str, Any],
    collect: Any,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The models' stages on the flow's own runner: each stage submitted for every model still standing."""
    from tasks.pipeline_config import final_train_config
    from tasks.register import trial_logger
    from tasks.report import run_facts
    from tasks.tune import reusable_trained

    families = list(params.models)
    tuned = collect(
        {
            f: t.tune_model.submit(
                graphs,
                split,
                base[f],
                study=studies[f],
                storage=settings.study_storage,
                n_trials=params.n_trials,
                extra_trials=params.extra_trials,
                timeout_s=params.timeout_s,
                seed=params.seed,
                warm_start=warm[f],
                train_space=params.train_space_for(f),
                pruner=params.pruner,
                callbacks=[trial_logger(settings, model_run_id=children[f], family=f, lineage=lineage)],
                source=study_source(params),
            )
            for f in families
        }
    )
    finals = {f: final_train_config(base[f], tuned[f], warm[f]) for f in tuned}
    trained = collect(
        {
            f: t.train_model.submit(
                graphs, split, finals[f], dataset.fingerprint, kept=reusable_trained(tuned[f], finals[f])
            )
            for f in tuned
        }
    )
    tested = collect({f: t.evaluate_model.submit(trained[f], split, "test", ks) for f in trained})
    versions = collect(
        {
            f: t.register_model.submit(
                settings,
                children[f],
                trained[f],
                tested[f],
                dataset,
                split,
                lineage,
                run_facts(tuned[f], trained[f]),
                metric,
                f,
            )
            for f in tested
        }
    )
    return tuned, trained, tested, versions


def _publish_mlflow_links(settings: MlflowSettings, parent: str, rows: list[dict[str, Any]]) -> None:
    """The ``mlflow-runs`` artifact: this flow run's MLflow runs and registered versions, as links."""
    import os

    from tasks.register import configure_mlflow
    from tasks.report import mlflow_links_markdown

    create_markdown_artifact(
        markdown=mlflow_links_markdown(
            tracking_uri=settings.tracking_uri,
            ui_url=os.environ.get("GNNREC_MLFLOW_UI_URL", "http://127.0.0.1:5000"),
            experiment_id=configure_mlflow(settings),
            parent_run_id=parent,
            rows=rows,
            registered_model=settings.registered_model_name,
        ),
        key="mlflow-runs",
        description="MLflow runs and registered versions of this flow run",
    )


def model_task_runner() -> Any:
    """The flows' task runner: the models' branches are submitted, and run one task at a time.

    One worker, because torch's random generator and thread pool are per process: two trainings in threads
    of one process would draw from the same generator and lose determinism under a seed (and contend for
    the same cores and SQLite stores). Submitting still makes each model's branch a state of its own.
    Models run at once in processes of their own instead: ``parallel: N`` or ``dask_address``
    (:func:`flows.parallel.model_branch_runner`).
    """
    return ThreadPoolTaskRunner(max_workers=1)


@flow(name="train-and-promote", log_prints=True, task_runner=model_task_runner())
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
