"""Is the champion usable? Load a registered version and say what is wrong with it, and how to fix it.

The promotion gate, ``gnnrec recommend`` and ``gnnrec serve`` all ask :func:`check_champion` before they rely
on ``models:/NAME@champion``: a champion whose artifacts were deleted or no longer load is reported as broken,
with the fix, instead of failing later with a traceback (or, for the gate, instead of being compared on
numbers recorded for a model that no longer exists). The gate replaces a broken champion with the next
challenger that passes its sanity floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.register.settings import MlflowSettings, mlflow_client
from tasks.register.versions import current_champion, load_version

#: What to do about a broken champion, for every message that reports one.
BROKEN_FIX = (
    "Fix: run `gnnrec run` (or `gnnrec retrain`); the promotion gate replaces a broken champion with the "
    "next valid challenger. Or restore the missing artifacts."
)


@dataclass(frozen=True)
class ChampionHealth:
    """Whether ``models:/NAME@alias`` points at a model that loads.

    Attributes:
        model_uri: ``models:/NAME@alias``.
        version: The version holding the alias; ``None`` when there is no champion.
        problem: What is wrong (no champion, or it does not load); ``None`` when it is usable.
        source: Where the champion's artifacts are registered (``None`` without a champion).
        model: The loaded pyfunc model when usable (so a caller need not load it twice).
    """

    model_uri: str
    version: str | None
    problem: str | None = None
    source: str | None = None
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether there is a champion and it loads."""
        return self.version is not None and self.problem is None

    @property
    def broken(self) -> bool:
        """Whether there is a champion that does not load."""
        return self.version is not None and self.problem is not None

    def message(self) -> str:
        """One paragraph for a person: what is wrong and what to do (empty when usable)."""
        if self.ok:
            return ""
        if self.version is None:
            return f"There is no champion ({self.model_uri}) yet: {self.problem} Run `gnnrec run` first."
        return (
            f"The champion {self.model_uri} (v{self.version}) is broken: {self.problem}; its artifacts were "
            f"registered at {self.source}. {BROKEN_FIX}"
        )


def check_champion(settings: MlflowSettings) -> ChampionHealth:
    """Find the champion and try to load it.

    Args:
        settings: Registry settings (name and alias).

    Returns:
        Its health; ``model`` holds the loaded pyfunc model when it is usable.
    """
    uri = f"models:/{settings.registered_model_name}@{settings.promotion_alias}"
    champion = current_champion(settings)
    if champion is None:
        return ChampionHealth(uri, None, problem="no version holds the alias.")
    version = str(champion.version)
    model, problem = load_version(settings, version)
    return ChampionHealth(
        uri, version, problem=problem, source=_artifact_location(settings, champion), model=model
    )


def _artifact_location(settings: MlflowSettings, version: Any) -> str:
    """Where a version's files are: its logged model's artifact folder (MLflow 3), else its source."""
    source = str(version.source)
    if source.startswith("models:/m-"):
        try:
            logged = mlflow_client(settings).get_logged_model(source.removeprefix("models:/"))
        except Exception:  # noqa: BLE001 - only for the message: the source is still a useful answer
            return source
        return f"{logged.artifact_location} ({source})"
    return source
