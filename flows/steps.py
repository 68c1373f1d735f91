"""Prefect task wrappers around the plain steps in ``tasks/``: names, retries, cache keys, nothing else.

Named ``steps`` rather than ``tasks``: Prefect loads a file entrypoint (``flows/train_and_promote.py``) with
``flows/`` on ``sys.path``, where a ``flows/tasks.py`` would shadow the top-level ``tasks`` package.

* Stable lowercase-dash task names, so the Prefect UI keeps each step's history.
* Retries only on the steps that talk to the tracking server (MLflow).
* The data steps are cached by the fingerprint of their inputs (raw tables' content hash, dataset
  fingerprint, split fingerprint), the task's source and the **code version** of what they run
  (:func:`tasks.code_version.code_version`: package version plus a hash of the source of ``tasks/`` and
  ``data_checks/``, and ``models/`` for training), so a rerun after a failure resumes from the last finished
  step instead of recomputing, while an edit to the code computes afresh; so is the final training of each
  model (same data, same configuration, same code, same result). Cached results expire after
  :data:`CACHE_EXPIRATION`. Loading and validating are never cached: the files may have changed.
* The data steps call the very functions of :func:`tasks.prepare.prepare_data` (``load_raw``,
  ``validate_raw``, ``index_raw``, ``split_dataset``, ``validate_parts``, ``build_graphs``), one task each,
  so the CLI and the flows read, check and split data identically.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from tasks.code_version import code_version
from tasks.config import DataConfig, SplitConfig
from tasks.prepare import DataContractError

__all__ = ["DataContractError"]  # re-exported: the flows raise the one error every command understands

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.context import TaskRunContext

    from data_checks import ValidationReport
    from tasks.evaluate import Metrics
    from tasks.graphs import Graphs
    from tasks.ingest.dataset import Dataset
    from tasks.ingest.tables import RawTables
    from tasks.register import Lineage, MlflowSettings, PromotionDecision, RegisteredVersion
    from tasks.split import Split
    from tasks.train import TrainConfig, TrainedModel
    from tasks.tune import TuneProgress, TuneResult


def raw_fingerprint(raw: RawTables) -> str:
    """A content hash of every raw table (sha256 of pandas' row hashes, first 16 hex chars)."""
    h = hashlib.sha256(raw.name.encode())
    for name, table in sorted(raw.tables().items()):
        h.update(f"|{name}|{','.join(map(str, table.columns))}|".encode())
        h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


#: How long a cached step result is reused (a later run recomputes it, and caches the new result).
CACHE_EXPIRATION = timedelta(days=7)

#: The packages whose source decides what the data steps compute; training runs the models too.
DATA_PACKAGES = ("tasks", "data_checks")
TRAIN_PACKAGES = ("models", "tasks", "data_checks")


def _dataset_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    config: DataConfig = parameters["config"]
    merge = config.aggregate_duplicates or parameters["allow_duplicates"]
    options = f"{config.min_rating}|{config.k_core}|{merge}"
    return f"dataset-{raw_fingerprint(parameters['raw'])}-{options}-{code_version(DATA_PACKAGES)}"


def _split_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    config: SplitConfig = parameters["config"]
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
    return f"split-{parameters['dataset'].fingerprint}-{digest}-{code_version(DATA_PACKAGES)}"


def _graphs_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    fingerprints = f"{parameters['dataset'].fingerprint}-{parameters['split'].fingerprint}"
    # The Graphs type lives in models/graphs.py: a change there must not return an old pickle.
    return f"graphs-{fingerprints}-{code_version(TRAIN_PACKAGES)}"


def _train_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    config: TrainConfig = parameters["config"]
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
    data = f"{parameters['dataset_fingerprint']}-{parameters['split'].fingerprint}"
    return f"train-{data}-{digest}-{code_version(TRAIN_PACKAGES)}"


def _fingerprint_policy(fn: Any) -> Any:
    return TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=fn)


