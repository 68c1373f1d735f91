"""Several workers on one Optuna study: an exact budget, apart-seeded samplers, one best, killed workers."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from tasks.study_storage import GRACE_ENV, HEARTBEAT_ENV, open_storage, trial_heartbeat
from tasks.train import TrainConfig
from tasks.tune import (
    BUDGET_ATTR,
    SURPLUS_ATTR,
    _has_slot,
    open_study,
    tune,
    wait_for_room,
    worker_seed,
)
from tests.tasks.test_tune import FakeTrainer, tiny_split


def base_config() -> TrainConfig:
    return TrainConfig(model="mf", epochs=3, progress=False, device="cpu")


class SlowTrainer(FakeTrainer):
    """The fake trainer, with a pause per epoch so that two workers' trials overlap."""

    def __init__(self, pause_s: float, epochs: int = 3) -> None:
        super().__init__(epochs=epochs)
        self.pause_s = pause_s

    def __call__(self, graphs, split, config, *, on_epoch=None):
        def slow(epoch, record):
            time.sleep(self.pause_s)
            if on_epoch is not None:
                on_epoch(epoch, record)

        return super().__call__(graphs, split, config, on_epoch=slow)


def test_worker_zero_keeps_the_run_seed_and_other_workers_get_their_own() -> None:
    assert worker_seed(7, 0) == 7
    seeds = {worker_seed(7, w) for w in range(1, 50)}
    assert len(seeds) == 49 and 7 not in seeds
    assert worker_seed(7, 3) == worker_seed(7, 3) != worker_seed(8, 3)


def test_heartbeat_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert trial_heartbeat() == (30, 120)
    monkeypatch.setenv(HEARTBEAT_ENV, "2")
    monkeypatch.setenv(GRACE_ENV, "3")
    assert trial_heartbeat() == (2, 4)  # the grace is at least two beats
    monkeypatch.setenv(GRACE_ENV, "soon")
    with pytest.raises(ValueError, match=GRACE_ENV):
        trial_heartbeat()


def test_the_study_storage_beats_and_fails_trials_whose_worker_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, "1")
    monkeypatch.setenv(GRACE_ENV, "1")
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat=True)
    assert (storage.heartbeat_interval, storage.grace_period) == (1, 2)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)  # one beat, then its worker "dies"
    time.sleep(3)
    assert wait_for_room(study, 1, deadline=time.monotonic() + 5, poll_s=0.1)  # its slot is free again
    assert study.trials[0].state.name == "FAIL"


def test_the_budget_is_recorded_and_a_joining_call_runs_only_what_is_missing(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(ValueError, match="records no trial budget"):
        tune(
            None,
            tiny_split(),
            base_config(),
            study="s",
            storage=storage,
            n_trials=None,
            train_fn=FakeTrainer(),
        )
    first = tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=3,
        seed=1,
        train_fn=FakeTrainer(),
    )
    assert optuna.load_study(study_name="s", storage=storage).user_attrs[BUDGET_ATTR] == 3
    joined = tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=None,
        seed=1,
        worker=4,
        train_fn=FakeTrainer(),
    )
    assert (joined.n_trials, joined.n_new_trials) == (3, 0)
    assert (joined.best_trial, joined.best_value) == (first.best_trial, first.best_value)
    more = tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=None,
        extra_trials=2,
        seed=1,
        worker=4,
        train_fn=FakeTrainer(),
    )
    assert (more.n_trials, more.n_new_trials) == (5, 2)


def test_a_worker_waits_while_other_workers_trials_fill_the_budget(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    other = open_study("s", storage, seed=0)
    running = [other.ask(), other.ask()]  # another worker's two trials, still running
    trainer = FakeTrainer()
    started = time.monotonic()
    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=2,
        timeout_s=1.5,
        worker=1,
        poll_s=0.1,
        train_fn=trainer,
    )
    assert time.monotonic() - started >= 1.5  # it waited for them, then its timeout ended the wait
    assert trainer.calls == [] and result.n_new_trials == 0
    for trial in running:
        other.tell(trial, 0.5)
    assert not wait_for_room(other, 2)


def test_a_trial_beyond_the_budget_counts_the_earlier_live_trials() -> None:
    study = optuna.create_study()
    done, fail, running = study.ask(), study.ask(), study.ask()
    study.tell(done, 1.0)
    study.tell(fail, state=optuna.trial.TrialState.FAIL)
    late = study.ask()
    # Trials 0 (complete) and 2 (running) hold two slots; the failed one holds none.
    assert _has_slot(study, late.number, 3) and not _has_slot(study, late.number, 2)
    assert _has_slot(study, running.number, 2)


def _worker(storage: str, worker: int, n_trials: int, out) -> None:
    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="shared",
        storage=storage,
        n_trials=n_trials,
        seed=3,
        worker=worker,
        poll_s=0.1,
        train_fn=SlowTrainer(0.05),
    )
    out.put(
        (
            worker,
            result.n_new_trials,
            result.n_trials,
            result.best_trial,
            result.best_value,
            result.best_params,
        )
    )


