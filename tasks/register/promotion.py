"""Promotion: compare the best challenger with the champion and move the alias when it wins."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.register.health import BROKEN_FIX
from tasks.register.lineage import TAG_DATASET, TAG_FAMILY, TAG_FINGERPRINT, TAG_PREFIX, TAG_SPLIT, split_key
from tasks.register.settings import MlflowSettings, mlflow_client
from tasks.register.tracking import metric_key
from tasks.register.versions import RegisteredVersion, current_champion, load_version

if TYPE_CHECKING:
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split


#: The rules that can decide, as written in :attr:`PromotionDecision.rule`.
RULE_ALREADY = "already-champion"
RULE_FLOOR = "popularity-floor"
RULE_FIRST = "first-champion"
RULE_BROKEN = "broken-champion"
RULE_MARGIN = "margin"
RULE_INCOMPARABLE = "incomparable"


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of comparing the best challenger with the current champion, on the challenger's data.

    Attributes:
        registered_model: Registered model name.
        alias: The champion alias.
        metric: Selection metric (validation part).
        margin: Required absolute improvement.
        challenger_version: The challenger's version.
        challenger_family: The challenger's model family.
        challenger_value: Its validation selection metric.
        champion_version: The champion before the decision (``None`` when there was none).
        champion_family: Its family.
        champion_value: Its validation selection metric **on the challenger's data and split** (recorded
            when it was trained on the very same data, else re-scored); ``None`` when it could not be
            scored there (no champion, broken, incomparable).
        promoted: Whether the challenger became champion.
        reason: Why, for a person.
        rule: The rule that decided: ``already-champion``, ``popularity-floor``, ``first-champion``,
            ``broken-champion``, ``margin`` or ``incomparable``.
        data: The dataset and split both models' numbers are measured on (the challenger's).
        basis: How the champion's numbers were obtained: ``recorded`` (same data) or ``re-scored``.
        challenger_test: The challenger's test selection metric (reported, never decides).
        champion_test: The champion's, on the same test part, when it could be scored.
        popularity_value: Popularity's validation selection metric on the challenger's split (the floor).
        champion_recorded_value: The champion's validation metric as recorded on its own data.
        challenger_reused: Whether the challenger is an identical, already registered version (reused).
        champion_problem: Why the champion could not be loaded or scored, when it could not.
        on_incomparable: The policy in force for an incomparable champion (``keep`` or ``promote``).
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
    rule: str = ""
    data: str = ""
    basis: str = ""
    challenger_test: float | None = None
    champion_test: float | None = None
    popularity_value: float | None = None
    champion_recorded_value: float | None = None
    challenger_reused: bool = False
    champion_problem: str | None = None
    on_incomparable: str = "keep"

    @property
    def champion_after(self) -> str | None:
        """The version that holds the alias after the decision (``None``: still no champion)."""
        return self.challenger_version if self.promoted else self.champion_version

    @property
    def observed_margin(self) -> float | None:
        """Challenger minus champion, validation metric on the same data, when both were scored."""
        return None if self.champion_value is None else self.challenger_value - self.champion_value

    def to_markdown(self) -> str:
        """The Prefect artifact ``promotion-decision``: both models on the same data, the margin, the rule."""

        def fmt(value: float | None) -> str:
            return "-" if value is None or value != value else f"{value:.4f}"

        if self.promoted:
            verdict = "**promoted** the challenger"
        elif self.champion_version is None:
            verdict = "**not promoted** (still no champion)"
        else:
            verdict = "**kept the champion**"
        champion = (
            f"champion v{self.champion_version} ({self.champion_family})"
            if self.champion_version
            else "champion"
        )
        after = f"v{self.champion_after}" if self.champion_after else "none"
        lines = [
            f"# Promotion decision: {verdict}",
            "",
            f"**Rule:** `{self.rule}`. {self.reason}",
            "",
            f"Measured on the challenger's data: {self.data or '-'}"
            + (f"; the champion's numbers are {self.basis}." if self.basis else "."),
            "",
            f"| {self.metric} | challenger v{self.challenger_version} ({self.challenger_family}) "
            f"| {champion} | popularity |",
            "|---|---|---|---|",
            f"| validation | {fmt(self.challenger_value)} | {fmt(self.champion_value)} "
            f"| {fmt(self.popularity_value)} |",
            f"| test (reported) | {fmt(self.challenger_test)} | {fmt(self.champion_test)} | - |",
            "",
            "| | |",
            "|---|---|",
            f"| observed margin (challenger - champion) | {fmt(self.observed_margin)} |",
            f"| required margin | {self.margin:g} |",
            f"| popularity floor | challenger must beat {fmt(self.popularity_value)} |",
            f"| on_incomparable | `{self.on_incomparable}` |",
            f"| champion after | {after} (`models:/{self.registered_model}@{self.alias}`) |",
        ]
        if self.champion_recorded_value is not None and self.basis != "recorded on the same data":
            lines.append(
                f"| champion's validation value as registered (not compared) | "
                f"{fmt(self.champion_recorded_value)} |"
            )
        if self.challenger_reused:
            lines.append(
                f"| challenger | v{self.challenger_version} reused: an identical model was registered |"
            )
        if self.champion_problem:
            lines.append(f"| champion problem | {self.champion_problem} |")
        return "\n".join(lines)


def select_challenger(candidates: Sequence[RegisteredVersion]) -> RegisteredVersion:
    """The candidate with the best validation selection metric (ties: the first listed)."""
    if not candidates:
        raise ValueError("no candidate versions to choose a challenger from")
    return max(candidates, key=lambda c: (c.valid_value, -candidates.index(c)))


def metric_cutoff(metric: str) -> int:
    """The ``K`` of a ranking metric name: ``metric_cutoff("ndcg@20") == 20``."""
    name, _, k = metric.partition("@")
    if not name or not k.isdigit() or int(k) < 1:
        raise ValueError(f"a selection metric looks like 'ndcg@20', got {metric!r}")
    return int(k)


@dataclass
class _Verdict:
    """What :func:`_judge` found; turned into a :class:`PromotionDecision`."""

    promoted: bool
    rule: str
    reason: str
    champion_value: float | None = None
    champion_test: float | None = None
    basis: str = ""
    problem: str | None = None


def promote_if_better(
    settings: MlflowSettings, candidates: Sequence[RegisteredVersion], *, dataset: Dataset, split: Split
) -> PromotionDecision:
    """Promote the best candidate when it beats the current champion on the same data; else keep it.

    The rules, in order (:attr:`PromotionDecision.rule` names the one that decided):

    * ``already-champion``: the challenger is the champion (an identical model was reused); nothing moves.
    * ``popularity-floor``: a challenger whose validation metric does not beat popularity on its own
      validation part is never promoted.
    * ``first-champion``: there is no champion yet; the challenger becomes the first.
    * ``broken-champion``: the champion's artifacts are missing or do not load; the challenger replaces it.
    * ``margin``: both models are scored on the challenger's dataset and split: from the champion's recorded
      metrics when it was trained on the very same data (fingerprint and split), else by loading it from the
      registry and re-scoring it on the challenger's validation and test parts (full ranking, same masks,
      same metric, :func:`tasks.register.rescore.rescore`). The challenger is promoted only if it beats the
      champion by at least ``min_margin``.
    * ``incomparable``: the champion cannot be scored on the challenger's data (validation users unknown to
      it, another dataset, no raw-id scoring); the challenger is promoted only when ``on_incomparable`` is
      ``promote``.

    Promotion moves the alias and, when ``registry_stage`` is set, transitions the version to that stage
    and archives the previous holders. Callers that may run at the same time must serialise this call (the
    flow holds Prefect's ``gnnrec-promotion`` concurrency limit around it), so that each decision reads the
    champion the previous one left.

    Args:
        settings: Tracking and promotion settings.
        candidates: This run's registered versions; the best by the selection metric is the challenger.
        dataset: The dataset the candidates were trained on (raw ids).
        split: Their split; its validation part decides, its test part is reported.

    Returns:
        The decision, with both models' numbers on the same data and the reason.

    Raises:
        ValueError: When the challenger was not trained on ``dataset`` and ``split``.
    """
    from tasks.evaluate import popularity_metrics

    challenger = select_challenger(candidates)
    metric = challenger.metric
    key = split_key(split)
    if challenger.fingerprint != dataset.fingerprint or challenger.split != key:
        raise ValueError(
            f"the challenger v{challenger.version} was trained on {challenger.fingerprint} / "
            f"{challenger.split}, not on the dataset and split given ({dataset.fingerprint} / {key})"
        )
    popularity = float(popularity_metrics(split, "valid", (metric_cutoff(metric),)).values[metric])
    champion = current_champion(settings)
    verdict = _judge(settings, challenger, champion, dataset, split, popularity)
    if challenger.reused:
        verdict.reason += (
            f" (The challenger v{challenger.version} is an identical model already registered: same code "
            "version, data, split, hyperparameters and training settings; it was reused, not registered "
            "again.)"
        )
    if verdict.promoted:
        _move_alias(settings, challenger.version)
    recorded = champion.tags.get(metric_key(metric, "valid")) if champion is not None else None
    return PromotionDecision(
        registered_model=settings.registered_model_name,
        alias=settings.promotion_alias,
        metric=metric,
        margin=settings.min_margin,
        challenger_version=challenger.version,
        challenger_family=challenger.family,
        challenger_value=challenger.valid_value,
        champion_version=None if champion is None else str(champion.version),
        champion_family=None if champion is None else champion.tags.get(TAG_FAMILY),
        champion_value=verdict.champion_value,
        promoted=verdict.promoted,
        reason=verdict.reason,
        rule=verdict.rule,
        data=f"dataset {dataset.name} ({dataset.fingerprint}), split {key}",
        basis=verdict.basis,
        challenger_test=_finite(challenger.test_value),
        champion_test=verdict.champion_test,
        popularity_value=popularity,
        champion_recorded_value=None if recorded is None else float(recorded),
        challenger_reused=challenger.reused,
        champion_problem=verdict.problem,
        on_incomparable=settings.on_incomparable,
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _judge(
    settings: MlflowSettings,
    challenger: RegisteredVersion,
    champion: Any | None,
    dataset: Dataset,
    split: Split,
    popularity: float,
) -> _Verdict:
    """Apply the rules of :func:`promote_if_better`, in order; nothing is moved here."""
    metric, value = challenger.metric, challenger.valid_value
    beats_floor = value > popularity
    floor = (
        f"The challenger's validation {metric} {value:.4f} does not beat popularity ({popularity:.4f}) "
        "on its own validation part, so it is not promoted"
    )
    if champion is None:
        if not beats_floor:
            return _Verdict(False, RULE_FLOOR, floor + "; there is still no champion.")
        return _Verdict(
            True,
            RULE_FIRST,
            f"There was no champion yet; the challenger (validation {metric} {value:.4f}, popularity "
            f"{popularity:.4f}) becomes the first one.",
        )
    version = str(champion.version)
    if version == challenger.version:
        return _Verdict(
            False,
            RULE_ALREADY,
            f"The challenger v{version} already is the champion.",
            champion_value=value,
            champion_test=_finite(challenger.test_value),
            basis="recorded on the same data",
        )
    model, problem = load_version(settings, version)
    if model is None:
        broken = f"The champion v{version} is broken: {problem}."
        if not beats_floor:
            return _Verdict(False, RULE_FLOOR, f"{broken} {floor}; {BROKEN_FIX}", problem=problem)
        return _Verdict(
            True,
            RULE_BROKEN,
            f"{broken} The challenger (validation {metric} {value:.4f}, above popularity {popularity:.4f}) "
            "replaces it.",
            problem=problem,
        )
    if not beats_floor:
        return _Verdict(False, RULE_FLOOR, floor + "; the champion stays.")
    scored = _champion_on_same_data(champion, model, dataset, split, metric)
    if isinstance(scored, str):
        policy = settings.on_incomparable
        why = f"The champion v{version} cannot be scored on the challenger's data: {scored}."
        if policy == "promote":
            return _Verdict(
                True,
                RULE_INCOMPARABLE,
                f"{why} on_incomparable is `promote`, so the challenger (above popularity) replaces it.",
                problem=scored,
            )
        return _Verdict(
            False,
            RULE_INCOMPARABLE,
            f"{why} on_incomparable is `keep`, so the champion stays (set `on_incomparable: promote` in "
            "mlflow.yml to let a challenger on new data replace it).",
            problem=scored,
        )
    champ_valid, champ_test, basis = scored
    gain = value - champ_valid
    promoted = gain > 0 and gain >= settings.min_margin
    same = f"On the same data (the champion's numbers {basis})"
    if promoted:
        reason = (
            f"{same}, the challenger's validation {metric} {value:.4f} beats the champion's "
            f"{champ_valid:.4f} by {gain:+.4f} (>= margin {settings.min_margin:g})."
        )
    else:
        reason = (
            f"{same}, the challenger's validation {metric} {value:.4f} does not beat the champion's "
            f"{champ_valid:.4f} by the margin {settings.min_margin:g} (difference {gain:+.4f}), so the "
            "champion stays."
        )
    return _Verdict(promoted, RULE_MARGIN, reason, champ_valid, champ_test, basis)


def _champion_on_same_data(
    champion: Any, model: Any, dataset: Dataset, split: Split, metric: str
) -> tuple[float, float | None, str] | str:
    """The champion's validation and test metric on the challenger's data, or why it cannot be scored.

    Returns:
        ``(valid, test or None, basis)``, or a one-line explanation when the champion is incomparable.
    """
    from mlflow.exceptions import MlflowException

    from tasks.register.rescore import NotScorableError, rescore

    tags = champion.tags
    recorded_valid = tags.get(metric_key(metric, "valid"))
    if (
        tags.get(TAG_FINGERPRINT) == dataset.fingerprint
        and tags.get(TAG_SPLIT) == split_key(split)
        and recorded_valid is not None
    ):
        recorded_test = tags.get(metric_key(metric, "test"))
        same_test = None if recorded_test is None else _finite(float(recorded_test))
        return float(recorded_valid), same_test, "recorded on the same data"
    trained_on = tags.get(TAG_DATASET)
    if trained_on is not None and trained_on != dataset.name:
        return f"it was trained on dataset {trained_on!r}, whose ids are not those of {dataset.name!r}"
    ks = (metric_cutoff(metric),)
    try:
        python_model = model.unwrap_python_model()
        valid = float(rescore(python_model, dataset, split, "valid", ks).values[metric])
    except (NotScorableError, MlflowException) as err:
        return " ".join(str(err).split())
    try:
        test: float | None = float(rescore(python_model, dataset, split, "test", ks).values[metric])
    except NotScorableError:
        test = None  # reported only; the validation part decides
    return valid, test, "re-scored from the registry on this split"


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
