"""Kill a pipeline run mid-trial: no record stays RUNNING and no process is left behind.

A real run (tests/flows/kill_target.py: temporary Prefect server, MLflow and Optuna stores in a temporary
folder) is killed while a trial trains. ``SIGTERM`` closes its runs and trials on the way out; ``SIGKILL``
cannot, so the next run's reconciliation (:mod:`tasks.reconcile`) closes them. Either way the temporary
Prefect server dies with its parent. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tasks.reconcile import reconcile_mlflow, reconcile_optuna
from tasks.study_storage import open_storage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def running_trials(storage: str) -> list[int]:
    rdb = open_storage(storage)  # the run may be creating the tables at this very moment
    return [
        t.number
        for s in rdb.get_all_studies()
        for t in rdb.get_all_trials(s._study_id, states=(optuna.trial.TrialState.RUNNING,))
    ]


def running_runs(tracking_uri: str) -> list[str]:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("gnnrec-kill")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
    return [r.info.run_id for r in runs]


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (this test's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                stat = (entry / "stat").read_text()
                if stat.rpartition(")")[2].split()[0] != "Z":  # a zombie is dead, only not yet reaped
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_run(tmp_path: Path, api_url: str | None = None) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    if api_url:  # a persistent server, which outlives the run
        env["PREFECT_API_URL"] = api_url
    env.update(
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(tmp_path / "prefect-home"),  # also the marker of every process of this run
        OMP_NUM_THREADS="1",
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "flows" / "kill_target.py"), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    tracking = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'store' / 'optuna.db'}"

    def trial_running() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early:\n{(tmp_path / 'run.log').read_text()[-3000:]}")
        return (tmp_path / "store" / "optuna.db").exists() and bool(running_trials(storage))

    wait_for(trial_running, 300, "a running trial")
    return proc, tracking, storage


def assert_no_orphans(tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
    """The run ended and so did every process it started (its temporary Prefect server above all)."""
    server_pid = int((tmp_path / "server.pid").read_text())
    proc.wait(timeout=60)

    def server_alive() -> bool:
        try:
            state = Path(f"/proc/{server_pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return False
        return state != "Z"

    marker = str(tmp_path / "prefect-home")
    wait_for(lambda: not server_alive() and not processes_with(marker), 30, "the run's processes to end")
    pgrep = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert pgrep.stdout.strip() == ""


def test_sigkill_mid_trial_leaves_nothing_running_after_reconcile(tmp_path: Path) -> None:
    proc, tracking, storage = start_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    assert_no_orphans(tmp_path, proc)
    assert proc.returncode == -signal.SIGKILL

    # Nothing could close them: the parent and model runs and the trial are still RUNNING...
    stale_runs, stale_trials = running_runs(tracking), running_trials(storage)
    assert len(stale_runs) == 2 and len(stale_trials) == 1
    # ...until the next run reconciles them, since their owner process is gone.
    assert sorted(reconcile_mlflow(tracking, "gnnrec-kill")) == sorted(stale_runs)
    assert [number for _, number in reconcile_optuna(storage)] == stale_trials
    assert running_runs(tracking) == [] and running_trials(storage) == []
    client = MlflowClient(tracking_uri=tracking)
    assert {client.get_run(r).info.status for r in stale_runs} == {"KILLED"}
    assert reconcile_mlflow(tracking, "gnnrec-kill") == [] and reconcile_optuna(storage) == []


def test_sigterm_mid_trial_closes_its_records_on_the_way_out(tmp_path: Path) -> None:
    proc, tracking, storage = start_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert_no_orphans(tmp_path, proc)
    assert proc.returncode == -signal.SIGTERM  # it died of the signal, after closing

    assert running_runs(tracking) == [] and running_trials(storage) == []
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("gnnrec-kill")
    statuses = {
        r.data.tags.get("gnnrec.role"): r.info.status for r in client.search_runs([experiment.experiment_id])
    }
    assert statuses == {"pipeline": "KILLED", "model": "KILLED"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_leaves_the_flow_run_on_a_persistent_server_in_a_terminal_state(
    prefect_harness, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C killed the process before Prefect heard of it: the server showed the run Running forever."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL

    proc, tracking, storage = start_run(tmp_path, api_url=PREFECT_API_URL.value())
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == -sig, (tmp_path / "run.log").read_text()[-3000:]
    assert running_runs(tracking) == [] and running_trials(storage) == []

    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("gnnrec-kill")
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`gnnrec.role` = 'pipeline'"
    )
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(flow_run_id).state
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert state is not None and state.is_final() and state.is_crashed(), state
    # SIGTERM goes through Prefect's handler, whose message says "termination signal"; SIGINT through ours.
    assert ("termination signal" if sig == signal.SIGTERM else "SIGINT") in (state.message or ""), state
    assert [t.name for t in task_runs if not t.state or not t.state.is_final()] == []
