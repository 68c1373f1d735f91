"""One more worker of a model's Optuna study: rebuild its objective from what the study records, run trials.

A study created by ``gnnrec run`` (or by a first worker, :func:`start_study`) records its trial budget and
everything its objective needs (:data:`tasks.tune.OBJECTIVE_ATTR`: the data and split settings, the base
training configuration, the searched training settings, the seed). :func:`join_study` reads them back,
rebuilds the same data on this machine (``data_dir`` may differ: the files are checked to be the same by the
study's name, which holds the dataset's fingerprint and the split's key), and runs trials with
:func:`tasks.tune.tune` until the study holds its budget, counted over every worker in the shared storage.
Plain functions, no Prefect, no MLflow.
"""

from __future__ import annotations

import socket
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import DataConfig, SplitConfig

if TYPE_CHECKING:
    import optuna

    from tasks.pipeline_config import PipelineParams
    from tasks.prepare import PreparedData
    from tasks.train import TrainConfig
    from tasks.tune import TuneProgress, TuneResult


class StudyNotJoinableError(ValueError):
    """The study is not in the storage, records no objective, or this machine's data differ from it."""


@dataclass(frozen=True)
class StudyObjective:
    """What a study's objective is built from, as the study records it.

    Attributes:
        data: The data source and its filters.
        split: How the interactions are split.
        allow_duplicates: Whether repeated rows pass the data contract.
        min_interactions: The contract's minimum number of interactions.
        base: The base training configuration (the model family, epochs, metric, seed...).
        train_space: The searched training settings.
        seed: The study's sampler seed (each worker derives its own, :func:`tasks.tune.worker_seed`).
        pruner: The study's pruner (:data:`tasks.tune.PRUNERS`; ``median`` for a study that records none,
            made before the choice existed).
        budget: Finished trials the study should hold, or ``None`` when it records none.
    """

    data: DataConfig
    split: SplitConfig
    allow_duplicates: bool
    min_interactions: int
    base: TrainConfig
    train_space: dict[str, list[Any]]
    seed: int
    budget: int | None
    pruner: str = "median"


def objective_source(
    data: DataConfig, split: SplitConfig, *, allow_duplicates: bool, min_interactions: int
) -> dict[str, Any]:
    """The data part of a study's objective, as JSON (``source`` of :func:`tasks.tune.tune`)."""
    return {
        "data": data.model_dump(mode="json"),
        "split": split.model_dump(mode="json"),
        "allow_duplicates": allow_duplicates,
        "min_interactions": min_interactions,
    }


def read_objective(study: optuna.Study) -> StudyObjective:
    """The objective ``study`` records.

    Raises:
        StudyNotJoinableError: The study records none (created by hand, or by a version before workers).
    """
    from tasks.train import TrainConfig
    from tasks.tune import OBJECTIVE_ATTR, study_budget

    recorded = study.user_attrs.get(OBJECTIVE_ATTR)
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("source"), Mapping):
        raise StudyNotJoinableError(
            f"The study {study.study_name} does not record how to rebuild its objective (it was not created "
            "by gnnrec run or gnnrec tune-worker --config). Start it with one of them."
        )
    source = recorded["source"]
    return StudyObjective(
        data=DataConfig.model_validate(source["data"]),
        split=SplitConfig.model_validate(source["split"]),
        allow_duplicates=bool(source.get("allow_duplicates", False)),
        min_interactions=int(source.get("min_interactions", 10)),
        base=TrainConfig.model_validate({**recorded["train"], "progress": False}),
        train_space={k: list(v) for k, v in dict(recorded.get("train_space") or {}).items()},
        seed=int(recorded.get("seed", 0)),
        budget=study_budget(study),
        pruner=str(recorded.get("pruner", "median")),
    )


def studies_in(storage: str) -> list[tuple[str, int | None, int]]:
    """``(name, budget, finished trials)`` of every study in ``storage``, by name."""
    from optuna.trial import TrialState

    from tasks.study_storage import open_storage
    from tasks.tune import BUDGET_ATTR

    rdb = open_storage(storage)
    out = []
    for summary in rdb.get_all_studies():
        finished = rdb.get_all_trials(
            summary._study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )
        budget = summary.user_attrs.get(BUDGET_ATTR)
        out.append(
            (summary.study_name, int(budget) if isinstance(budget, int | float) else None, len(finished))
        )
    return sorted(out)


def default_worker() -> int:
    """A worker number for a process that was given none: from its host and pid, never 0 (the creator's)."""
    import os

    return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 999_999 + 1


def _study_name_of(prepared: PreparedData, base: TrainConfig, train_space: Mapping[str, Any]) -> str:
    from tasks.register.lineage import split_key
    from tasks.tune import study_name, trial_settings_key

    return study_name(
        prepared.dataset.fingerprint,
        split_key(prepared.split),
        base.model,
        trial_settings_key(base, train_space),
    )


