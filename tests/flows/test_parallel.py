"""Models in parallel: train-and-promote on a real Dask LocalCluster, and a scheduler that is not there.

The flow test runs the real Prefect engine, a real ``LocalCluster`` (2 worker processes, 1 thread each),
and real MLflow and Optuna SQLite stores in a temporary folder. Two models tune at once on the two workers;
a third model, known only to the test's process (the workers are fresh processes that never registered it),
fails on its worker, and must not sink the other two. The same two models run one after another as well,
in stores of their own: each model's trials must be the same under the same seed whichever runner ran them.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from models.base import MODELS
from models.mf import MFBPR
from tasks.register import TAG_FAMILY, TAG_ROLE, load_mlflow_settings
from tests.flows.test_train_and_promote import task_states, tiny_params, write_settings

pytestmark = pytest.mark.dask


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OnlyHereMF(MFBPR):
    """An MF registered in the test's process only: a Dask worker process does not know it."""

    name = "onlyheremf"


def flow_logs(flow_run_id: Any) -> list[str]:
    """Every log line of a flow run and its task runs, the workers' included, as stored by the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=len(messages)
            )
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages


def trial_values(storage: str) -> dict[str, list[float | None]]:
    """Each family's trial values, in trial order, from an Optuna storage."""
    values: dict[str, list[float | None]] = {}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        values[name.split("-")[0]] = [trial.value for trial in study.trials]
    return values


def run_in(folder: Path, **overrides: Any) -> tuple[Any, Any]:
    from flows.train_and_promote import train_and_promote

    folder.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setitem(MODELS, "onlyheremf", OnlyHereMF)
        config = write_settings(folder)
        params = tiny_params(config).model_copy(update=overrides)
        state = train_and_promote(params, return_state=True)
    return state, load_mlflow_settings(config)


@pytest.mark.slow
def test_models_run_at_once_on_a_local_dask_cluster(prefect_harness, tmp_path: Path) -> None:
    state, settings = run_in(
        tmp_path / "dask",
        models=("mf", "lightgcn", "onlyheremf"),
        parallel=2,
        n_trials=2,
    )
    assert state.is_completed(), state.message
    outcome = state.result()

    # Both known models were registered; the unknown one failed on its worker with the registry's reason.
    assert sorted(v.family for v in outcome.versions) == ["lightgcn", "mf"]
    assert set(outcome.failed) == {"onlyheremf"}
    assert outcome.failed["onlyheremf"].startswith("UnknownModelError: Unknown model 'onlyheremf'")
    rows = {row["model"]: row for row in outcome.leaderboard}
    assert rows["onlyheremf"]["status"] == "failed"
    assert rows["mf"]["status"] == rows["lightgcn"]["status"] == "registered"

    # One champion: the better of the two by validation metric.
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    champion = client.get_model_version_by_alias("recsys", "champion")
    best = max(outcome.versions, key=lambda v: v.valid_value)
    assert str(champion.version) == str(best.version)
    assert outcome.decision.promoted

    # The branches ran as model-branch tasks with their stages nested, on worker processes.
    states = task_states(state.state_details.flow_run_id)
    assert states["model-mf"] == states["model-lightgcn"] == "Completed"
    assert states["model-onlyheremf"] == "Failed"
    assert states["tune-mf"] == states["register-lightgcn"] == "Completed"
    # Each worker took the graphs from the flow's cached data step instead of receiving them pickled.
    graph_states = sorted(v for k, v in states.items() if k.startswith("build-graphs"))
    # (The flow's own step is Completed, or Cached when an earlier test of the session built these graphs.)
    assert len(graph_states) == 4 and graph_states[:3] == ["Cached"] * 3

    # Each model ran in a worker process of its own, with one torch thread, and its log lines reached the
    # flow run's log.
    pids = {}
    for line in flow_logs(state.state_details.flow_run_id):
        found = re.match(r"^(\w+) runs in process (\d+) with (\d+) torch thread", line)
        if found:
            pids[found[1]] = int(found[2])
            assert found[3] == "1", line
    assert pids["mf"] != pids["lightgcn"] and os.getpid() not in pids.values(), pids

    # MLflow: the children of the two models finished, the failed one is closed FAILED, nothing RUNNING.
    experiment = client.get_experiment_by_name("gnnrec-test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    model_runs = {r.data.tags[TAG_FAMILY]: r for r in runs if r.data.tags.get(TAG_ROLE) == "model"}
    assert model_runs["mf"].info.status == model_runs["lightgcn"].info.status == "FINISHED"
    assert model_runs["onlyheremf"].info.status == "FAILED"
    assert not [r for r in runs if r.info.status == "RUNNING"]

    # Determinism per model whatever the runner: the same two models one after another, in other stores.
    sequential, seq_settings = run_in(tmp_path / "sequential", models=("mf", "lightgcn"), n_trials=2)
    assert sequential.is_completed(), sequential.message
    parallel_trials = trial_values(settings.study_storage)
    sequential_trials = trial_values(seq_settings.study_storage)
    for family in ("mf", "lightgcn"):
        assert parallel_trials[family] == sequential_trials[family], family
        assert all(value is not None for value in parallel_trials[family])


def test_the_local_cluster_has_one_thread_per_worker_and_glibc_malloc_tuning() -> None:
    from flows.parallel import model_branch_runner
    from tasks.pipeline_config import PipelineParams

    with model_branch_runner(PipelineParams()) as runner:
        assert runner is None  # parallel 1: the flow's own runner
    with model_branch_runner(PipelineParams(parallel=2)) as runner:
        workers = runner.client.scheduler_info(n_workers=-1)["workers"]
        assert sorted(w["nthreads"] for w in workers.values()) == [1, 1]
        # Dask's default MALLOC_TRIM_THRESHOLD_ made torch 3.5x slower in a worker: it must not be set.
        environs = runner.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(environs.values()) == [None, None]
        assert os.getpid() not in runner.client.run(os.getpid).values()


def test_the_cli_passes_parallel_and_dask_address_to_the_flow(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app

    args = ["run", "--parallel", "3", "--dask-address", "tcp://10.0.0.1:8786", "--show-config"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["parallel"] == 3 and shown["dask_address"] == "tcp://10.0.0.1:8786"
    assert (
        CliRunner().invoke(app, ["run", "--dask-address", "not an address", "--show-config"]).exit_code == 2
    )


def test_a_dask_scheduler_that_is_not_there_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.parallel import DaskUnavailableError, probe_dask_scheduler

    address = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(DaskUnavailableError, match=f"No Dask scheduler answers at {address}"):
        probe_dask_scheduler(address, timeout_s=2)

    monkeypatch.chdir(tmp_path)
    config = write_settings(tmp_path)
    result = CliRunner().invoke(
        app, ["run", "--mlflow-config", str(config), "--models", "mf", "--dask-address", address]
    )
    assert result.exit_code == 3, result.output
    assert f"No Dask scheduler answers at {address}" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "store").exists()  # nothing was written: no MLflow store, no Optuna study
