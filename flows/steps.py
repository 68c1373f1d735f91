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
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from tasks.code_version import code_version
from tasks.config import DataConfig, SplitConfig
from tasks.prepare import DataContractError

__all__ = ["DataContractError"]  # re-exported: the flows raise the one error every command understands

if TYPE_CHECKING:
    from prefect.context import TaskRunContext

    from data_checks import ValidationReport
    from tasks.evaluate import Metrics
    from tasks.graphs import Graphs
    from tasks.ingest.dataset import Dataset
    from tasks.ingest.tables import RawTables
    from tasks.register import Lineage, MlflowSettings, PromotionDecision, RegisteredVersion
    from tasks.split import Split
    from tasks.train import TrainConfig, TrainedModel
    from tasks.tune import TuneResult


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
    return f"graphs-{fingerprints}-{code_version(DATA_PACKAGES)}"


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
) -> TuneResult:
    """Run the model's Optuna study (it resumes from its storage, so no Prefect cache)."""
    from tasks.tune import tune

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
    )


@task(
    name="train-model",
    task_run_name="train-{config.model}",
    cache_policy=_fingerprint_policy(_train_key),
    cache_expiration=CACHE_EXPIRATION,
)
def train_model(graphs: Graphs, split: Split, config: TrainConfig, dataset_fingerprint: str) -> TrainedModel:
    """Train the final model with the tuned hyperparameters (cached by data and configuration)."""
    from tasks.train import train

    return train(graphs, split, config)


@task(name="evaluate-model", task_run_name="evaluate-{part}", cache_policy=NO_CACHE)
def evaluate_model(
    trained: TrainedModel, split: Split, part: Literal["valid", "test"], ks: tuple[int, ...]
) -> Metrics:
    """Full-ranking metrics of a trained model on one part of the split."""
    from tasks.evaluate import evaluate

    return evaluate(trained.model, split, part, ks)


@task(name="start-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def start_pipeline_run(
    settings: MlflowSettings, run_name: str, lineage: Lineage, params: dict[str, Any]
) -> str:
    """Open the pipeline's parent MLflow run."""
    from tasks import register

    return register.start_pipeline_run(settings, run_name=run_name, lineage=lineage, params=params)


@task(
    name="start-model-run",
    task_run_name="start-model-run-{family}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=3,
)
def start_model_run(settings: MlflowSettings, parent_run_id: str, family: str, lineage: Lineage) -> str:
    """Open a model family's child run."""
    from tasks import register

    return register.start_model_run(settings, parent_run_id=parent_run_id, family=family, lineage=lineage)


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


@task(name="promote-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def promote(settings: MlflowSettings, candidates: list[RegisteredVersion]) -> PromotionDecision:
    """Compare the best candidate with the champion and move the alias when it wins."""
    from tasks import register

    return register.promote_if_better(settings, candidates)


@task(name="end-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3)
def end_run(settings: MlflowSettings, run_id: str, status: str) -> None:
    """Close an MLflow run."""
    from tasks import register

    register.end_run(settings, run_id, status)
