"""The one typed parameter model of the pipeline flows, which Prefect turns into a form in its UI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.config import DataConfig, SplitConfig

if TYPE_CHECKING:
    from tasks.train import TrainConfig
    from tasks.tune import TuneResult


class PipelineParams(BaseModel):
    """Everything a ``train_and_promote`` or ``retrain`` run needs, validated before any work starts.

    Attributes:
        data: Which dataset to load and how to filter it (source, folder, synthetic size, k-core, ...).
        allow_duplicates: Let repeated (user, item) rows through the data contract (they are then merged).
        min_interactions: The contract's minimum number of interactions.
        split: How interactions are split into train/valid/test.
        models: Model families to tune, train and compare (names from ``models.MODELS``).
        n_trials: Optuna trials per model. The study of a (dataset, split, model) is kept between runs, and
            this is the number of *finished* trials it should hold: a rerun with no change adds none.
        extra_trials: Trials to add on top of those already in the study (``retrain`` uses 0 or a few).
        timeout_s: Tuning time budget per model, in seconds.
        epochs: Cap on training epochs (early stopping on the validation metric may stop sooner).
        patience: Early-stopping patience in validations; ``None`` keeps the trainer's default.
        lr: Adam learning rate; ``None`` keeps the trainer's default.
        batch_size: Training pairs per step; ``None`` keeps the trainer's default.
        metric: Validation metric that tunes, selects and promotes (``ndcg@20``); ``None`` uses
            ``selection_metric`` from ``mlflow.yml``.
        ks: Cut-offs at which every model is evaluated (the selection metric's cut-off is added).
        seed: Seed of the Optuna sampler and of every training run.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``/``cuda:N``.
        threads: CPU threads torch may use in the flow run (``torch.set_num_threads``); ``None`` leaves the
            process's setting (torch's default is one per core). A deployment's flow run is a process of its
            own, so this is how a scheduled or UI-started run is kept to fewer cores on a shared machine.
        mlflow_config: Path to the ``mlflow.yml`` to use; ``None`` uses ``GNNREC_MLFLOW_CONFIG`` or
            ``./mlflow.yml``.
        study_storage: SQLAlchemy URL of the Optuna storage; ``None``: ``study_storage`` in ``mlflow.yml``.
        warm_start: Enqueue each model's best known hyperparameters (from its study or the champion's tags)
            as the first new trial.
        train_space: Training settings Optuna searches beside each model's hyperparameters: a
            ``TrainConfig`` field to the values to try, e.g. ``{"negative_sampler": ["uniform", "hard"],
            "sampler_pool_size": [16, 32, 64]}`` (fields: :data:`tasks.tune.SEARCHABLE_TRAIN_FIELDS`).
            Empty: the run's settings for every trial.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    allow_duplicates: bool = False
    min_interactions: int = Field(default=10, ge=1)
    split: SplitConfig = Field(default_factory=SplitConfig)
    models: tuple[str, ...] = ("mf", "lightgcn", "ngcf")
    n_trials: int = Field(default=4, ge=0, le=10_000)
    extra_trials: int = Field(default=0, ge=0, le=10_000)
    timeout_s: float = Field(default=600.0, gt=0)
    epochs: int = Field(default=40, ge=1)
    patience: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    metric: str | None = None
    ks: tuple[int, ...] = (10, 20)
    seed: int = 2020
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    threads: int | None = Field(default=None, ge=1)
    mlflow_config: Path | None = None
    study_storage: str | None = None
    warm_start: bool = False
    train_space: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("train_space")
    @classmethod
    def _train_space_searchable(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        from tasks.tune import check_train_space

        return check_train_space(value)

    @field_validator("models")
    @classmethod
    def _models_known_and_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
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

    def ks_with(self, metric: str) -> tuple[int, ...]:
        """The evaluation cut-offs, including the one of ``metric`` (``ndcg@50`` adds 50)."""
        return tuple(sorted({*self.ks, int(metric.partition("@")[2])}))

    def train_overrides(self) -> dict[str, Any]:
        """The training settings given here (``TrainConfig`` keeps its defaults for the others)."""
        given = {"patience": self.patience, "lr": self.lr, "batch_size": self.batch_size}
        return {k: v for k, v in given.items() if v is not None}

    def train_config(self, family: str, metric: str) -> TrainConfig:
        """The base training configuration of ``family`` in this run (tuning searches over its hparams).

        Args:
            family: Model family (``mf``, ``lightgcn``...).
            metric: The selection metric, used for early stopping and tuning.

        Returns:
            A :class:`~tasks.train.TrainConfig` with this run's epochs, device, seed and overrides, evaluated
            at :meth:`ks_with` of ``metric``, without progress bars.
        """
        from tasks.train import TrainConfig

        return TrainConfig(
            model=family,
            epochs=self.epochs,
            metric=metric,
            ks=self.ks_with(metric),
            device=self.device,
            seed=self.seed,
            progress=False,
            **self.train_overrides(),
        )


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