def join_study(
    study: str,
    storage: str,
    *,
    worker: int,
    data_dir: Path | None = None,
    device: str | None = None,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    progress: Callable[[TuneProgress], None] | None = None,
    poll_s: float | None = None,
) -> TuneResult:
    """Run trials of the running study ``study`` until it holds its budget (every worker's trials counted).

    Args:
        study: The study's name (``gnnrec run`` logs it; :func:`studies_in` lists them).
        storage: The study storage's SQLAlchemy URL, shared with the other workers.
        worker: This worker's number (seeds its sampler apart from the others'; 0 is the creator's).
        data_dir: Where the data files are on this machine, when not where the study's creator read them.
        device: Where to train (``None``: the study's base configuration's device).
        n_trials: A new budget for the study (``None``: the one it records).
        timeout_s: Wall-time budget of this worker, in seconds.
        progress: As for :func:`tasks.tune.tune`.
        poll_s: Seconds between looks at the storage while other workers' trials fill the budget.

    Returns:
        The study's best (whichever worker found it) and how many trials this worker finished.

    Raises:
        StudyNotJoinableError: No such study, no recorded objective, or this machine's data are not the
            study's.
    """
    import optuna

    from tasks.prepare import prepare_data
    from tasks.study_storage import open_storage
    from tasks.tune import POLL_S, tune

    try:
        loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
    except KeyError:
        names = [name for name, _, _ in studies_in(storage)]
        raise StudyNotJoinableError(
            f"No study {study} in the storage {_redacted(storage)}; it holds "
            + (", ".join(names) if names else "no study yet (start gnnrec run first)")
            + "."
        ) from None
    objective = read_objective(loaded)
    if objective.budget is None and n_trials is None:
        raise StudyNotJoinableError(f"The study {study} records no trial budget: give --trials N.")
    data = objective.data
    if data_dir is not None:
        data = data.model_copy(update={"data_dir": data_dir})
    prepared = prepare_data(
        data,
        objective.split,
        allow_duplicates=objective.allow_duplicates,
        min_interactions=objective.min_interactions,
    )
    found = _study_name_of(prepared, objective.base, objective.train_space)
    if found != study:
        raise StudyNotJoinableError(
            f"The data read here give the study {found}, not {study}: this machine's files differ from those "
            "the study was started on. Point --data-dir at the same files."
        )
    base = objective.base if device is None else objective.base.model_copy(update={"device": device})
    return tune(
        prepared.graphs,
        prepared.split,
        base,
        study=study,
        storage=storage,
        n_trials=n_trials,
        seed=objective.seed,
        timeout_s=timeout_s,
        train_space=objective.train_space,
        progress=progress,
        worker=worker,
        poll_s=POLL_S if poll_s is None else poll_s,
        pruner=objective.pruner,
    )


def start_study(
    params: PipelineParams,
    model: str,
    storage: str,
    *,
    worker: int,
    progress: Callable[[TuneProgress], None] | None = None,
    poll_s: float | None = None,
) -> TuneResult:
    """Create (or join) the study ``gnnrec run`` would tune ``model`` in with ``params``, and run its trials.

    The study is named as the pipeline names it, records ``params.n_trials`` as its budget and the objective,
    so that other workers join it by name (:func:`join_study`) or by the same settings (this function).

    Args:
        params: The run's settings (data, split, trials, epochs, metric, seed...); ``timeout_s`` bounds
            this worker.
        model: The model family to tune.
        storage: The study storage's SQLAlchemy URL, shared with the other workers.
        worker: This worker's number (0 seeds its sampler as a lone ``gnnrec run`` would).
        progress: As for :func:`tasks.tune.tune`.
        poll_s: Seconds between looks at the storage while other workers' trials fill the budget.
    """
    from tasks.prepare import prepare_data
    from tasks.tune import POLL_S, tune

    prepared = prepare_data(
        params.data,
        params.split,
        allow_duplicates=params.allow_duplicates,
        min_interactions=params.min_interactions,
    )
    base = params.train_config(model, params.metric or "ndcg@20")
    space = params.train_space_for(model)
    name = _study_name_of(prepared, base, space)
    return tune(
        prepared.graphs,
        prepared.split,
        base,
        study=name,
        storage=storage,
        n_trials=params.n_trials,
        extra_trials=params.extra_trials,
        timeout_s=params.timeout_s,
        seed=params.seed,
        train_space=space,
        pruner=params.pruner,
        progress=progress,
        worker=worker,
        source=objective_source(
            params.data,
            params.split,
            allow_duplicates=params.allow_duplicates,
            min_interactions=params.min_interactions,
        ),
        poll_s=POLL_S if poll_s is None else poll_s,
    )


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (a URL SQLAlchemy cannot parse: show it as given)
        return url
