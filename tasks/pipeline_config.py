"""The one typed parameter model of the pipeline, which Prefect turns into a form in its UI.

:class:`PipelineParams` is the only place the pipeline's defaults are written. ``gnnrec run``, ``retrain``
and ``train`` start from it (or from a YAML file of the same fields, ``--config gnnrec.yml``) and apply only
the flags given; the deployments (:mod:`flows.deploy`) and ``prefect.yaml`` pass no parameters of their
own, so the Run form shows these defaults too. Defaults of the trainer's own settings (learning rate, batch
size, patience) are read from :class:`tasks.train.TrainConfig` when an instance is made, not copied here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tasks.config import DataConfig, SplitConfig, form_schema

if TYPE_CHECKING:
    from tasks.train import TrainConfig
    from tasks.tune import TuneResult


def _registered_models() -> tuple[str, ...]:
    from models.registry import MODELS

    return tuple(sorted(MODELS))


if TYPE_CHECKING:
    ModelName = str
else:
    #: The registered model families as a ``Literal`` built from ``models.registry.MODELS``: a new model file
    #: adds a choice to the Run form's multi-select by itself.
    ModelName = Literal[_registered_models()]

#: Sources that read local files and so need ``data.data_dir``.
_LOCAL_SOURCES = ("recbole", "lightgcn", "csv")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _trainer_default(field: str) -> Any:
    """The trainer's own default of ``field`` (one definition, in :class:`tasks.train.TrainConfig`)."""
    from tasks.train import TrainConfig

    return TrainConfig.model_fields[field].default