@task(name="load-data", cache_policy=NO_CACHE)
def load_data(config: DataConfig) -> RawTables:
    """Read the configured source into raw tables."""
    from tasks.ingest import load_raw

    return load_raw(config)


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(
    raw: RawTables, config: DataConfig, allow_duplicates: bool, min_interactions: int
) -> ValidationReport:
    """Check the raw tables against the data contract (Great Expectations)."""
    from tasks.prepare import validate_raw

    return validate_raw(raw, config, allow_duplicates=allow_duplicates, min_interactions=min_interactions)


@task(
    name="build-dataset",
    cache_policy=_fingerprint_policy(_dataset_key),
    cache_expiration=CACHE_EXPIRATION,
)
def build_dataset(raw: RawTables, config: DataConfig, allow_duplicates: bool) -> Dataset:
    """Index the validated tables into a :class:`Dataset` (cached by the raw tables' content)."""
    from tasks.prepare import index_raw

    return index_raw(raw, config, allow_duplicates=allow_duplicates)


@task(name="split-data", cache_policy=_fingerprint_policy(_split_key), cache_expiration=CACHE_EXPIRATION)
def split_data(dataset: Dataset, config: SplitConfig) -> Split:
    """Split the interactions (cached by dataset fingerprint and split settings)."""
    from tasks.split import split_dataset

    return split_dataset(dataset, config)


@task(name="validate-split", cache_policy=NO_CACHE)
def validate_split(split: Split, name: str) -> ValidationReport:
    """Check the split against the contract (parts disjoint, ids in range, train non-empty)."""
    from tasks.prepare import validate_parts

    return validate_parts(split, name=name)


@task(name="build-graphs", cache_policy=_fingerprint_policy(_graphs_key), cache_expiration=CACHE_EXPIRATION)
def build_graphs(dataset: Dataset, split: Split) -> Graphs:
    """Build the training graphs (cached by dataset and split fingerprints)."""
    from tasks.graphs import build_graphs as build

    return build(dataset, split)


@task(name="tune-model", task_run_name="tune-{base_config.model}", cache_policy=NO_CACHE)
def tune_model(
    graphs: Graphs,
    split: Split,
    base_config: TrainConfig,
    *,
    study: str,
    storage: str,
    n_trials: int,
    extra_trials: int,
    timeout_s: float,
    seed: int,
    warm_start: dict[str, Any] | None,
    callbacks: list[Any],
    train_space: dict[str, list[Any]] | None = None,
    source: dict[str, Any] | None = None,
    pruner: str | None = None,
) -> TuneResult:
    """Run the model's Optuna study (it resumes from its storage, so no Prefect cache).

    Every evaluation and every trial logs one line to the flow run's log; a progress artifact
    ``tune-<model>`` follows the trials done; on a terminal a progress bar shows them too. ``source``
    (the data and split settings) is recorded in the study, so ``gnnrec tune-worker`` can join it.
    """
    from tasks.tune import DEFAULT_PRUNER, tune

    get_run_logger().info(
        "%s tunes in Optuna study %s (join with: gnnrec tune-worker --study %s --storage URL)",
        base_config.model,
        study,
        study,
    )
    with _tune_progress(base_config.model) as progress:
        return tune(
            graphs,
            split,
            base_config,
            study=study,
            storage=storage,
            n_trials=n_trials,
            extra_trials=extra_trials,
            timeout_s=timeout_s,
            seed=seed,
            warm_start=warm_start,
            callbacks=callbacks,
            train_space=train_space,
            progress=progress,
            source=source,
            pruner=DEFAULT_PRUNER if pruner is None else pruner,
        )


