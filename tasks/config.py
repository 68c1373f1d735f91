"""Typed, frozen configuration for the data steps (dataset choice, filtering, split).

Every field carries a ``title`` and a one-line ``description``: Prefect renders these models as the Run
form of the deployments, and ``gnnrec run --show-config`` prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DatasetName = Literal[
    "synthetic",
    "movielens-100k",
    "lastfm-hetrec",
    "movielens-100k-kg",
    "lastfm-kg",
    "filmtrust",
    "recbole",
    "lightgcn",
    "csv",
]
SplitMethod = Literal["random", "temporal", "loo", "fixed", "cold-users", "cold-items"]


def form_schema(schema: dict[str, Any]) -> None:
    """Drop the ``null`` branch of optional fields from a model's JSON schema (``json_schema_extra``).

    Prefect's Run form renders ``anyOf: [{type: X}, {type: null}]`` as a choice between X and a
    'Property is type "None"' box; without the null branch it shows one X input, left empty for ``None``
    (the field's default, which the model still accepts).
    """
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf")
        if not branches:
            continue
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) < len(branches):
            prop.pop("anyOf")
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept


class DataConfig(BaseModel):
    """Which dataset to load, how to filter it, and what the data contract expects of it."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=form_schema)

    dataset: DatasetName = Field(
        default="synthetic",
        title="Dataset",
        description=(
            "Source: synthetic, movielens-100k(-kg), lastfm-hetrec, lastfm-kg, filmtrust, recbole, lightgcn "
            "or csv."
        ),
    )
    data_dir: Path | None = Field(
        default=None,
        title="Data folder",
        description="Folder with the source's files (the download cache of movielens-100k, lastfm-hetrec).",
    )
    recbole_name: str | None = Field(
        default=None,
        title="RecBole file stem",
        description="For recbole: the atomic files' stem (movie for movie.inter); empty: the single *.inter.",
    )
    csv_columns: dict[str, str] = Field(
        default_factory=dict,
        title="CSV columns",
        description="For csv: canonical column (user, item, rating, timestamp) to the file's column name.",
    )
    csv_sep: str = Field(default=",", title="CSV separator", description="For csv: the field separator.")
    one_based: bool | None = Field(
        default=None,
        title="One-based ids",
        description="For lightgcn: whether ids start at 1; empty: detect.",
    )
    min_rating: float | None = Field(
        default=None,
        title="Minimum rating",
        description="Keep only interactions rated at least this (implicit feedback); empty keeps all.",
    )
    rating_scale: tuple[float, float] | None = Field(
        default=None,
        title="Rating scale",
        description="(min, max) of a valid rating: the contract rejects ratings outside; empty: any finite.",
    )
    k_core: int = Field(
        default=0,
        ge=0,
        title="k-core",
        description="Keep users and items with at least K interactions; 0: all.",
    )
    aggregate_duplicates: bool = Field(
        default=False,
        title="Merge duplicate rows",
        description="Merge repeated (user, item) rows instead of failing the contract on them.",
    )
    synthetic_users: int = Field(
        default=943, ge=10, title="Synthetic users", description="Users of synthetic."
    )
    synthetic_items: int = Field(
        default=1682, ge=10, title="Synthetic items", description="Items of synthetic."
    )
    synthetic_interactions: int = Field(
        default=100_000, ge=100, title="Synthetic interactions", description="Interactions of synthetic."
    )
    synthetic_seed: int = Field(
        default=2020, title="Synthetic seed", description="Seed of the synthetic source."
    )
    download: bool = Field(
        default=True,
        title="Download",
        description="Fetch a downloadable source that is missing from the data folder.",
    )

    @field_validator("rating_scale")
    @classmethod
    def _scale_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            low, high = value
            if (
                not (low == low and high == high)
                or low > high
                or abs(low) == float("inf")
                or abs(high) == float("inf")
            ):
                raise ValueError(f"rating scale must be finite (MIN, MAX) with MIN <= MAX, got {value}")
        return value


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

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=form_schema)

    method: SplitMethod = Field(
        default="random",
        title="Split method",
        description="random, temporal, loo (leave one out), fixed (source), cold-users or cold-items.",
    )
    ratios: tuple[float, float, float] = Field(
        default=(0.8, 0.1, 0.1),
        title="Ratios",
        description="Train, validation and test fractions for random and temporal splits; they sum to 1.",
    )
    valid_from_train: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        title="Validation from train",
        description="For fixed splits without validation: per-user fraction of train moved to validation.",
    )
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
    seed: int = Field(
        default=2020, title="Split seed", description="Seed of every random choice of the split."
    )

    @field_validator("ratios")
    @classmethod
    def _ratios_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        # A field validator (not a model validator) so that it is reported together with other field errors.
        if any(r < 0 for r in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must be non-negative and sum to 1, got {value}")
        if value[0] <= 0:
            raise ValueError("the train ratio must be positive")
        return value
