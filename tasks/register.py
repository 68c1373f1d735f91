"""MLflow tracking, registration and champion promotion, configured by ``mlflow.yml``.

Layout of what a pipeline run leaves in MLflow:

* one **parent run** per flow run (``start_pipeline_run``), holding the leaderboard table and chart;
* one **child run** per model family (``start_model_run``), holding the final model's hyperparameters,
  per-epoch curves (step metrics), validation and test metrics, a training-curve plot, and the model itself
  as an MLflow pyfunc recommender (:mod:`tasks.recommend`) registered as a new version of one registered
  model;
* one **nested run** per Optuna trial under its model's child run (``trial_logger``).

Every run and every registered version carries the lineage as tags: dataset name and fingerprint, split key
(method, seed and content hash), model family and git commit. Promotion (:func:`promote_if_better`) moves the
alias (``champion``) and, when configured, the registry stage; consumers load ``models:/NAME@champion``.

Metric names: MLflow does not allow ``@`` in names, so ``ndcg@20`` on the validation part is logged as
``valid_ndcg_at_20`` (see :func:`metric_key`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

    from tasks.evaluate import Metrics
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split
    from tasks.train import TrainedModel

#: Environment variable naming the ``mlflow.yml`` to use when none is passed.
CONFIG_ENV = "GNNREC_MLFLOW_CONFIG"

TAG_PREFIX = "gnnrec."
TAG_DATASET = TAG_PREFIX + "dataset"
TAG_FINGERPRINT = TAG_PREFIX + "dataset_fingerprint"
TAG_SPLIT = TAG_PREFIX + "split"
TAG_FAMILY = TAG_PREFIX + "model_family"
TAG_HPARAMS = TAG_PREFIX + "hparams"
TAG_ROLE = TAG_PREFIX + "role"
TAG_GIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"


class MlflowSettings(BaseModel):
    """Where and how runs are tracked and models registered and promoted (the contents of ``mlflow.yml``).

    Paths in the file are resolved against the file's folder by :func:`load_mlflow_settings`, so the values
    held here are absolute (``sqlite:////abs/path/mlflow.db``, ``file:///abs/path/artifacts``).

    Attributes:
        tracking_uri: MLflow tracking (and registry) URI.
        artifact_location: Artifact root of the experiment, as a URI.
        experiment_name: The experiment every pipeline run logs to.
        registered_model_name: The registered model every family registers versions of.
        selection_metric: Validation metric (``ndcg@20``) that tunes, selects and promotes.
        promotion_alias: Alias moved to the promoted version.
        registry_stage: Stage set as well on promotion (previous holders archived); ``None`` skips it.
        min_margin: How much (absolute) the challenger must beat the champion by.
        study_storage: SQLAlchemy URL of the Optuna study storage.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tracking_uri: str = "sqlite:///data/mlflow/mlflow.db"
    artifact_location: str = "data/mlflow/artifacts"
    experiment_name: str = "gnnrec"
    registered_model_name: str = "gnnrec-recommender"
    selection_metric: str = "ndcg@20"
    promotion_alias: str = Field(default="champion", pattern=r"^[\w\-]+$")
    registry_stage: str | None = "Production"
    min_margin: float = Field(default=0.001, ge=0.0)
    study_storage: str = "sqlite:///data/optuna/studies.db"

    def resolved(self, base: Path) -> MlflowSettings:
        """A copy with relative paths in URIs made absolute against ``base``."""
        return self.model_copy(
            update={
                "tracking_uri": _resolve_db_uri(self.tracking_uri, base),
                "artifact_location": _resolve_location(self.artifact_location, base),
                "study_storage": _resolve_db_uri(self.study_storage, base),
            }
        )


def _resolve_db_uri(uri: str, base: Path) -> str:
    """``sqlite:///rel/x.db`` -> ``sqlite:////base/rel/x.db``; a bare path -> ``sqlite:///`` of it."""
    if "://" not in uri:
        return "sqlite:///" + str((base / uri).resolve())
    scheme, _, rest = uri.partition(":///")
    if scheme.startswith("sqlite") and rest and not rest.startswith("/") and rest != ":memory:":
        return f"{scheme}:///{(base / rest).resolve()}"
    return uri


def _resolve_location(location: str, base: Path) -> str:
    """A folder (relative to ``base`` or absolute) becomes a ``file://`` URI; other URIs pass through."""
    if "://" in location:
        return location
    return (base / location).resolve().as_uri()


def load_mlflow_settings(path: str | Path | None = None) -> MlflowSettings:
    """Read ``mlflow.yml``, resolving relative paths against its folder.

    Args:
        path: The file; ``None`` uses ``$GNNREC_MLFLOW_CONFIG`` or else ``./mlflow.yml``. When the default
            file does not exist the built-in defaults apply, resolved against the current folder.

    Returns:
        The settings, with absolute URIs.

    Raises:
        FileNotFoundError: When an explicitly named file does not exist.
        ValueError: When the file is not a mapping or has unknown keys.
    """
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    file = Path(path if path is not None else os.environ.get(CONFIG_ENV) or "mlflow.yml").expanduser()
    if not file.exists():
        if explicit:
            raise FileNotFoundError(f"MLflow settings file {file} does not exist.")
        return MlflowSettings().resolved(Path.cwd())
    content = yaml.safe_load(file.read_text()) or {}
    if not isinstance(content, dict):
        raise ValueError(f"{file} must hold a mapping of settings, found {type(content).__name__}.")
    return MlflowSettings(**content).resolved(file.resolve().parent)


def metric_key(name: str, part: str | None = None) -> str:
    """The MLflow name of a metric: ``metric_key("ndcg@20", "valid") == "valid_ndcg_at_20"``."""
    clean = name.replace("@", "_at_")
    return f"{part}_{clean}" if part else clean


def _sqlite_parent_dirs(uri: str) -> None:
    """Create the folder of a ``sqlite:////abs/file.db`` URI (nothing for other URIs)."""
    if uri.startswith("sqlite") and ":///" in uri:
        rest = uri.partition(":///")[2]
        if rest and rest != ":memory:":
            Path(rest).parent.mkdir(parents=True, exist_ok=True)


def configure_mlflow(settings: MlflowSettings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists with its artifact root.

    Both the tracking URI and the experiment's artifact location are always set, so MLflow never falls
    back to writing ``./mlruns``.

    Returns:
        The experiment id.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _sqlite_parent_dirs(settings.tracking_uri)
    if settings.artifact_location.startswith("file://"):
        Path(settings.artifact_location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = _client(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return client.create_experiment(
            settings.experiment_name, artifact_location=settings.artifact_location
        )
    return str(experiment.experiment_id)


def _client(settings: MlflowSettings) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (default: the current folder), or ``None`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def split_key(split: Split) -> str:
    """A short, stable identity of a split: ``random-seed2020-<content hash>``.

    Uses ``split.fingerprint`` when the split provides one; otherwise hashes the three parts.
    """
    fp = getattr(split, "fingerprint", None)
    if not isinstance(fp, str) or not fp:
        h = hashlib.sha256()
        for part in (split.train, split.valid, split.test):
            h.update(b"|")
            h.update(part.tobytes())
        fp = h.hexdigest()[:16]
    return f"{split.method}-seed{split.seed}-{fp}"


@dataclass(frozen=True)
class Lineage:
    """What a run was trained on, written as tags on every run and registered version.

    Attributes:
        dataset: Dataset name.
        fingerprint: Dataset content fingerprint.
        split: Split key (method, seed, content hash), see :func:`split_key`.
        git_commit: Commit of the code, when known.
    """

    dataset: str
    fingerprint: str
    split: str
    git_commit: str | None = None

    @classmethod
    def of(cls, dataset: Dataset, split: Split) -> Lineage:
        """The lineage of a dataset and split, with the current git commit."""
        return cls(dataset.name, dataset.fingerprint, split_key(split), git_commit())

    def tags(self) -> dict[str, str]:
        """As MLflow tags."""
        tags = {TAG_DATASET: self.dataset, TAG_FINGERPRINT: self.fingerprint, TAG_SPLIT: self.split}
        if self.git_commit:
            tags[TAG_GIT] = self.git_commit
        return tags


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
    client = _client(settings)
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={**lineage.tags(), TAG_ROLE: "pipeline", TAG_RUN_NAME: run_name},
    )
    _log_params(client, run.info.run_id, params)
    return str(run.info.run_id)


def start_model_run(settings: MlflowSettings, *, parent_run_id: str, family: str, lineage: Lineage) -> str:
    """Open the child run of one model family under the pipeline's parent run; returns its id."""
    experiment_id = configure_mlflow(settings)
    run = _client(settings).create_run(
        experiment_id,
        run_name=family,
        tags={**lineage.tags(), TAG_PARENT: parent_run_id, TAG_FAMILY: family, TAG_ROLE: "model"},
    )
    return str(run.info.run_id)


def end_run(settings: MlflowSettings, run_id: str, status: str = "FINISHED") -> None:
    """Close a run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    _client(settings).set_terminated(run_id, status=status)


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


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = _flatten(params)
    items = [Param(k.replace("@", "_at_"), v) for k, v in flat.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def _log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
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


def _log_history(client: MlflowClient, run_id: str, history: Sequence[Mapping[str, Any]]) -> None:
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
    attribute, see :func:`tasks.tune.tune`), its final value and its state (complete, pruned, failed).
    """

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        client = _client(settings)
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
        _log_params(client, run_id, trial.params)
        _log_history(client, run_id, trial.user_attrs.get("history", []))
        final: dict[str, float] = {}
        if trial.value is not None:
            final["objective"] = float(trial.value)
        elif trial.intermediate_values:
            final["objective"] = float(trial.intermediate_values[max(trial.intermediate_values)])
        final["epochs_run"] = float(len(trial.user_attrs.get("history", [])))
        if trial.duration is not None:
            final["trial_seconds"] = trial.duration.total_seconds()
        _log_metrics(client, run_id, final)
        status = "FINISHED" if trial.state.name in ("COMPLETE", "PRUNED") else "FAILED"
        client.set_terminated(run_id, status=status, end_time=_millis(trial.datetime_complete))

    return log_trial


def _millis(moment: Any) -> int | None:
    """A datetime as MLflow's milliseconds since the epoch (``None`` stays ``None``: MLflow uses now)."""
    return None if moment is None else int(moment.timestamp() * 1000)


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


def _training_curve_png(history: Sequence[Mapping[str, Any]], family: str, path: Path) -> None:
    """Loss and validation metrics per epoch, two panels, written to ``path``."""
    from matplotlib.figure import Figure

    epochs = [int(row.get("epoch", i)) for i, row in enumerate(history)]
    keys = sorted(
        {k for row in history for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
    )
    loss_keys = [k for k in keys if "loss" in k]
    metric_keys = [k for k in keys if k not in loss_keys and "second" not in k and "time" not in k]
    fig = Figure(figsize=(9, 3.6))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for key in loss_keys:
        ax_loss.plot(epochs, [row.get(key, math.nan) for row in history], label=key)
    for key in metric_keys:
        ax_metric.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=key)
    ax_loss.set(title=f"{family}: training loss", xlabel="epoch")
    ax_metric.set(title=f"{family}: validation", xlabel="epoch")
    for ax in (ax_loss, ax_metric):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
    client = _client(settings)
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
        _log_params(
            client,
            run_id,
            {"hparams": hparams, "train": {k: v for k, v in config.items() if k != "hparams"}},
        )
        _log_history(client, run_id, trained.history)
        _log_metrics(client, run_id, final)
        with tempfile.TemporaryDirectory() as tmp:
            curve = Path(tmp) / "training_curve.png"  # one name in every run: Compare shows them side by side
            _training_curve_png(trained.history, family, curve)
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


def log_leaderboard(
    settings: MlflowSettings, *, parent_run_id: str, rows: Sequence[Mapping[str, Any]], metric: str
) -> None:
    """Log the leaderboard to the parent run as a JSON table and a bar chart of the selection metric.

    Args:
        settings: Tracking settings.
        parent_run_id: The pipeline's parent run.
        rows: One mapping per model with at least ``model``, ``valid <metric>`` and ``test <metric>``.
        metric: The selection metric.
    """
    from matplotlib.figure import Figure

    client = _client(settings)
    names = [str(r["model"]) for r in rows]
    valid = [float(r[f"valid {metric}"]) for r in rows]
    test = [float(r[f"test {metric}"]) for r in rows]
    fig = Figure(figsize=(max(4.0, 1.4 * len(rows) + 2), 3.6))
    ax = fig.subplots()
    xs = range(len(rows))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], valid, width, label=f"valid {metric}")
    ax.bar([x + width / 2 for x in xs], test, width, label=f"test {metric}")
    ax.set_xticks(list(xs), names)
    ax.set(title=f"Leaderboard: {metric}", ylabel=metric)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "leaderboard.png"
        fig.savefig(png, dpi=110)
        table = Path(tmp) / "leaderboard.json"
        table.write_text(json.dumps(list(map(dict, rows)), indent=2, default=str))
        client.log_artifact(parent_run_id, str(png), artifact_path="plots")
        client.log_artifact(parent_run_id, str(table))
    for row, value in zip(names, valid, strict=True):
        _log_metrics(client, parent_run_id, {metric_key(metric, f"valid_{row}"): value})


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of comparing the best challenger with the current champion.

    Attributes:
        registered_model: Registered model name.
        alias: The champion alias.
        metric: Selection metric (validation part).
        margin: Required absolute improvement.
        challenger_version: The challenger's version.
        challenger_family: The challenger's model family.
        challenger_value: Its selection metric.
        champion_version: The champion before the decision (``None`` when there was none).
        champion_family: Its family.
        champion_value: Its selection metric.
        promoted: Whether the challenger became champion.
        reason: Why, in one sentence for a person.
    """

    registered_model: str
    alias: str
    metric: str
    margin: float
    challenger_version: str
    challenger_family: str
    challenger_value: float
    champion_version: str | None
    champion_family: str | None
    champion_value: float | None
    promoted: bool
    reason: str

    @property
    def champion_after(self) -> str:
        """The version that holds the alias after the decision."""
        return self.challenger_version if self.promoted else str(self.champion_version)

    def to_markdown(self) -> str:
        """A short report for the Prefect artifact ``promotion-decision``."""

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        before = (
            f"v{self.champion_version} ({self.champion_family}), {self.metric} = {fmt(self.champion_value)}"
            if self.champion_version
            else "none"
        )
        verdict = "**promoted**" if self.promoted else "**kept the champion**"
        return "\n".join(
            [
                f"# Promotion decision: {verdict}",
                "",
                "| | |",
                "|---|---|",
                f"| registered model | `{self.registered_model}` |",
                f"| champion before | {before} |",
                f"| challenger | v{self.challenger_version} ({self.challenger_family}), "
                f"{self.metric} = {fmt(self.challenger_value)} |",
                f"| metric | validation {self.metric} |",
                f"| required margin | {self.margin:g} |",
                f"| champion after | v{self.champion_after} "
                f"(`models:/{self.registered_model}@{self.alias}`) |",
                "",
                f"**Why:** {self.reason}",
            ]
        )


def current_champion(settings: MlflowSettings) -> Any | None:
    """The ``ModelVersion`` holding the promotion alias, or ``None`` when there is none yet."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
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
    client = _client(settings)
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


def select_challenger(candidates: Sequence[RegisteredVersion]) -> RegisteredVersion:
    """The candidate with the best validation selection metric (ties: the first listed)."""
    if not candidates:
        raise ValueError("no candidate versions to choose a challenger from")
    return max(candidates, key=lambda c: (c.valid_value, -candidates.index(c)))


def promote_if_better(settings: MlflowSettings, candidates: Sequence[RegisteredVersion]) -> PromotionDecision:
    """Promote the best candidate when it beats the current champion; otherwise keep the champion.

    The rule:

    * no champion yet: the challenger is promoted;
    * the champion was trained on another dataset fingerprint or split: its validation metric was measured
      on other data and cannot be compared, and it cannot be re-scored on the new data (its embeddings
      belong to the old id space), so the challenger, trained on the current data, is promoted and the
      reason says so;
    * otherwise the challenger is promoted only if ``challenger > champion`` and
      ``challenger - champion >= min_margin`` on the validation selection metric.

    Promotion moves the alias and, when ``registry_stage`` is set, transitions the version to that stage
    and archives the previous holders.

    Args:
        settings: Tracking and promotion settings.
        candidates: This run's registered versions; the best by the selection metric is the challenger.

    Returns:
        The decision, with the reason.
    """
    challenger = select_challenger(candidates)
    metric = challenger.metric
    margin = settings.min_margin
    champion = current_champion(settings)
    champ_version = champ_family = None
    champ_value: float | None = None
    if champion is None:
        promoted, reason = True, "There was no champion yet; the best challenger becomes the first one."
    else:
        champ_version = str(champion.version)
        champ_family = champion.tags.get(TAG_FAMILY)
        raw_value = champion.tags.get(metric_key(metric, "valid"))
        champ_value = float(raw_value) if raw_value is not None else None
        champ_fp, champ_split = champion.tags.get(TAG_FINGERPRINT), champion.tags.get(TAG_SPLIT)
        if champ_version == challenger.version:
            promoted, reason = False, "The challenger already is the champion."
        elif champ_fp != challenger.fingerprint or champ_split != challenger.split:
            promoted = True
            reason = (
                f"The champion v{champ_version} was evaluated on other data (dataset fingerprint {champ_fp}, "
                f"split {champ_split}) than the challenger ({challenger.fingerprint}, {challenger.split}); "
                "their metrics cannot be compared and the old champion cannot be re-scored on the new data, "
                "so the challenger trained on the current data replaces it."
            )
        elif champ_value is None:
            promoted = True
            reason = (
                f"The champion v{champ_version} has no validation {metric} recorded; "
                "the challenger replaces it."
            )
        else:
            gain = challenger.valid_value - champ_value
            promoted = gain > 0 and gain >= margin
            if promoted:
                reason = (
                    f"The challenger beats the champion on the same data by {gain:+.4f} "
                    f"(>= margin {margin:g}) in validation {metric}."
                )
            else:
                reason = (
                    f"The challenger's validation {metric} {challenger.valid_value:.4f} does not beat the "
                    f"champion's {champ_value:.4f} by the margin {margin:g} (difference {gain:+.4f}) on the "
                    "same "
                    "dataset and split, so the champion stays."
                )
    if promoted:
        _move_alias(settings, challenger.version)
    return PromotionDecision(
        registered_model=settings.registered_model_name,
        alias=settings.promotion_alias,
        metric=metric,
        margin=margin,
        challenger_version=challenger.version,
        challenger_family=challenger.family,
        challenger_value=challenger.valid_value,
        champion_version=champ_version,
        champion_family=champ_family,
        champion_value=champ_value,
        promoted=promoted,
        reason=reason,
    )


def _move_alias(settings: MlflowSettings, version: str) -> None:
    client = _client(settings)
    client.set_registered_model_alias(settings.registered_model_name, settings.promotion_alias, version)
    client.set_model_version_tag(settings.registered_model_name, version, TAG_PREFIX + "promoted_at", _now())
    if settings.registry_stage:
        # Stages are deprecated in favour of aliases but still read by older clients; set both, quietly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.transition_model_version_stage(
                settings.registered_model_name,
                version,
                settings.registry_stage,
                archive_existing_versions=True,
            )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