def _artifact_key(prefix: str, name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) for ``prefix-name``."""
    return "-".join(filter(None, re.split(r"[^a-z0-9]+", f"{prefix}-{name}".lower())))


def _show_bars() -> bool:
    """Progress bars only on a terminal, never under CI."""
    return sys.stderr.isatty() and sys.stdout.isatty() and not os.environ.get("CI")


@contextmanager
def _tune_progress(model: str) -> Iterator[Callable[[TuneProgress], None]]:
    """The ``progress`` callback of a tuning task: a log line per event, a progress artifact, a bar."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger = get_run_logger()
    artifact = cast(
        "UUID",
        create_progress_artifact(
            progress=0.0,
            key=_artifact_key("tune", model),
            description=f"Tuning {model}: trials done / budget",
        ),
    )
    bar = _TerminalBar(model) if _show_bars() else None

    def progress(event: TuneProgress) -> None:
        logger.info(event.line())
        if event.event == "trial" and event.budget:
            update_progress_artifact(artifact, progress=100.0 * event.trials_done / event.budget)
        if bar is not None:
            bar.update(event)

    try:
        yield progress
    finally:
        update_progress_artifact(artifact, progress=100.0)
        if bar is not None:
            bar.close()


class _TerminalBar:
    """One rich bar per model on stderr: trials done / budget, the current epoch, the best value so far."""

    def __init__(self, model: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn(f"[bold]{model}[/bold] trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(model, total=None, status="")
        self._progress.start()

    def update(self, event: TuneProgress) -> None:
        best = "-" if event.best is None else f"{event.best:.4f}"
        status = f"trial {event.trial} epoch {event.epoch or 0}, best {event.metric} {best}"
        self._progress.update(self._task, total=event.budget, completed=event.trials_done, status=status)

    def close(self) -> None:
        self._progress.stop()


@task(
    name="train-model",
    task_run_name="train-{config.model}",
    cache_policy=_fingerprint_policy(_train_key),
    cache_expiration=CACHE_EXPIRATION,
)
def train_model(
    graphs: Graphs,
    split: Split,
    config: TrainConfig,
    dataset_fingerprint: str,
    kept: TrainedModel | None = None,
) -> TrainedModel:
    """Train the final model with the tuned hyperparameters (cached by data, configuration and code).

    ``kept`` is the best trial's own model when it is exactly what this training would give
    (:func:`tasks.tune.reusable_trained`): it is returned instead of training again, and cached under the
    same key (the key ignores ``kept``), so a rerun with nothing changed finds it in the cache. Every
    validation logs one line to the flow run's log.
    """
    from tasks.train import train

    logger = get_run_logger()
    if kept is not None:
        logger.info(
            "%s: the best trial trained this very configuration to its end; its model is kept, not trained "
            "again",
            config.model,
        )
        return kept

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        logger.info(
            "%s final training epoch %d/%d: loss %.4f, %s %.4f",
            config.model,
            epoch,
            config.epochs,
            record.get("loss", float("nan")),
            config.metric,
            record.get(config.metric, float("nan")),
        )

    return train(graphs, split, config, on_epoch=on_epoch)


@task(name="evaluate-model", task_run_name="evaluate-{part}", cache_policy=NO_CACHE)
def evaluate_model(
    trained: TrainedModel, split: Split, part: Literal["valid", "test"], ks: tuple[int, ...]
) -> Metrics:
    """Full-ranking metrics of a trained model on one part of the split."""
    from tasks.evaluate import evaluate

    metrics = evaluate(trained.model, split, part, ks)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.values.items()))
    get_run_logger().info("%s on %s: %s (%.2f s)", trained.config.model, part, shown, metrics.seconds)
    return metrics


@dataclass(frozen=True)
class ModelBranch:
    """What one model's branch produced: its study, final model, test metrics and registered version."""

    tuned: TuneResult
    trained: TrainedModel
    tested: Metrics
    version: RegisteredVersion


