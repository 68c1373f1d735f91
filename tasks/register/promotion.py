"""Promotion: compare the best challenger with the champion and move the alias when it wins."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.register.lineage import TAG_FAMILY, TAG_FINGERPRINT, TAG_PREFIX, TAG_SPLIT
from tasks.register.settings import MlflowSettings, mlflow_client
from tasks.register.tracking import metric_key
from tasks.register.versions import RegisteredVersion, current_champion


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
    client = mlflow_client(settings)
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
