"""Several processes opening one fresh Optuna storage at the same moment all get it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import optuna
import pytest
from sqlalchemy.exc import DatabaseError

import tasks.study_storage
from tasks.study_storage import open_storage


def _open(url: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    barrier.wait()
    try:
        open_storage(url)
        out.put("ok")
    except Exception as err:  # noqa: BLE001 (reported to the test)
        out.put(f"{type(err).__name__}: {err}")


def test_concurrent_opens_of_a_fresh_storage_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")  # optuna is already imported: the children start at once, together
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'r{round_}' / 'optuna.db'}"
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(url, barrier, out)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(out.get(timeout=5) for _ in procs) == ["ok"] * 4
        # The schema is whole: a study can be created and used.
        study = optuna.create_study(storage=open_storage(url), study_name="s")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        assert len(study.trials) == 1


def test_other_database_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(tasks.study_storage.time, "sleep", pauses.append)
    (tmp_path / "not-a-db").write_text("plain text, not SQLite" * 100)
    with pytest.raises(DatabaseError, match="not a database"):
        open_storage(f"sqlite:///{tmp_path / 'not-a-db'}")
    assert pauses == []


@pytest.mark.postgres
def test_concurrent_opens_of_a_fresh_postgres_storage_all_succeed(postgres_db: str) -> None:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(postgres_db, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(out.get(timeout=5) for _ in procs) == ["ok"] * 4
    study = optuna.create_study(storage=open_storage(postgres_db), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=postgres_db).trials) == 2