@pytest.mark.postgres
def test_two_processes_on_one_postgres_study_run_exactly_the_budget(postgres_db: str) -> None:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(postgres_db, w, 8, out)) for w in (1, 2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    study = optuna.load_study(study_name="shared", storage=postgres_db)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    others = [t for t in study.trials if t not in finished]
    assert len(finished) == 8
    assert all(t.state.name == "FAIL" and t.user_attrs.get(SURPLUS_ATTR) and not t.params for t in others)
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == len(params)  # the two samplers drew different start-up trials
    assert sum(r[1] for r in results) == 8 and all(r[1] > 0 for r in results)  # both worked
    assert {r[2] for r in results} == {8}
    assert results[0][3:] == results[1][3:]  # the same best (trial, value, params) read by each worker
    best = max((t for t in finished if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert results[0][3] == best.number


def _victim(storage: str, ready) -> None:
    class Hangs(FakeTrainer):
        def __call__(self, graphs, split, config, *, on_epoch=None):
            if on_epoch is not None:
                on_epoch(1, {"epoch": 1, "loss": 1.0, "ndcg@20": 0.1})
            ready.set()
            time.sleep(600)  # killed here, mid-trial

    tune(
        None,
        tiny_split(),
        base_config(),
        study="k",
        storage=storage,
        n_trials=3,
        seed=3,
        train_fn=Hangs(),
        pruner="median",  # the survivor's trials are not compared with the killed one's first epoch
    )


@pytest.mark.postgres
def test_a_worker_killed_mid_trial_fails_its_trial_and_the_other_completes_the_budget(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEARTBEAT_ENV, "1")  # inherited by both workers (fork); production beats every 30 s
    monkeypatch.setenv(GRACE_ENV, "2")
    ctx = mp.get_context("fork")
    ready, out = ctx.Event(), ctx.Queue()
    victim = ctx.Process(target=_victim, args=(postgres_db, ready))
    victim.start()
    assert ready.wait(60), "the victim never started its trial"
    survivor = ctx.Process(target=_worker_on_k, args=(postgres_db, out))
    survivor.start()
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)  # mid-trial: nothing of it can close its trial
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    ran, total = out.get(timeout=120)
    survivor.join(30)
    assert survivor.exitcode == 0
    study = optuna.load_study(study_name="k", storage=postgres_db)
    states = [t.state.name for t in study.trials]
    assert states[0] == "FAIL"  # the killed worker's trial, failed once its heartbeat stopped
    assert study.trials[0].intermediate_values == {1: 0.1}  # what it had recorded is kept
    assert (ran, total) == (3, 3)
    assert states.count("COMPLETE") + states.count("PRUNED") == 3
    assert np.isfinite(study.best_value)


def _worker_on_k(storage: str, out) -> None:
    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="k",
        storage=storage,
        n_trials=3,
        seed=3,
        worker=5,
        poll_s=0.2,
        train_fn=SlowTrainer(0.05),
        pruner="median",
    )
    out.put((result.n_new_trials, result.n_trials))


def test_the_study_records_what_a_joining_worker_rebuilds_the_objective_from(tmp_path: Path) -> None:
    from tasks.config import DataConfig, SplitConfig
    from tasks.tune_worker import objective_source, read_objective

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    data = DataConfig(synthetic_users=40, synthetic_items=50, synthetic_interactions=600)
    split = SplitConfig(seed=9)
    base = base_config().model_copy(update={"lr": 0.02})
    tune(
        None,
        tiny_split(),
        base,
        study="s",
        storage=storage,
        n_trials=2,
        seed=11,
        train_fn=FakeTrainer(),
        train_space={"loss": ["bpr", "softmax"]},
        source=objective_source(data, split, allow_duplicates=True, min_interactions=20),
    )
    recorded = read_objective(optuna.load_study(study_name="s", storage=storage))
    assert (recorded.data, recorded.split) == (data, split)
    assert (recorded.allow_duplicates, recorded.min_interactions, recorded.seed) == (True, 20, 11)
    assert recorded.base == base.model_copy(update={"progress": False})
    assert recorded.train_space == {"loss": ["bpr", "softmax"]} and recorded.budget == 2


def test_a_worker_whose_data_differ_from_the_study_is_refused(tmp_path: Path) -> None:
    from tasks.config import DataConfig, SplitConfig
    from tasks.tune_worker import StudyNotJoinableError, join_study, objective_source

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = open_study("mf-not-these-data", storage, seed=0)
    data = DataConfig(synthetic_users=40, synthetic_items=50, synthetic_interactions=600)
    source = objective_source(data, SplitConfig(), allow_duplicates=False, min_interactions=10)
    study.set_user_attr(
        "gnnrec.objective",
        {"source": source, "train": base_config().model_dump(mode="json"), "train_space": {}, "seed": 0},
    )
    study.set_user_attr(BUDGET_ATTR, 2)
    with pytest.raises(StudyNotJoinableError, match="files differ"):
        join_study("mf-not-these-data", storage, worker=1)
    with pytest.raises(StudyNotJoinableError, match="No study mf-other.*mf-not-these-data"):
        join_study("mf-other", storage, worker=1)
    assert study.trials == []