class PipelineParams(BaseModel):
    """Everything a ``train-and-promote`` or ``retrain`` run needs, validated before any work starts.

    Every field has a ``title`` and a one-line ``description``: Prefect shows them in the Run form, and
    ``gnnrec run --show-config`` prints the values in effect. A field left ``None`` where that is allowed
    means "the setting named in its description" (e.g. ``metric``: ``mlflow.yml``'s selection metric).
    Errors are collected: a form or a file with several mistakes reports them all at once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=form_schema)

    data: DataConfig = Field(
        default_factory=DataConfig,
        title="Data",
        description="Which dataset to load and how to filter it (source, folder, synthetic size, k-core).",
    )
    allow_duplicates: bool = Field(
        default=False,
        title="Allow duplicate rows",
        description="Let repeated (user, item) rows through the data contract; they are then merged.",
    )
    min_interactions: int = Field(
        default=10,
        ge=1,
        title="Minimum interactions",
        description="The data contract fails a dataset with fewer interactions than this.",
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig,
        title="Split",
        description="How interactions are split into train, validation and test parts.",
    )
    models: tuple[ModelName, ...] = Field(
        default=("mf", "lightgcn", "ngcf"),
        title="Models",
        description="Registered model families to tune, train and compare.",
    )
    n_trials: int = Field(
        default=4,
        ge=0,
        le=10_000,
        title="Optuna trials per model",
        description="Finished trials each model's study should hold; a rerun with nothing changed adds none.",
    )
    extra_trials: int = Field(
        default=0,
        ge=0,
        le=10_000,
        title="Extra trials",
        description="Trials to add on top of those the study already holds.",
    )
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        title="Tuning seconds per model",
        description="No new Optuna trial starts after this many seconds of tuning a model.",
    )
    epochs: int = Field(
        default=40,
        ge=1,
        title="Epochs",
        description="Cap on training epochs per run; early stopping on validation may stop sooner.",
    )
    patience: int = Field(
        default_factory=partial(_trainer_default, "patience"),
        ge=1,
        title="Early-stopping patience",
        description="Validations without improvement before training stops.",
    )
    lr: float = Field(
        default_factory=partial(_trainer_default, "lr"),
        gt=0,
        title="Learning rate",
        description="Adam learning rate of every training run.",
    )
    batch_size: int = Field(
        default_factory=partial(_trainer_default, "batch_size"),
        ge=1,
        title="Batch size",
        description="Training (user, positive item) pairs per optimiser step.",
    )
    metric: str | None = Field(
        default=None,
        title="Selection metric",
        description="Validation metric that tunes, selects and promotes, e.g. ndcg@20; empty: mlflow.yml's.",
    )
    ks: tuple[int, ...] = Field(
        default=(10, 20),
        title="Cut-offs",
        description="Cut-offs K at which every model is evaluated; they include the selection metric's K.",
    )
    seed: int = Field(
        default=2020, title="Seed", description="Seed of the Optuna sampler and of every training run."
    )
    device: str = Field(
        default="auto",
        title="Device",
        description="auto (CUDA when present), cpu, cuda or cuda:N.",
        examples=["auto", "cpu", "cuda", "cuda:0"],
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        title="CPU threads",
        description="torch.set_num_threads for the flow run; empty: torch's default (one per core).",
    )
    parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        title="Models in parallel",
        description="1: one model after another; N: N models at once, on a local Dask cluster of N workers.",
    )
    dask_address: str | None = Field(
        default=None,
        title="Dask scheduler",
        description="A running Dask scheduler (tcp://host:8786) whose workers run the models; empty: local.",
        examples=["tcp://127.0.0.1:8786"],
    )
    mlflow_config: Path | None = Field(
        default=None,
        title="MLflow settings file",
        description="Path of the mlflow.yml to use; empty: $GNNREC_MLFLOW_CONFIG or ./mlflow.yml.",
    )
    study_storage: str | None = Field(
        default=None,
        title="Optuna storage",
        description="SQLAlchemy URL of the Optuna studies; empty: study_storage in mlflow.yml.",
    )
    warm_start: bool = Field(
        default=False,
        title="Warm start",
        description="Try each model's best known hyperparameters (its study's, else the registry's) first.",
    )
    train_space: dict[str, list[Any]] | None = Field(
        default=None,
        title="Searched training settings",
        description='Training settings Optuna searches, e.g. {"loss": ["bpr", "softmax"]}; '
        "empty: the model's own.",
    )
    pruner: Literal["asha", "hyperband", "median", "none"] = Field(
        default="asha",
        title="Pruner",
        description="How bad trials stop early: asha or hyperband (halving on epochs), median or none.",
    )

    @field_validator("train_space")
    @classmethod
    def _train_space_searchable(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        from tasks.tune import check_train_space

        return None if value is None else check_train_space(value)

    @field_validator("models")
    @classmethod
    def _models_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("choose at least one model")
        if len(set(value)) != len(value):
            raise ValueError(f"models are listed more than once: {list(value)}")
        return value

    @field_validator("metric")
    @classmethod
    def _metric_has_cutoff(cls, value: str | None) -> str | None:
        if value is not None:
            name, sep, k = value.partition("@")
            if not sep or not name or not k.isdigit() or int(k) < 1:
                raise ValueError(f"metric must look like 'ndcg@20' (name@K), got {value!r}")
        return value

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(k < 1 for k in value):
            raise ValueError(f"ks must be positive cut-offs, got {list(value)}")
        return tuple(sorted(set(value)))

    @field_validator("dask_address")
    @classmethod
    def _dask_address_named(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^([a-z]+://)?[^\s:/]+:\d+$", value.strip()):
            raise ValueError(f"dask_address must look like tcp://host:8786, got {value!r}")
        return value.strip() if value else None

    @field_validator("device")
    @classmethod
    def _device_named(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _every_error_at_once(cls, data: Any, handler: Any) -> PipelineParams:
        """Run the field checks and the cross-field checks, and report every failure of both together.

        Pydantic stops before an ``after`` model validator when a field fails, so a form with a bad field
        and a cross-field mistake would be refused twice; here the cross-field checks read the raw input too.
        """
        errors: list[InitErrorDetails] = []
        try:
            model = handler(data)
        except ValidationError as exc:
            model = None
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(err["type"], _escape(err["msg"])),
                    loc=err["loc"],
                    input=err.get("input"),
                )
                for err in exc.errors()
            ]
        for loc, message, value in _cross_field_errors(model if model is not None else data):
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("cross_field", _escape(message)), loc=loc, input=value
                )
            )
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        assert model is not None
        return model

    def ks_with(self, metric: str) -> tuple[int, ...]:
        """The evaluation cut-offs, including the one of ``metric``.

        A ``metric`` given here must be among :attr:`ks` (validated); ``mlflow.yml``'s selection metric,
        used when :attr:`metric` is empty, is added (``ndcg@50`` adds 50).
        """
        return tuple(sorted({*self.ks, int(metric.partition("@")[2])}))

    def train_space_for(self, family: str) -> dict[str, list[Any]]:
        """The training settings Optuna searches for ``family``.

        :attr:`train_space` when given (``{}`` searches none), else the model's own
        (:meth:`models.base.Recommender.train_space`).
        """
        if self.train_space is not None:
            return dict(self.train_space)
        from models import get_model

        return get_model(family).train_space()

    def train_config(self, family: str, metric: str) -> TrainConfig:
        """The base training configuration of ``family`` in this run (tuning searches over its hparams).

        Args:
            family: Model family (``mf``, ``lightgcn``...).
            metric: The selection metric, used for early stopping and tuning.

        Returns:
            A :class:`~tasks.train.TrainConfig` with this run's epochs, learning rate, batch size, patience,
            device and seed, evaluated at :meth:`ks_with` of ``metric``, without progress bars.
        """
        from tasks.train import TrainConfig

        return TrainConfig(
            model=family,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            patience=self.patience,
            metric=metric,
            ks=self.ks_with(metric),
            device=self.device,
            seed=self.seed,
            progress=False,
        )


def _escape(message: str) -> str:
    """A message safe as a pydantic message template (its braces are not placeholders)."""
    return message.replace("{", "{{").replace("}", "}}")


def _get(data: Any, *path: str) -> Any:
    """``data.a.b`` or ``data["a"]["b"]``; ``None`` when absent."""
    for key in path:
        if data is None:
            return None
        data = data.get(key) if isinstance(data, Mapping) else getattr(data, key, None)
    return data


def _cross_field_errors(data: Any) -> list[tuple[tuple[str, ...], str, Any]]:
    """Mistakes that involve several fields, each as (location, message, value); empty when none."""
    found: list[tuple[tuple[str, ...], str, Any]] = []
    dataset = _get(data, "data", "dataset")
    if dataset in _LOCAL_SOURCES and _get(data, "data", "data_dir") in (None, ""):
        found.append(
            (
                ("data", "data_dir"),
                f"the '{dataset}' source reads local files: give the folder that holds them (--data-dir)",
                None,
            )
        )
    metric, ks = _get(data, "metric"), _get(data, "ks")
    if ks is None:
        ks = PipelineParams.model_fields["ks"].default
    if isinstance(metric, str) and metric.partition("@")[2].isdigit() and isinstance(ks, list | tuple):
        cutoff = int(metric.partition("@")[2])
        if cutoff not in {int(k) for k in ks if str(k).lstrip("-").isdigit()}:
            found.append(
                (
                    ("metric",),
                    f"the metric's cut-off {cutoff} is not among the evaluated ks {list(ks)}: add it",
                    metric,
                )
            )
    if _get(data, "split", "method") == "fixed" and dataset == "synthetic":
        found.append(
            (
                ("split", "method"),
                "the synthetic source has no split of its own: use random, temporal or loo",
                "fixed",
            )
        )
    return found


#: What a scheduled ``retrain`` changes from the defaults: warm start, one trial per model (none when the
#: study already holds one).
RETRAIN_CHANGES: dict[str, Any] = {"n_trials": 1, "extra_trials": 0, "warm_start": True}


def retrain_defaults() -> PipelineParams:
    """The defaults of a ``retrain`` run: :class:`PipelineParams` with :data:`RETRAIN_CHANGES`."""
    return PipelineParams(**RETRAIN_CHANGES)


def _deep_merge(base: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


class RunConfigError(ValueError):
    """A run-config file is not a YAML mapping (the CLI reports it as an unusable input, exit 2)."""


def read_params_file(path: Path) -> dict[str, Any]:
    """The fields of a run-config YAML file (``gnnrec.yml``): a mapping of :class:`PipelineParams` fields.

    Raises:
        OSError: The file cannot be read.
        RunConfigError: It is not YAML, or not a mapping.
    """
    import yaml

    text = Path(path).read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RunConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise RunConfigError(
            f"{path} must hold a mapping of pipeline settings (e.g. 'epochs: 25'), not {loaded!r}"
        )
    return loaded


def effective_params(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: PipelineParams | None = None,
) -> PipelineParams:
    """The parameters in effect: ``base`` (else the defaults), then the file, then ``overrides``.

    Nested sections merge key by key (``{"data": {"k_core": 5}}`` keeps the file's ``data.dataset``), and
    every value is validated together, so all mistakes are reported in one error.

    Args:
        config_file: A run-config YAML file (:func:`read_params_file`), or ``None``.
        overrides: Fields given on the command line (only those given).
        base: The defaults to start from (``retrain`` starts from its own).

    Raises:
        OSError: The file cannot be read.
        RunConfigError: The file is not a YAML mapping.
        pydantic.ValidationError: A value is invalid.
    """
    merged = base.model_dump(exclude_unset=True) if base is not None else {}
    if config_file is not None:
        merged = _deep_merge(merged, read_params_file(config_file))
    merged = _deep_merge(merged, overrides or {})
    return PipelineParams.model_validate(merged)


def final_train_config(
    base: TrainConfig, tuned: TuneResult, warm_start: dict[str, Any] | None
) -> TrainConfig:
    """The configuration the final model is trained with: the best trial's choices over ``base``.

    Its model hyperparameters and, when training settings were searched, those settings too. When no trial
    completed, the warm-start parameters (if any) are used instead, else the defaults.

    Args:
        base: From :meth:`PipelineParams.train_config`.
        tuned: The family's tuning result.
        warm_start: The best known hyperparameters the study was warm-started with, or ``None``.

    Returns:
        ``base`` with the chosen hyperparameters merged over its own, and the chosen training settings.
    """
    from tasks.tune import split_params, with_train_settings

    if tuned.best_params:
        return with_train_settings(base, {**base.hparams, **tuned.best_hparams}, tuned.best_train)
    hparams, settings = split_params(warm_start or {})
    return with_train_settings(base, {**base.hparams, **hparams}, settings)
