"""tasks.reconcile: owners, closing on a signal, and reconciling what a dead process left RUNNING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tasks import reconcile
from tasks.reconcile import OpenRecords, Owner, claim_run, closing_on_signals


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_is_gone_only_when_its_process_surely_is() -> None:
    me = Owner.current()
    assert not me.is_gone()
    assert Owner(me.host, dead_pid(), me.started).is_gone()
    assert not Owner("another-host.example", dead_pid()).is_gone()  # cannot know: left alone
    if me.started:  # same pid, another start time: a new process reused the number
        assert Owner(me.host, me.pid, str(int(me.started) + 1)).is_gone()
    assert Owner.from_tags(me.tags()) == me and Owner.from_attr(me.as_attr()) == me
    assert Owner.from_tags({}) is None and Owner.from_attr("x") is None


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("exp", artifact_location=(tmp_path / "art").as_uri())
    return uri, client, experiment


def test_reconcile_mlflow_closes_runs_of_dead_owners_only(store) -> None:
    uri, client, experiment = store
    dead, alive, unowned = (client.create_run(experiment).info.run_id for _ in range(3))
    gone = Owner(socket.gethostname(), dead_pid(), "1")
    for key, value in gone.tags().items():
        client.set_tag(dead, key, value)
    claim_run(uri, alive, extra_tags={"prefect.flow_run_id": "abc"})
    assert client.get_run(alive).data.tags["prefect.flow_run_id"] == "abc"

    assert reconcile.reconcile_mlflow(uri, "exp") == [dead]
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING"  # this process still runs it
    assert client.get_run(unowned).info.status == "RUNNING"  # no owner: maybe someone else's, left alone
    assert reconcile.reconcile_mlflow(uri, "no-such-experiment") == []


def test_reconcile_optuna_fails_trials_of_dead_owners_only(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert reconcile.reconcile_optuna(f"sqlite:///{tmp_path / 'absent.db'}") == []
    assert not (tmp_path / "absent.db").exists()  # reconciling does not create a store
    study = optuna.create_study(study_name="s", storage=storage)
    orphan, mine = study.ask(), study.ask()
    orphan.set_user_attr(reconcile.TRIAL_OWNER_ATTR, Owner(socket.gethostname(), dead_pid(), "1").as_attr())
    mine.set_user_attr(reconcile.TRIAL_OWNER_ATTR, Owner.current().as_attr())
    study.ask()  # names no owner

    assert reconcile.reconcile_optuna(storage) == [("s", orphan.number)]
    states = [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == ["FAIL", "RUNNING", "RUNNING"]
    # On its way out, this process closes its own trials.
    assert reconcile.fail_running_trials(storage, owner=Owner.current()) == [("s", mine.number)]


def test_a_signal_closes_the_open_records_then_ends_the_process(store, tmp_path: Path) -> None:
    uri, client, experiment = store
    parent, child = (client.create_run(experiment).info.run_id for _ in range(2))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    trial = optuna.create_study(study_name="s", storage=storage).ask()
    trial.set_user_attr(reconcile.TRIAL_OWNER_ATTR, Owner.current().as_attr())
    records = OpenRecords()
    records.add_run(uri, parent)
    records.add_run(uri, child)
    records.add_storage(storage)
    ended: list[int] = []
    before = signal.getsignal(signal.SIGINT)
    with closing_on_signals(records, then=ended.append):
        os.kill(os.getpid(), signal.SIGINT)
    assert ended == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
    assert {client.get_run(r).info.status for r in (parent, child)} == {"KILLED"}
    assert optuna.load_study(study_name="s", storage=storage).trials[0].state.name == "FAIL"
    assert records.runs == {}


def test_sigterm_goes_on_to_the_earlier_handler(store) -> None:
    uri, client, experiment = store
    run = client.create_run(experiment).info.run_id
    records = OpenRecords()
    records.add_run(uri, run)
    seen: list[str] = []

    def earlier(signum, frame) -> None:
        seen.append(f"earlier saw {client.get_run(run).info.status}")

    previous = signal.signal(signal.SIGTERM, earlier)
    try:
        with closing_on_signals(records, then=lambda signum: seen.append("then")):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["earlier saw KILLED", "then"]  # closed before Prefect's handler runs


def test_before_ending_the_process_the_orchestrator_is_told(store) -> None:
    """Before the process dies of the signal, before_exit runs (after the records are closed): the flow marks
    its Prefect flow run crashed there, which no one could do once the process is gone."""
    uri, client, experiment = store
    run = client.create_run(experiment).info.run_id
    records = OpenRecords()
    records.add_run(uri, run)
    seen: list[str] = []

    def tell(signum: int) -> None:
        seen.append(f"told {signal.Signals(signum).name}, run {client.get_run(run).info.status}")
        raise ConnectionError("the server is gone")  # swallowed: the process still ends

    with closing_on_signals(records, before_exit=tell, then=lambda signum: seen.append("then")):
        os.kill(os.getpid(), signal.SIGINT)
    assert seen == ["told SIGINT, run KILLED", "then"]