@task(name="model-branch", task_run_name="model-{base_config.model}", cache_policy=NO_CACHE)
def model_branch(
    dataset: Dataset,
    split: Split,
    base_config: TrainConfig,
    *,
    settings: MlflowSettings,
    run_id: str,
    lineage: Lineage,
    study: str,
    n_trials: int,
    extra_trials: int,
    timeout_s: float,
    seed: int,
    warm_start: dict[str, Any] | None,
    callbacks: list[Any],
    train_space: dict[str, list[Any]] | None,
    ks: tuple[int, ...],
    metric: str,
    threads: int | None,
    source: dict[str, Any] | None = None,
    pruner: str | None = None,
) -> ModelBranch:
    """One model's whole chain in one worker: tune -> train the best -> test -> register.

    Run on a Dask worker (``parallel``/``dask_address``): the stages are the same tasks as in the flow,
    nested under this one, so each keeps its name, retries, cache and log lines. The graphs are not shipped
    to the worker: :func:`build_graphs` returns the flow's cached result (its key is the data's
    fingerprints), or rebuilds the same graphs when the worker cannot read that cache.
    """
    from tasks.pipeline_config import final_train_config
    from tasks.report import run_facts
    from tasks.train import set_threads
    from tasks.tune import reusable_trained

    used = set_threads(threads)
    get_run_logger().info(
        "%s runs in process %d with %d torch thread(s)", base_config.model, os.getpid(), used
    )
    graphs = build_graphs(dataset, split)
    tuned = tune_model(
        graphs,
        split,
        base_config,
        study=study,
        storage=settings.study_storage,
        n_trials=n_trials,
        extra_trials=extra_trials,
        timeout_s=timeout_s,
        seed=seed,
        warm_start=warm_start,
        callbacks=callbacks,
        train_space=train_space,
        source=source,
        pruner=pruner,
    )
    final_config = final_train_config(base_config, tuned, warm_start)
    trained = train_model(
        graphs, split, final_config, dataset.fingerprint, kept=reusable_trained(tuned, final_config)
    )
    tested = evaluate_model(trained, split, "test", ks)
    version = register_model(
        settings,
        run_id,
        trained,
        tested,
        dataset,
        split,
        lineage,
        run_facts(tuned, trained),
        metric,
        base_config.model,
    )
    return ModelBranch(tuned=tuned, trained=trained, tested=tested, version=version)


