"""Typed, frozen configuration for the data steps (dataset choice, filtering, split)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DatasetName = Literal["synthetic", "movielens-100k", "lastfm-hetrec", "recbole", "lightgcn", "csv"]
SplitMethod = Literal["random", "temporal", "loo", "fixed", "cold-users", "cold-items"]


class DataConfig(BaseModel):
    """Which dataset to load and how to filter it.

    Attributes:
        dataset: Source name.
        data_dir: Folder with the source's files; for downloadable sources, the cache folder.
        recbole_name: For ``recbole``, the atomic files' stem (``movie`` for ``movie.inter``); defaults to
            the folder's single ``*.inter`` file.
        csv_columns: For ``csv``, a map from canonical column (``user``, ``item``, ``rating``, ``timestamp``)
            to the user's column name.
        csv_sep: For ``csv``, the field separator.
        one_based: For ``lightgcn``, whether ids are 1-based (``None``: auto-detect).
        min_rating: Keep only interactions rated at least this (implicit feedback).
        k_core: Keep the k-core; 0 disables.
        aggregate_duplicates: Merge repeated (user, item) rows instead of rejecting them.
        synthetic_users/items/interactions/seed: Size and seed of the ``synthetic`` source.
        download: Whether a downloadable source missing from ``data_dir`` may be fetched.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: DatasetName = "synthetic"
    data_dir: Path | None = None
    recbole_name: str | None = None
    csv_columns: dict[str, str] = Field(default_factory=dict)
    csv_sep: str = ","
    one_based: bool | None = None
    min_rating: float | None = None
    k_core: int = Field(default=0, ge=0)
    aggregate_duplicates: bool = False
    synthetic_users: int = Field(default=943, ge=10)
    synthetic_items: int = Field(default=1682, ge=10)
    synthetic_interactions: int = Field(default=100_000, ge=100)
    synthetic_seed: int = 2020
    download: bool = True


class SplitConfig(BaseModel):
    """How interactions are split into train/valid/test.

    Attributes:
        method: ``random`` (per-user ratio), ``temporal`` (per-user, by timestamp), ``loo`` (leave the last
            or a random one out for test and one for valid), ``fixed`` (the source's own split),
            ``cold-users`` (users held out of training whole, each revealing a history at inference time),
            ``cold-items`` (items held out of training whole); see :mod:`tasks.split`.
        ratios: (train, valid, test) fractions for ``random`` and ``temporal``; they must sum to 1.
        valid_from_train: For ``fixed`` sources without a validation part, the per-user fraction of train
            moved to validation (0 keeps train whole and leaves validation empty).
        cold_fraction: For ``cold-users``, the fraction of all users held out of training (half of them
            validate, half test); for ``cold-items``, the fraction of items with interactions held out.
        fold_in: For ``cold-users``, the fraction of each held-out user's interactions revealed as its
            history (oldest first when the dataset has timestamps); the rest is what it is evaluated on.
        seed: Seed for every random choice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: SplitMethod = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    valid_from_train: float = Field(default=0.0, ge=0.0, lt=1.0)
    cold_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=1.0,
        title="Cold fraction",
        description="cold-users: fraction of users held out of training; cold-items: fraction of items.",
    )
    fold_in: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        title="Fold-in fraction",
        description="cold-users: share of each new user's interactions revealed as history (oldest first).",
    )
    seed: int = 2020

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitConfig:
        if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must be non-negative and sum to 1, got {self.ratios}")
        if self.ratios[0] <= 0:
            raise ValueError("the train ratio must be positive")
        return self
