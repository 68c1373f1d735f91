"""Registered versions: log a trained model, register it with its lineage, find versions again."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.register.lineage import TAG_CODE, TAG_FAMILY, TAG_HPARAMS, TAG_PREFIX, Lineage, code_version
from tasks.register.plots import training_curve_png
from tasks.register.settings import MlflowSettings, configure_mlflow, mlflow_client
from tasks.register.tracking import log_history, log_metrics, log_params, metric_key

if TYPE_CHECKING:
    from tasks.evaluate import Metrics
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split
    from tasks.train import TrainedModel

#: Version tag: the identity of the trained model (see :func:`model_identity`); registration searches it.
TAG_IDENTITY = TAG_PREFIX + "identity"
#: Version tag: the last run that found this version identical to its model and reused it.
TAG_REUSED_BY = TAG_PREFIX + "reused_by_run"
#: Run tags: the version the run's model is registered as, whether that version was reused, and that the
#: run's own logging (params, curves, metrics) finished, so a retry does not log it twice.
TAG_VERSION = TAG_PREFIX + "registered_version"
TAG_REUSED = TAG_PREFIX + "reused_version"
TAG_LOGGED = TAG_PREFIX + "logged"
#: Run tag: the version this run registered and then deleted, because an identical one was registered first.
TAG_DISCARDED = TAG_PREFIX + "discarded_duplicate_version"


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
        reused: Whether an identical model (same code version, data, split, hyperparameters and training
            settings, see :func:`model_identity`) was already registered and this is that version.
        identity: The model's identity hash (tag ``gnnrec.identity``).
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
    reused: bool = False
    identity: str = ""

    @property
    def model_uri(self) -> str:
        """``models:/NAME/VERSION``."""
        return f"models:/{self.name}/{self.version}"


def model_identity(code: str, lineage: Lineage, family: str, config: Mapping[str, Any]) -> str:
    """What makes two trained models the same: code version, data, split, family, hparams and settings.

    Args:
        code: :func:`~tasks.register.lineage.code_version` of the code that trained it.
        lineage: Dataset fingerprint and split key.
        family: Model family.
        config: The training configuration (``TrainConfig.model_dump(mode="json")``, hyperparameters
            included); ``progress`` only changes what is printed, so it is left out.

    Returns:
        sha256 (first 16 hex chars) of all of it, the ``gnnrec.identity`` tag of the registered version.
    """
    settings = {k: v for k, v in config.items() if k != "progress"}
    payload = {
        "code": code,
        "fingerprint": lineage.fingerprint,
        "split": lineage.split,
        "family": family,
        "config": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_identical_version(settings: MlflowSettings, identity: str) -> Any | None:
    """The newest registered version with tag ``gnnrec.identity = identity`` that still loads, if any.

    A version whose artifacts are gone is not reused: registering the model again is the repair.
    """
    client = mlflow_client(settings)
    found = client.search_model_versions(
        f"name = '{settings.registered_model_name}' and tag.`{TAG_IDENTITY}` = '{identity}'",
        order_by=["version_number DESC"],
    )
    for version in sorted(found, key=lambda v: -int(v.version)):
        model, _problem = load_version(settings, str(version.version))
        if model is not None:
            return version
    return None


def first_identical_version(settings: MlflowSettings, identity: str, *, below: int) -> Any | None:
    """The oldest version numbered below ``below`` with tag ``gnnrec.identity = identity`` that loads, if any.

    The check after a registration: two flows that register the same model at the same moment both find no
    identical version, and both register. Version numbers follow creation order and a version is created
    with its tags (one transaction in MLflow's registry), so each of them then sees every identical version
    created before its own: the one that finds an older one deletes its own and reuses the older, and
    the oldest, which finds none, is kept. One version is left, and every flow names it.
    """
    client = mlflow_client(settings)
    found = client.search_model_versions(
        f"name = '{settings.registered_model_name}' and tag.`{TAG_IDENTITY}` = '{identity}'"
    )
    for version in sorted(found, key=lambda v: int(v.version)):
        if int(version.version) >= below:
            return None
        model, _problem = load_version(settings, str(version.version))
        if model is not None:
            return version
    return None


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
    """Log a model family's final model into its child run and register it, unless it is registered already.

    Logs the hyperparameters and training settings as params, the per-epoch history as step metrics, the
    best validation metrics (``valid_*``) and the test metrics (``test_*``) and a training-curve PNG to the
    run. Then, when a version with the same :func:`model_identity` (code version, dataset fingerprint, split,
    family, hyperparameters and training settings) is registered and loads, that version is **reused**: it
    is tagged ``gnnrec.reused_by_run`` and returned with ``reused=True`` and its own recorded numbers, and
    the registry does not grow. Otherwise the model is logged as an MLflow pyfunc recommender
    (:class:`tasks.recommend.EmbeddingRecommender`) and registered as a new version of
    ``settings.registered_model_name``, tagged with its metrics, lineage, code version and identity. A flow
    that registered the same model at the same moment is caught after the registration
    (:func:`first_identical_version`): the later version is deleted (its run tagged
    ``gnnrec.discarded_duplicate_version``) and the earlier one reused.

    Safe to retry: a run whose logging finished (tag ``gnnrec.logged``) logs nothing again, and a run whose
    model is already registered (a late failure, then Prefect's retry) gets that version back, its tags and
    description re-applied.

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
        The registered (or reused) version.
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
    name = settings.registered_model_name
    hparams = dict(trained.model.hparams)
    config = trained.config.model_dump(mode="json")
    code = code_version()
    identity = model_identity(code, lineage, family, {**config, "hparams": hparams})
    final = {metric_key(k, "valid"): v for k, v in trained.best_valid.values.items()}
    final.update({metric_key(k, "test"): v for k, v in test_metrics.values.items()})
    final["best_epoch"] = float(trained.best_epoch)
    final["epochs_run"] = float(trained.epochs_run)
    final["seconds_per_epoch"] = float(trained.seconds_per_epoch)
    final.update(dict(extra_metrics or {}))
    tags = {
        **lineage.tags(),
        TAG_FAMILY: family,
        TAG_HPARAMS: json.dumps(hparams, sort_keys=True, default=str),
        TAG_CODE: code,
        TAG_IDENTITY: identity,
        "selection_metric": metric,
        **{k: repr(float(v)) for k, v in final.items()},
    }
    if client.get_run(run_id).data.tags.get(TAG_LOGGED) != "true":
        log_params(
            client,
            run_id,
            {"hparams": hparams, "train": {k: v for k, v in config.items() if k != "hparams"}},
        )
        log_history(client, run_id, trained.history)
        log_metrics(client, run_id, final)
        with tempfile.TemporaryDirectory() as tmp:
            curve = Path(tmp) / "training_curve.png"  # one name in every run: Compare shows them side by side
            training_curve_png(trained.history, family, curve)
            client.log_artifact(run_id, str(curve), artifact_path="plots")
        client.set_tag(run_id, TAG_IDENTITY, identity)
        client.set_tag(run_id, TAG_LOGGED, "true")

    # A retry after a late failure (a tag, the description) must not register the run's model twice.
    version = registered_version_of_run(client, name, run_id)
    if version is None:
        existing = find_identical_version(settings, identity)
        if existing is not None:
            return _reuse(settings, existing, run_id=run_id, family=family, metric=metric, lineage=lineage)
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
            info = log_recommender(
                trained.model,
                dataset,
                split,
                registered_model_name=name,
                workdir=Path(tmp),
                tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
            )
        version = str(info.registered_model_version)
    # Another flow may have registered the same model between the search and the registration (checked on a
    # retry too: the first attempt may have stopped before this point).
    earlier = first_identical_version(settings, identity, below=int(version))
    if earlier is not None:
        client.delete_model_version(name, version)
        client.set_tag(run_id, TAG_DISCARDED, version)
        return _reuse(settings, earlier, run_id=run_id, family=family, metric=metric, lineage=lineage)
    valid_value = float(trained.best_valid.values[metric])
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(
        name,
        version,
        description=(
            f"{family} on {lineage.dataset} ({lineage.fingerprint}); valid {metric} = {valid_value:.4f}"
        ),
    )
    client.set_tag(run_id, TAG_VERSION, version)
    return RegisteredVersion(
        name=name,
        version=version,
        run_id=run_id,
        family=family,
        metric=metric,
        valid_value=valid_value,
        test_value=float(test_metrics.values.get(metric, math.nan)),
        fingerprint=lineage.fingerprint,
        split=lineage.split,
        hparams=hparams,
        metrics={k: float(v) for k, v in final.items()},
        identity=identity,
    )


def _reuse(
    settings: MlflowSettings, existing: Any, *, run_id: str, family: str, metric: str, lineage: Lineage
) -> RegisteredVersion:
    """Return an identical registered version instead of registering again; tag it and this run."""
    client = mlflow_client(settings)
    version = str(existing.version)
    client.set_model_version_tag(settings.registered_model_name, version, TAG_REUSED_BY, run_id)
    client.set_tag(run_id, TAG_VERSION, version)
    client.set_tag(run_id, TAG_REUSED, "true")
    recorded = {k: float(v) for k, v in existing.tags.items() if _is_metric_tag(k, v)}
    return RegisteredVersion(
        name=settings.registered_model_name,
        version=version,
        run_id=run_id,
        family=family,
        metric=metric,
        valid_value=recorded.get(metric_key(metric, "valid"), math.nan),
        test_value=recorded.get(metric_key(metric, "test"), math.nan),
        fingerprint=lineage.fingerprint,
        split=lineage.split,
        hparams=dict(json.loads(existing.tags.get(TAG_HPARAMS, "{}"))),
        metrics=recorded,
        reused=True,
        identity=str(existing.tags.get(TAG_IDENTITY, "")),
    )


def _is_metric_tag(key: str, value: str) -> bool:
    """Whether a version tag holds a final metric (``valid_*``, ``test_*``, run facts) as a float."""
    if key.startswith(("mlflow.", TAG_PREFIX)) or key == "selection_metric":
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def registered_version_of_run(client: Any, name: str, run_id: str) -> str | None:
    """The version of registered model ``name`` logged from run ``run_id``, if any (the newest)."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return str(max(int(v.version) for v in found)) if found else None


def current_champion(settings: MlflowSettings) -> Any | None:
    """The ``ModelVersion`` holding the promotion alias, or ``None`` when there is none yet.

    Raises:
        MlflowException: For any other failure than a missing registered model or alias (an unreachable
            store must not read as "no champion", which the gate would answer by promoting).
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return client.get_model_version_by_alias(settings.registered_model_name, settings.promotion_alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_version(settings: MlflowSettings, version: str) -> tuple[Any | None, str | None]:
    """Load registered version ``version`` as an MLflow pyfunc model.

    Args:
        settings: Registry settings.
        version: The version number.

    Returns:
        ``(model, None)`` when it loads, else ``(None, problem)`` with the error in one line.
    """
    import logging

    import mlflow

    uri = f"models:/{settings.registered_model_name}/{version}"
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its warnings about the failure would repeat the problem we report
    try:
        configure_mlflow(settings)
        return mlflow.pyfunc.load_model(uri), None
    # Anything that stops a registered model from loading (missing files, unreadable pickles, a model
    # class that no longer imports) makes it unusable, whatever the exception type.
    except Exception as err:  # noqa: BLE001
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        return None, f"{uri} does not load ({type(err).__name__}: {detail})"
    finally:
        quiet.setLevel(level)


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