@task(name="reconcile-stale-records", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def reconcile_stale(settings: MlflowSettings) -> dict[str, int]:
    """Close the MLflow runs and Optuna trials left RUNNING by a process that is gone (a kill, a crash)."""
    from tasks.reconcile import reconcile_mlflow, reconcile_optuna

    runs = reconcile_mlflow(settings.tracking_uri, settings.experiment_name)
    trials = reconcile_optuna(settings.study_storage)
    if runs or trials:
        get_run_logger().warning(
            "Closed %d MLflow run(s) (KILLED) and %d Optuna trial(s) (FAIL) left RUNNING by a process that "
            "ended without closing them: runs %s; trials %s",
            len(runs),
            len(trials),
            runs,
            trials,
        )
    return {"runs": len(runs), "trials": len(trials)}


@task(name="start-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def start_pipeline_run(
    settings: MlflowSettings,
    run_name: str,
    lineage: Lineage,
    params: dict[str, Any],
    links: dict[str, str] | None = None,
) -> str:
    """Open the pipeline's parent MLflow run, tagged with its owner process and its Prefect flow run."""
    from tasks import register
    from tasks.reconcile import claim_run

    run_id = register.start_pipeline_run(settings, run_name=run_name, lineage=lineage, params=params)
    claim_run(settings.tracking_uri, run_id, extra_tags=links)
    return run_id


@task(
    name="start-model-run",
    task_run_name="start-model-run-{family}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=3,
)
def start_model_run(settings: MlflowSettings, parent_run_id: str, family: str, lineage: Lineage) -> str:
    """Open a model family's child run, tagged with its owner process."""
    from tasks import register
    from tasks.reconcile import claim_run

    run_id = register.start_model_run(settings, parent_run_id=parent_run_id, family=family, lineage=lineage)
    claim_run(settings.tracking_uri, run_id)
    return run_id


@task(
    name="fail-model-run",
    task_run_name="fail-model-run-{family}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=3,
)
def fail_model_run(settings: MlflowSettings, run_id: str, family: str, reason: str) -> None:
    """Close a model's child run FAILED, with the reason as the tag ``gnnrec.failure``."""
    from tasks.reconcile import close_failed_run

    close_failed_run(settings.tracking_uri, run_id, reason)


@task(
    name="warm-start-params",
    task_run_name="warm-start-{family}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=3,
)
def warm_start_params(settings: MlflowSettings, family: str, study: str) -> dict[str, Any] | None:
    """Best known hyperparameters of a family: its study's best trial, else the registry's latest version."""
    from tasks import register
    from tasks.tune import best_known_params, open_study

    known = best_known_params(open_study(study, settings.study_storage, seed=0))
    return known if known is not None else register.champion_hparams(settings, family)


@task(
    name="register-model",
    task_run_name="register-{family}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=3,
)
def register_model(
    settings: MlflowSettings,
    run_id: str,
    trained: TrainedModel,
    test_metrics: Metrics,
    dataset: Dataset,
    split: Split,
    lineage: Lineage,
    extra_metrics: dict[str, float],
    metric: str,
    family: str,
) -> RegisteredVersion:
    """Log the final model, its curves and metrics to its child run, and register a new version."""
    from tasks import register

    return register.log_trained_model(
        settings,
        run_id=run_id,
        trained=trained,
        test_metrics=test_metrics,
        dataset=dataset,
        split=split,
        lineage=lineage,
        extra_metrics=extra_metrics,
        metric=metric,
    )


@task(name="log-leaderboard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def log_leaderboard(
    settings: MlflowSettings, parent_run_id: str, rows: list[dict[str, Any]], metric: str
) -> None:
    """Log the leaderboard table and chart to the parent run."""
    from tasks import register

    register.log_leaderboard(settings, parent_run_id=parent_run_id, rows=rows, metric=metric)


#: Prefect global concurrency limit (one slot) held while a flow run promotes: the manual and the weekly
#: deployment may finish together, and each decision must read the champion the other one left.
PROMOTION_LIMIT = "gnnrec-promotion"


def ensure_promotion_limit() -> None:
    """Create the one-slot :data:`PROMOTION_LIMIT` on the Prefect server when missing (or re-arm it).

    Prefect does not limit anything on a name it does not know, so the limit must exist before the gate
    takes it. Two flows creating it at once are fine: the second gets "already exists".
    """
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(PROMOTION_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=PROMOTION_LIMIT, limit=1, active=True)
                )
            except ObjectAlreadyExists:
                pass
            return
        if limit.limit != 1 or not limit.active:
            client.update_global_concurrency_limit(
                PROMOTION_LIMIT, GlobalConcurrencyLimitUpdate(limit=1, active=True)
            )


@task(name="promote-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def promote(
    settings: MlflowSettings, candidates: list[RegisteredVersion], dataset: Dataset, split: Split
) -> PromotionDecision:
    """Compare the best candidate with the champion on this run's data and move the alias when it wins.

    One flow run at a time (Prefect's :data:`PROMOTION_LIMIT`), so concurrent runs end with one champion
    and decisions that each compared against the champion of the moment.
    """
    from prefect.concurrency.sync import concurrency

    from tasks import register

    ensure_promotion_limit()
    with concurrency(PROMOTION_LIMIT, occupy=1, strict=True):
        return register.promote_if_better(settings, candidates, dataset=dataset, split=split)


@task(name="end-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def end_run(settings: MlflowSettings, run_id: str, status: str) -> None:
    """Close an MLflow run."""
    from tasks import register

    register.end_run(settings, run_id, status)
