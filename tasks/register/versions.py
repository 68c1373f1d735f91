"""Registered versions: log a trained model, register it with its lineage, find versions again."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.register.lineage import TAG_FAMILY, TAG_HPARAMS, Lineage
from tasks.register.plots import training_curve_png
from tasks.register.settings import MlflowSettings, configure_mlflow, mlflow_client
from tasks.register.tracking import log_history, log_metrics, log_params, metric_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tasks.evaluate import Metrics
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split
    from tasks.train import TrainedModel


@dataclass(frozen=True)
class RegisteredVersion:
    """One model family's final model, logged and registered.

    Attributes:
        name: Registered model name.
        version: Registry version (a string, as MLflow returns it).
        run_id: The family's child run.
        family: Model family (``lightgcn``...).
        metric: The selection metric (``ndcg@20``).
        valid_value: The selection metric on the validation part.
        test_value: The same metric on the test part (reported, never used to select).
        fingerprint: Dataset fingerprint.
        split: Split key.
        hparams: The hyperparameters it was trained with.
        metrics: Every logged final metric (``valid_ndcg_at_20``, ``test_recall_at_10``, ...).
    """

    name: str
    version: str
    run_id: str
    family: str
    metric: str
    valid_value: float
    test_value: float
    fingerprint: str
    split: str
    hparams: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        """``models:/NAME/VERSION``."""
        return f"models:/{self.name}/{self.version}"


def log_trained_model(
    settings: MlflowSettings,
    *,
    run_id: str,
    trained: TrainedModel,
    test_metrics: Metrics,
    dataset: Dataset,
    split: Split,
    lineage: Lineage,
    extra_metrics: Mapping[str, float] | None = None,
    metric: str | None = None,
) -> RegisteredVersion:
    """Log a model family's final model into its child run, register it, and close the run.

    Logs the hyperparameters and training settings as params, the per-epoch history as step metrics, the
    best validation metrics (``valid_*``) and the test metrics (``test_*``), a training-curve PNG, and the
    model as an MLflow pyfunc recommender (:class:`tasks.recommend.EmbeddingRecommender`) registered as a
    new version of ``settings.registered_model_name``, tagged with its metrics and lineage.

    Safe to retry: for a run whose model is already registered (a late failure, then Prefect's retry), it
    logs nothing again, re-applies the version's tags and description, and returns that same version.

    Args:
        settings: Tracking settings.
        run_id: The family's child run (from :func:`start_model_run`).
        trained: The final trained model.
        test_metrics: Its metrics on the test part.
        dataset: The dataset (raw ids, seen items for the recommender).
        split: The split it was trained on.
        lineage: Lineage tags.
        extra_metrics: More final metrics for the run (tuning time, trial count, ...).
        metric: Selection metric; default ``settings.selection_metric``.

    Returns:
        The registered version.
    """
    import mlflow

    from tasks.recommend import log_recommender

    metric = metric or settings.selection_metric
    family = trained.model.name
    if trained.best_valid is None:
        raise ValueError(
            f"{family} was trained without a validation part; it cannot be selected or promoted."
        )
    configure_mlflow(settings)
    client = mlflow_client(settings)
    hparams = dict(trained.model.hparams)
    final = {metric_key(k, "valid"): v for k, v in trained.best_valid.values.items()}
    final.update({metric_key(k, "test"): v for k, v in test_metrics.values.items()})
    final["best_epoch"] = float(trained.best_epoch)
    final["epochs_run"] = float(trained.epochs_run)
    final["seconds_per_epoch"] = float(trained.seconds_per_epoch)
    final.update(dict(extra_metrics or {}))
    valid_value = float(trained.best_valid.values[metric])
    test_value = float(test_metrics.values.get(metric, math.nan))
    tags = {
        **lineage.tags(),
        TAG_FAMILY: family,
        TAG_HPARAMS: json.dumps(hparams, sort_keys=True, default=str),
        "selection_metric": metric,
        **{k: repr(float(v)) for k, v in final.items()},
    }
    # A retry after a late failure (a tag, the description) must not register the run's model twice:
    # registration is the last logging step, so a version of this run means everything above is logged.
    version = registered_version_of_run(client, settings.registered_model_name, run_id)
    if version is None:
        config = trained.config.model_dump(mode="json")
        log_params(
            client,
            run_id,
            {"hparams": hparams, "train": {k: v for k, v in config.items() if k != "hparams"}},
        )
        log_history(client, run_id, trained.history)
        log_metrics(client, run_id, final)
        with tempfile.TemporaryDirectory() as tmp:
            curve = Path(tmp) / f"training_curve_{family}.png"
            training_curve_png(trained.history, family, curve)
            client.log_artifact(run_id, str(curve), artifact_path="plots")
            with mlflow.start_run(run_id=run_id):
                info = log_recommender(
                    trained.model,
                    dataset,
                    split,
                    registered_model_name=settings.registered_model_name,
                    workdir=Path(tmp),
                    tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
                )
        version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model_name, version, key, value)
    client.update_model_version(
        settings.registered_model_name,
        version,
        description=(
            f"{family} on {lineage.dataset} ({lineage.fingerprint}); valid {metric} = {valid_value:.4f}"
        ),
    )
    return RegisteredVersion(
        name=settings.registered_model_name,
        version=version,
        run_id=run_id,
        family=family,
        metric=metric,
        valid_value=valid_value,
        test_value=test_value,
        fingerprint=lineage.fingerprint,
        split=lineage.split,
        hparams=hparams,
        metrics={k: float(v) for k, v in final.items()},
    )


def registered_version_of_run(client: Any, name: str, run_id: str) -> str | None:
    """The version of registered model ``name`` logged from run ``run_id``, if any (the newest)."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in found)) if found else None


def current_champion(settings: MlflowSettings) -> Any | None:
    """The ``ModelVersion`` holding the promotion alias, or ``None`` when there is none yet."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return client.get_model_version_by_alias(settings.registered_model_name, settings.promotion_alias)
    except MlflowException:
        return None


def champion_hparams(settings: MlflowSettings, family: str) -> dict[str, Any] | None:
    """The hyperparameters of the newest registered version of ``family`` (the champion's first).

    Used to warm-start a retrain: the champion when it is of this family, else the family's latest version.
    """
    from mlflow.exceptions import MlflowException

    configure_mlflow(settings)
    client = mlflow_client(settings)
    champion = current_champion(settings)
    if champion is not None and champion.tags.get(TAG_FAMILY) == family:
        return dict(json.loads(champion.tags.get(TAG_HPARAMS, "{}")))
    try:
        versions = client.search_model_versions(
            f"name = '{settings.registered_model_name}' and tag.`{TAG_FAMILY}` = '{family}'",
            order_by=["version_number DESC"],
            max_results=1,
        )
    except MlflowException:
        return None
    if not versions:
        return None
    return dict(json.loads(versions[0].tags.get(TAG_HPARAMS, "{}")))
