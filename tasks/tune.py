"""Optuna tuning of one model family with the very same :func:`tasks.train.train` a plain run uses.

One study per (dataset fingerprint, split, model, trial settings), stored durably (SQLite under the data
folder by default, any SQLAlchemy URL), so a study resumes across runs and can be shared by several
workers. The sampler is TPE, seeded; the pruner (ASHA on epochs by default, :func:`make_pruner`) is fed
the validation metric after every validation epoch, so poor trials stop early. The first trial of a study
is the model's known-good point (:func:`prior_params`), so the search starts from the recipe found by hand.
The search space is the model's own (:meth:`models.base.Recommender.search_space`), merged over its defaults,
plus, when a ``train_space`` is given (the pipeline gives each model's own, :meth:`models.base.Recommender.
train_space`, unless told otherwise), categorical choices of training settings (the negative sampler and
its pool, the loss, the learning rate...): on HetRec Last.fm the negative sampler moved LightGCN's
validation NDCG@10 more than any model hyperparameter did (benchmarks/RESULTS.md). Those trial parameters
are named ``train.<field>`` and come back in :attr:`TuneResult.best_train`.

Tuning reads the validation part only: the test part is removed from the split the objective sees.

Budget: ``n_trials`` is the number of finished (complete or pruned) trials the study should hold (a rerun
with nothing changed adds none, which is what makes a rerun cheap and reproducible), ``extra_trials`` adds
that many more, and ``timeout_s`` bounds the wall time of this call. The budget is recorded in the study and
counted in the storage after every trial, not once at the start, so several workers sharing one study (this
call, ``gnnrec tune-worker`` processes on other machines) together run exactly the budget
(:func:`wait_for_room`, :func:`_has_slot`, Optuna's ``MaxTrialsCallback``). A failed trial (its worker was
killed, its objective raised) measured nothing and does not count: another trial takes its slot. Each worker
seeds its sampler differently (:func:`worker_seed`), so their start-up (random) trials differ.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.reconcile import TRIAL_OWNER_ATTR, Owner

if TYPE_CHECKING:
    import optuna

    from tasks.graphs import Graphs
    from tasks.split import Split
    from tasks.train import TrainConfig, TrainedModel

FINISHED_STATES = ("COMPLETE", "PRUNED")

#: States of a trial that will end finished unless it fails: it holds a slot of the budget meanwhile.
_PENDING_STATES = ("RUNNING", "WAITING")

#: The study's user attribute holding its budget: the finished trials it should hold (set by the run that
#: asked for them; a joining worker reads it).
BUDGET_ATTR = "gnnrec.budget"

#: The study's user attribute holding what a joining worker needs to rebuild the objective: the data source
#: and split (``source``), the base training configuration (``train``), the searched training settings
#: (``train_space``) and the sampler seed (``seed``).
OBJECTIVE_ATTR = "gnnrec.objective"

#: The user attribute of a trial that found the budget met by other workers' trials when it started (it ran
#: nothing, ended ``FAIL`` and is given to no callback).
SURPLUS_ATTR = "gnnrec.surplus"

#: Seconds between two looks at the storage while other workers' trials fill the rest of the budget.
POLL_S = 1.0

#: The user attribute of a trial whose objective raised: the error's type and message, for its MLflow run.
FAIL_REASON_ATTR = "fail_reason"

#: Prefix of the Optuna parameters that are training settings rather than model hyperparameters.
TRAIN_PREFIX = "train."

#: The :class:`~tasks.train.TrainConfig` fields a ``train_space`` may search (what changes the model learnt,
#: not the run's plumbing: epochs, metric, device, seed and the like stay fixed by the run).
SEARCHABLE_TRAIN_FIELDS = frozenset(
    {
        "lr",
        "batch_size",
        "loss",
        "temperature",
        "negative_sampler",
        "num_negatives",
        "sampling",
        "sampler_alpha",
        "sampler_pool_size",
        "lr_scale",
    }
)

#: The searchable setting that is not a ``TrainConfig`` field: a factor on the run's learning rate that moves
#: with the batch size (:func:`with_train_settings`), so that the two are searched together.
LR_SCALE = "lr_scale"

#: The pruners a study can use. ``asha``: successive halving on epochs (Optuna's asynchronous
#: ``SuccessiveHalvingPruner``), a trial goes on past a rung only when it is in the top third of the trials
#: that reached it; ``hyperband``: the same over several brackets of first rungs; ``median``: stop a trial
#: below the median of earlier trials at the same epoch; ``none``: run every trial to its end.
PRUNERS = ("asha", "hyperband", "median", "none")

#: The default pruner: multi-fidelity on epochs, so that a bad trial costs a few epochs, not a run.
DEFAULT_PRUNER = "asha"

#: The reduction factor of ``asha`` and ``hyperband``: a third of the trials go on at each rung.
REDUCTION_FACTOR = 3


def check_train_space(space: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Validate a training-settings search space: searchable fields, non-empty choices, each a valid value.

    Returns:
        The space with lists as values.

    Raises:
        ValueError: naming the field or the value that is not allowed.
    """
    from pydantic import ValidationError

    from tasks.train import TrainConfig

    out: dict[str, list[Any]] = {}
    for name, choices in space.items():
        if name not in SEARCHABLE_TRAIN_FIELDS:
            raise ValueError(
                f"train_space: '{name}' cannot be searched; choose among {sorted(SEARCHABLE_TRAIN_FIELDS)}"
            )
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices:
            raise ValueError(f"train_space: '{name}' needs a non-empty list of values, got {choices!r}")
        for value in choices:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"train_space: '{name}' values must be numbers or strings, got {value!r}")
            if name == LR_SCALE:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ValueError(f"train_space: {value!r} is not a valid 'lr_scale': a positive number")
                continue
            try:
                TrainConfig.model_validate({name: value})
            except ValidationError as err:
                raise ValueError(f"train_space: {value!r} is not a valid '{name}': {err}") from None
        out[name] = list(choices)
    return out


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trial parameters split into (model hyperparameters, training settings without the prefix)."""
    model = {k: v for k, v in params.items() if not k.startswith(TRAIN_PREFIX)}
    train = {k[len(TRAIN_PREFIX) :]: v for k, v in params.items() if k.startswith(TRAIN_PREFIX)}
    return model, train


def with_train_settings(
    config: TrainConfig, hparams: Mapping[str, Any], settings: Mapping[str, Any]
) -> TrainConfig:
    """``config`` with these model hyperparameters and training settings (the settings validated).

    ``lr_scale`` (:data:`LR_SCALE`) sets the learning rate from ``config``'s own learning rate and batch
    size: ``lr = config.lr * lr_scale * sqrt(batch_size / config.batch_size)`` (the square-root scaling
    rule for Adam, Malladi et al., NeurIPS 2022), with ``lr`` and ``batch_size`` those of ``settings`` when
    they are given there. So the batch size and the learning rate are searched together: a larger batch
    takes a larger step at the same ``lr_scale``.
    """
    if not settings:
        return config.model_copy(update={"hparams": dict(hparams)})
    chosen = dict(settings)
    scale = chosen.pop(LR_SCALE, None)
    merged = {**config.model_dump(), **chosen, "hparams": dict(hparams)}
    if scale is not None:
        merged["lr"] = (
            float(merged["lr"]) * float(scale) * math.sqrt(merged["batch_size"] / config.batch_size)
        )
    return type(config).model_validate(merged)


@dataclass(frozen=True)
class TuneResult:
    """The outcome of tuning one model family.

    Attributes:
        study_name: The Optuna study.
        model: Model family.
        metric: The validation metric maximised.
        best_params: Best trial's suggested parameters (only the searched ones; training settings are
            prefixed ``train.``).
        best_hparams: The full model hyperparameters to train with (best params over the model's defaults).
        best_train: The best trial's searched training settings (field name to value; empty when none).
        best_value: Best validation value; NaN when no trial completed.
        best_trial: Number of the best trial, or -1.
        n_trials: Finished (complete or pruned) trials in the study after this call.
        n_new_trials: Finished trials run by this call (other workers' not included).
        n_pruned: Pruned trials in the study.
        seconds: Wall time of this call.
        warm_started: Whether known-good hyperparameters were enqueued as the first new trial.
        prior_enqueued: Whether the model's known-good point (:meth:`models.base.Recommender.search_prior`)
            was enqueued (it runs unless the study already holds it).
        pruner: The pruner the study ran with (:data:`PRUNERS`).
        best_trained: The best trial's trained model when this call ran that trial itself (``None`` when
            another worker or an earlier run did): :func:`reusable_trained` lets the pipeline keep it
            instead of training the same configuration again.
    """

    study_name: str
    model: str
    metric: str
    best_params: dict[str, Any] = field(default_factory=dict)
    best_hparams: dict[str, Any] = field(default_factory=dict)
    best_train: dict[str, Any] = field(default_factory=dict)
    best_value: float = math.nan
    best_trial: int = -1
    n_trials: int = 0
    n_new_trials: int = 0
    n_pruned: int = 0
    seconds: float = 0.0
    warm_started: bool = False
    prior_enqueued: bool = False
    pruner: str = DEFAULT_PRUNER
    best_trained: TrainedModel | None = field(default=None, compare=False, repr=False)


def reusable_trained(tuned: TuneResult, config: TrainConfig) -> TrainedModel | None:
    """The best trial's model when it is exactly what training ``config`` again would give, else ``None``.

    A trial trains with the run's configuration and seed, the searched choices and a time cap; training the
    final model with the chosen configuration repeats it epoch for epoch (seeded, deterministic on one
    device). So the trial's model (its best-validation state) is kept when its configuration equals
    ``config`` apart from the time cap and the cap did not stop it (a trial cut short by the tuning
    deadline would have trained longer). The returned model carries ``config`` as its configuration.
    """
    kept = tuned.best_trained
    if kept is None or kept.stop_reason == "max_seconds":
        return None
    if kept.config.model_copy(update={"max_seconds": config.max_seconds}) != config:
        return None
    return dataclasses.replace(kept, config=config)


@dataclass(frozen=True)
class TuneProgress:
    """One step of a tuning run, for a progress bar or a log line (see ``progress`` in :func:`tune`).

    Attributes:
        model: Model family.
        event: ``evaluation`` (a trial was evaluated on the validation part) or ``trial`` (a trial ended).
        trial: The trial's number in the study.
        trials_done: Trials this call has finished (``trial`` events count the one that just ended).
        budget: Trials the study still needed when this call started (other workers of the study run some).
        metric: The validation metric.
        epoch: The epoch evaluated (``evaluation``), or the trial's last evaluated epoch.
        value: The trial's metric at that epoch (``evaluation``) or its final value (``trial``), if any.
        best: The best completed trial's value in the study so far (earlier runs included), if any.
        state: ``COMPLETE``, ``PRUNED`` or ``FAIL`` for a ``trial`` event; ``None`` for an ``evaluation``.
    """

    model: str
    event: str
    trial: int
    trials_done: int
    budget: int
    metric: str
    epoch: int | None = None
    value: float | None = None
    best: float | None = None
    state: str | None = None

    def line(self) -> str:
        """One line for a log: ``mf trial 3 (2/4 done) epoch 5: ndcg@20 0.1234, best 0.1300``."""

        def fmt(value: float | None) -> str:
            return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"

        head = f"{self.model} trial {self.trial} ({self.trials_done}/{self.budget} done)"
        if self.event == "evaluation":
            return f"{head} epoch {self.epoch}: {self.metric} {fmt(self.value)}, best {fmt(self.best)}"
        return (
            f"{head} {self.state}: {self.metric} {fmt(self.value)} after epoch {self.epoch or 0}, "
            f"best {fmt(self.best)}"
        )


@dataclass
class _Tally:
    """What :func:`tune` counts while it runs, for its progress events."""

    done: int = 0
    finished: int = 0
    best: float | None = None
    epoch: int = 0
    epoch_seconds: list[float] = field(default_factory=list)


#: ``TrainConfig`` fields that do not change what a trial measures (or that the trial itself chooses).
_NOT_MEASURED = frozenset({"model", "hparams", "progress", "device", "eval_chunk_size"})


def trial_settings_key(base: TrainConfig, train_space: Mapping[str, Sequence[Any]] | None = None) -> str:
    """A short hash of every setting that changes what a trial of ``base`` measures.

    The fixed training settings (learning rate, batch size, loss, sampler, epochs budget, patience,
    ``max_seconds``, evaluation cut-offs and the selection metric, seed) and the searched training space:
    trials that differ in any of them score different things and must not share a study, or a warm start
    would enqueue the best parameters found under other settings. Searched fields are left out of the fixed
    part (each trial picks its own). The device is left out: it does not change what is measured.

    Args:
        base: The run's base training configuration (:meth:`PipelineParams.train_config`).
        train_space: The searched training settings, as given to :func:`tune_model`.

    Returns:
        Ten hex characters.
    """
    import hashlib
    import json

    space = {name: list(values) for name, values in sorted((train_space or {}).items())}
    fixed = base.model_dump(mode="json", exclude=set(_NOT_MEASURED | set(space)))
    payload = json.dumps({"fixed": fixed, "space": space}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def study_name(dataset_fingerprint: str, split_key: str, model: str, settings_key: str) -> str:
    """The study of a (dataset, split, model, trial settings): ``<model>-<fingerprint>-<split>-<settings>``.

    ``settings_key`` is :func:`trial_settings_key` of the run's training configuration, so that a study only
    ever holds trials measured the same way.
    """
    return f"{model}-{dataset_fingerprint}-{split_key}-{settings_key}"


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of worker ``worker`` of a study whose runs are seeded ``seed``.

    Worker 0 (the run that created the study, a lone run) uses ``seed`` itself, so a single run stays
    reproducible; every other worker gets its own seed derived from both, so two workers never draw the
    same start-up (random) trials.
    """
    if worker == 0:
        return seed
    import hashlib

    digest = hashlib.sha256(f"{seed}:{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def first_rung(max_epochs: int) -> int:
    """The first rung of ``asha`` and ``hyperband``: the epoch where the first trials are compared.

    ``max_epochs // 27`` (at least 1), so that four rungs (27x, 9x, 3x and 1x that) fit in the epoch cap,
    Hyperband's own layout with a reduction factor of 3: 300 epochs give rungs at 11, 33, 99 and 297.
    """
    return max(1, max_epochs // REDUCTION_FACTOR**3)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``name`` (:data:`PRUNERS`) for trials of at most ``max_epochs`` epochs.

    The steps are epochs: :func:`tune` reports the validation metric at each validated epoch, numbered
    from 1, so the rungs of ``asha`` and ``hyperband`` are epoch counts (:func:`first_rung`).

    Raises:
        ValueError: An unknown name.
    """
    import optuna

    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first_rung(max_epochs), reduction_factor=REDUCTION_FACTOR
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=first_rung(max_epochs),
            max_resource=max(max_epochs, first_rung(max_epochs)),
            reduction_factor=REDUCTION_FACTOR,
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}: choose among {', '.join(PRUNERS)}")


def open_study(
    name: str, storage: str | None, seed: int, *, pruner: str = DEFAULT_PRUNER, max_epochs: int = 400
) -> optuna.Study:
    """Create or load the study ``name`` (maximising) with a seeded TPE sampler and the pruner ``pruner``.

    An RDB storage is opened with the trial heartbeat on (:func:`tasks.study_storage.open_storage`), so the
    trial of a worker that dies is marked ``FAIL`` by the next worker that looks. The TPE sampler's
    ``constant_liar`` (Optuna's default) keeps concurrent workers from sampling beside each other's running
    trials. The pruner is not stored with the study: each process opens it with its own (:func:`make_pruner`
    of ``max_epochs``, the trials' epoch cap).
    """
    import optuna

    from tasks.study_storage import open_storage

    return optuna.create_study(
        study_name=name,
        storage=open_storage(storage, heartbeat=True) if storage else None,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=make_pruner(pruner, max_epochs),
    )


def prior_params(model_cls: Any, space: Mapping[str, Sequence[Any]], base: TrainConfig) -> dict[str, Any]:
    """The trial parameters of the model's known-good point (:meth:`models.base.Recommender.search_prior`).

    Model hyperparameters: the prior's, else the model's defaults, each only where the search space holds
    it (inside a range, among the choices). Training settings (``train.<field>``) for each field of
    ``space``: the prior's value, else the run's own (``base``; 1.0 for ``lr_scale``), when it is among the
    choices. A parameter left out is drawn by the sampler.
    """
    from models.base import describe_search_space

    prior = model_cls.search_prior()
    defaults = {**model_cls.default_hparams(), **base.hparams}
    params: dict[str, Any] = {}
    for name, spec in describe_search_space(model_cls).items():
        value = prior.hparams.get(name, defaults.get(name))
        if value is not None and _fits(value, spec):
            params[name] = value
    for name, choices in space.items():
        value = prior.train.get(name, 1.0 if name == LR_SCALE else getattr(base, name, None))
        if value in choices:
            params[TRAIN_PREFIX + name] = value
    return params


def _fits(value: Any, spec: Mapping[str, Any]) -> bool:
    """Whether ``value`` lies in a search-space entry of :func:`models.base.describe_search_space`."""
    if spec["type"] == "categorical":
        return value in spec["choices"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if spec["type"] == "int" and not float(value).is_integer():
        return False
    return bool(spec["low"] <= value <= spec["high"])


def _without_test(split: Split) -> Split:
    """The split with an empty test part, so that tuning cannot read it."""
    try:
        return dataclasses.replace(split, test=np.zeros((0, 2), dtype=np.int64))
    except (TypeError, ValueError):  # a split type that cannot be rebuilt: it is still only given to train()
        return split


def _metric_value(values: dict[str, float], metric: str) -> float | None:
    for key in (metric, f"valid_{metric}", f"valid/{metric}"):
        if key in values:
            return float(values[key])
    return None


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else str(v))
        for k, v in row.items()
    }


def _state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def finished_trials(study: optuna.Study) -> int:
    """Complete and pruned trials in the study (what the budget counts)."""
    counts = _state_counts(study)
    return sum(counts.get(state, 0) for state in FINISHED_STATES)


def wait_for_room(
    study: optuna.Study, target: int, *, deadline: float | None = None, poll_s: float = POLL_S
) -> bool:
    """Whether this worker should start another trial of ``study``, waiting while others may fill the budget.

    ``False`` once the study holds ``target`` finished trials (or at ``deadline``, a ``time.monotonic()``
    value); ``True`` when the finished trials and those still running or queued leave room, or a queued
    trial waits to be run. Meanwhile, the trials of dead workers (no heartbeat for the grace period) are
    marked ``FAIL``, which frees their slots: so a worker waits for the others' last trials instead of
    leaving, and runs a replacement when one of them is killed.
    """
    import warnings

    import optuna

    while True:
        with warnings.catch_warnings():  # fail_stale_trials is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        counts = _state_counts(study)
        finished = sum(counts.get(state, 0) for state in FINISHED_STATES)
        if finished >= target:
            return False
        if counts.get("WAITING", 0) or finished + counts.get("RUNNING", 0) < target:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def _has_slot(study: optuna.Study, number: int, target: int) -> bool:
    """Whether trial ``number`` is within the budget: fewer than ``target`` live trials numbered before it.

    Trial numbers are given under a lock on the study row, in creation order, and a trial that ends finished
    was never failed; so every finished trial had all the earlier finished ones counted here when it started,
    and no more than ``target`` trials ever finish, however many workers raced for the last slots.
    """
    live = FINISHED_STATES + _PENDING_STATES
    ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and t.state.name in live)
    return ahead < target


class _BudgetMet(Exception):
    """A trial started after other workers' trials had filled the budget (it runs nothing)."""


class _QuietBudgetMet(logging.Filter):
    """Drop Optuna's "trial failed" warning (with its traceback) for a trial that only found no slot."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _BudgetMet))


def study_budget(study: optuna.Study) -> int | None:
    """The finished trials ``study`` should hold, as recorded by the run that asked for them."""
    value = study.user_attrs.get(BUDGET_ATTR)
    return int(value) if isinstance(value, int | float) else None


def best_known_params(study: optuna.Study) -> dict[str, Any] | None:
    """The best completed trial's params, or ``None`` when the study has none."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return None
    return dict(max(complete, key=lambda t: t.value).params)  # type: ignore[arg-type,return-value]


def tune(
    graphs: Graphs,
    split: Split,
    base_config: TrainConfig,
    *,
    study: str,
    storage: str | None,
    n_trials: int | None,
    extra_trials: int = 0,
    timeout_s: float | None = None,
    seed: int = 0,
    warm_start: dict[str, Any] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    train_fn: Callable[..., TrainedModel] | None = None,
    train_space: Mapping[str, Sequence[Any]] | None = None,
    progress: Callable[[TuneProgress], None] | None = None,
    worker: int = 0,
    source: Mapping[str, Any] | None = None,
    poll_s: float = POLL_S,
    pruner: str = DEFAULT_PRUNER,
    prior: bool = True,
) -> TuneResult:
    """Tune ``base_config.model`` on the validation part.

    Each trial trains with ``base_config`` whose ``hparams`` are the model's search-space suggestions merged
    over its defaults (and over ``base_config.hparams``), and whose training settings in ``train_space``
    are chosen by the trial (categorical, named ``train.<field>``). After each validation the metric is
    reported to the pruner; a pruned trial stops there. Each trial stores its per-epoch history in the user
    attribute ``history`` (for the MLflow callback, see :func:`tasks.register.trial_logger`).

    Args:
        graphs: Training graphs.
        split: The split; its test part is hidden from the objective.
        base_config: Training settings; ``metric`` is the objective.
        study: Study name (see :func:`study_name`).
        storage: SQLAlchemy URL of the study storage (``None``: in memory, gone after the call).
        n_trials: Finished trials the study should hold; only the missing ones run, by this call and any
            other worker of the study together. Recorded in the study (:data:`BUDGET_ATTR`); ``None``: the
            budget recorded there (a worker joining a running study).
        extra_trials: Trials to run on top of that.
        timeout_s: Wall-time budget of this call, in seconds.
        seed: The study's sampler seed; this worker's is :func:`worker_seed` of it.
        warm_start: Hyperparameters to try first (enqueued unless the study already tried them).
        callbacks: Optuna callbacks run after each trial, a failed one included: a trial that raised is given
            to them (state ``FAIL``, the error in its user attribute ``fail_reason``) before the error
            propagates.
        train_fn: The trainer (default :func:`tasks.train.train`); tests may pass a fake.
        train_space: Training settings to search: a :class:`~tasks.train.TrainConfig` field (one of
            :data:`SEARCHABLE_TRAIN_FIELDS`) to the values to try, e.g. ``{"negative_sampler": ["uniform",
            "hard"], "sampler_pool_size": [16, 32, 64]}``.
        progress: Called with a :class:`TuneProgress` after every validation of a trial and when each trial
            ends (complete, pruned or failed), for progress bars and logs.
        worker: This worker's number among the study's workers (0: the run that created it).
        source: What another worker needs to rebuild the data (the data and split settings, as JSON);
            recorded in the study with ``base_config``, ``train_space`` and ``seed``
            (:data:`OBJECTIVE_ATTR`), so that ``gnnrec tune-worker --study NAME`` can join it.
        poll_s: Seconds between looks at the storage while other workers' trials fill the budget.
        pruner: How trials are stopped early (:data:`PRUNERS`, :func:`make_pruner`); recorded in the study
            for the workers that join it.
        prior: Enqueue the model's known-good point (:func:`prior_params`) so that it is evaluated first
            (after ``warm_start``), then explore.

    Time: with ``timeout_s``, no trial starts after it, none starts when the time left would not reach the
    first rung (:func:`first_rung` epochs at the pace measured so far), and a running trial stops after the
    epoch that passes it (``max_seconds``) and counts with its best validation so far.

    Returns:
        The best parameters and value (read from the storage: the study's best, whichever worker found it),
        and how many trials ran.

    Raises:
        ValueError: ``n_trials`` is ``None`` and the study records no budget.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from models import get_model

    if train_fn is None:
        from tasks.train import train as default_train

        train_fn = default_train
    trainer: Callable[..., TrainedModel] = train_fn

    started = time.perf_counter()
    model_cls = get_model(base_config.model)
    metric = base_config.metric
    if pruner not in PRUNERS:
        raise ValueError(f"unknown pruner {pruner!r}: choose among {', '.join(PRUNERS)}")
    optuna_study = open_study(
        study, storage, worker_seed(seed, worker), pruner=pruner, max_epochs=base_config.epochs
    )
    space = check_train_space(train_space or {})
    finished_before = finished_trials(optuna_study)
    if n_trials is None:
        recorded = study_budget(optuna_study)
        if recorded is None:
            raise ValueError(f"the study {study} records no trial budget: give the number of trials")
        target = recorded + extra_trials
    else:
        target = max(n_trials, finished_before) + extra_trials
    if n_trials is not None or extra_trials:
        optuna_study.set_user_attr(BUDGET_ATTR, target)
    if source is not None:
        optuna_study.set_user_attr(
            OBJECTIVE_ATTR,
            {
                "source": dict(source),
                "train": base_config.model_dump(mode="json", exclude={"progress"}),
                "train_space": space,
                "seed": seed,
                "pruner": pruner,
            },
        )
    to_run = max(0, target - finished_before)
    space_names = _space_names(model_cls) | {TRAIN_PREFIX + name for name in space}
    warm = False
    if warm_start and to_run > 0:
        known = {name for name in warm_start if name in space_names}
        params = {k: v for k, v in warm_start.items() if k in known}
        if params:
            optuna_study.enqueue_trial(params, skip_if_exists=True)
            warm = True
    prior_queued = False
    if prior and to_run > 0:
        known_point = prior_params(model_cls, space, base_config)
        if known_point:
            optuna_study.enqueue_trial(known_point, skip_if_exists=True)
            prior_queued = True
    tuning_split = _without_test(split)
    owner = Owner.current().as_attr()
    known_values = [
        t.value for t in optuna_study.trials if t.state.name == "COMPLETE" and t.value is not None
    ]
    tally = _Tally(best=max(known_values) if known_values else None)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def report(event: str, trial: int, **fields: Any) -> None:
        if progress is not None:
            progress(
                TuneProgress(
                    model=base_config.model,
                    event=event,
                    trial=trial,
                    trials_done=tally.done,
                    budget=to_run,
                    metric=metric,
                    best=tally.best,
                    **fields,
                )
            )

    raised: list[int] = []  # numbers of the trials whose objective raised (Optuna gives them to no callback)

    def objective(trial: optuna.Trial) -> float:
        if not _has_slot(optuna_study, trial.number, target):  # another worker took the last slot first
            trial.set_user_attr(SURPLUS_ATTR, True)
            trial.set_user_attr(FAIL_REASON_ATTR, "the budget was met by other workers' trials; nothing ran")
            raise _BudgetMet(f"trial {trial.number}: the study's {target} trials are taken")
        try:
            return run_trial(trial)
        except optuna.TrialPruned:
            raise
        except (
            Exception
        ) as err:  # the trial fails (and the call with it: catch=()); say so before it propagates
            trial.set_user_attr(FAIL_REASON_ATTR, f"{type(err).__name__}: {err}"[:2000])
            raised.append(trial.number)
            tally.done += 1
            report("trial", trial.number, epoch=tally.epoch, state="FAIL")
            raise

    keep: dict[str, Any] = {}

    def run_trial(trial: optuna.Trial) -> float:
        # The owner lets a later run close this trial if the process dies while it runs (tasks.reconcile).
        trial.set_user_attr(TRIAL_OWNER_ATTR, owner)
        tally.epoch = 0
        suggested = model_cls.search_space(trial)
        hparams = {**model_cls.default_hparams(), **base_config.hparams, **suggested}
        settings = {
            name: trial.suggest_categorical(TRAIN_PREFIX + name, choices) for name, choices in space.items()
        }
        config = with_train_settings(base_config, hparams, settings)
        if deadline is not None:  # stop cleanly, after an epoch, when the tuning time is up
            left = max(deadline - time.monotonic(), 1e-3)
            cap = left if config.max_seconds is None else min(config.max_seconds, left)
            config = config.model_copy(update={"max_seconds": cap})
        history: list[dict[str, Any]] = []
        trial_started = time.monotonic()

        def on_epoch(epoch: int, values: dict[str, float]) -> None:
            history.append(_json_safe({"epoch": epoch, **values}))
            trial.set_user_attr("history", history)
            value = _metric_value(values, metric)
            tally.epoch = epoch
            tally.epoch_seconds.append((time.monotonic() - trial_started) / max(epoch, 1))
            report("evaluation", trial.number, epoch=epoch, value=value)
            if value is None or not math.isfinite(value):
                return
            trial.report(value, epoch)
            # A closed-form model is fitted once: there are no epochs left to save, and a pruned trial
            # would not count as a candidate.
            if not model_cls.closed_form and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with {metric} = {value:.4f}")

        trained = trainer(graphs, tuning_split, config, on_epoch=on_epoch)
        kept_value = keep.get("value")
        trial.set_user_attr("history", [_json_safe(dict(row)) for row in trained.history] or history)
        trial.set_user_attr("best_epoch", int(trained.best_epoch))
        values = dict(trained.best_valid.values) if trained.best_valid is not None else {}
        value = _metric_value(values, metric)
        if value is None:
            raise KeyError(
                f"train() reported no validation '{metric}' (got {sorted(values)}); is the valid part empty?"
            )
        if not math.isfinite(value):  # Optuna fails such a trial without an error: say why
            trial.set_user_attr(FAIL_REASON_ATTR, f"the validation {metric} is {value}")
        elif kept_value is None or value > kept_value:
            # Only the best model this call trained is held (one model in memory at most).
            keep.update(number=trial.number, value=value, trained=trained)
        return value

    def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        tally.done += 1
        if trial.state.name in FINISHED_STATES:
            tally.finished += 1
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        if trial.state.name == "COMPLETE" and trial.value is not None:
            tally.best = trial.value if tally.best is None else max(tally.best, trial.value)
        report("trial", trial.number, epoch=tally.epoch, value=value, state=trial.state.name)

    rung_epochs = first_rung(base_config.epochs) if pruner in ("asha", "hyperband") else 1

    def room_left(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if deadline is not None and tally.epoch_seconds:
            # A trial that cannot reach its first comparison in the time left would measure nothing useful.
            pace = float(np.median(tally.epoch_seconds[-50:]))
            if deadline - time.monotonic() < pace * rung_epochs:
                study.stop()
                return
        if not wait_for_room(study, target, deadline=deadline, poll_s=poll_s):
            study.stop()

    def skipping_surplus(
        callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None],
    ) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
        def call(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if not trial.user_attrs.get(SURPLUS_ATTR):
                callback(study, trial)

        return call

    if to_run > 0 and wait_for_room(optuna_study, target, deadline=deadline, poll_s=poll_s):
        optuna_logger = logging.getLogger("optuna")
        level = optuna_logger.level
        optuna_logger.setLevel(logging.WARNING)
        quiet = _QuietBudgetMet()
        optimize_logger = logging.getLogger("optuna.study._optimize")
        optimize_logger.addFilter(quiet)
        try:
            optuna_study.optimize(
                objective,
                timeout=timeout_s,
                callbacks=[
                    *(skipping_surplus(c) for c in (on_trial_end, *callbacks)),
                    # The budget is counted in the storage after every trial, every worker's included.
                    MaxTrialsCallback(target, states=tuple(TrialState[s] for s in FINISHED_STATES)),
                    room_left,
                ],
                catch=(_BudgetMet,),
                gc_after_trial=False,
            )
        except Exception:
            # Optuna runs the callbacks only after a trial that returned; the one that raised is FAIL in the
            # storage by now, and its MLflow run (tasks.register.trial_logger) must say so too.
            _run_callbacks_on_raised(optuna_study, raised, callbacks)
            raise
        finally:
            optimize_logger.removeFilter(quiet)
            optuna_logger.setLevel(level)

    trials = optuna_study.trials
    best_params = best_known_params(optuna_study) or {}
    best_model_params, best_train = split_params(best_params)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    best = max(complete, key=lambda t: t.value) if complete else None  # type: ignore[arg-type,return-value]
    return TuneResult(
        study_name=study,
        model=base_config.model,
        metric=metric,
        best_params=best_params,
        best_hparams={**model_cls.default_hparams(), **base_config.hparams, **best_model_params},
        best_train=best_train,
        best_value=float(best.value) if best is not None and best.value is not None else math.nan,
        best_trial=best.number if best is not None else -1,
        n_trials=sum(t.state.name in FINISHED_STATES for t in trials),
        n_new_trials=tally.finished,
        n_pruned=sum(t.state.name == "PRUNED" for t in trials),
        seconds=time.perf_counter() - started,
        warm_started=warm,
        prior_enqueued=prior_queued,
        pruner=pruner,
        best_trained=keep.get("trained") if best is not None and keep.get("number") == best.number else None,
    )


def _run_callbacks_on_raised(
    study: optuna.Study,
    numbers: Sequence[int],
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
) -> None:
    """Give the callbacks the trials whose objective raised, as Optuna stored them (``FAIL``, times set).

    Best effort: the trial's own error is what propagates, not a callback's.
    """
    by_number = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    for number in numbers:
        frozen = by_number.get(number)
        if frozen is None or frozen.state.name != "FAIL":
            continue
        for callback in callbacks:
            try:
                callback(study, frozen)
            except Exception:  # noqa: BLE001
                logging.getLogger(__name__).warning(
                    "a tuning callback failed on failed trial %d", frozen.number, exc_info=True
                )


def _space_names(model_cls: Any) -> set[str]:
    """The hyperparameter names a model's search space suggests (found with a recording fake trial)."""

    class _Recorder:
        def __init__(self) -> None:
            self.names: set[str] = set()

        def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
            self.names.add(name)
            return low

        def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
            self.names.add(name)
            return low

        def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
            self.names.add(name)
            return choices[0]

    recorder = _Recorder()
    model_cls.search_space(recorder)
    return recorder.names
