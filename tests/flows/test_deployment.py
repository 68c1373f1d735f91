"""A real Prefect server on loopback, the deployments served, a flow run created like the UI's Run button."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.deploy import wait_for_http
from tasks.config import DataConfig, SplitConfig
from tasks.pipeline_config import PipelineParams
from tasks.register import load_mlflow_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def test_deployment_run_from_the_api_completes_and_promotes(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = tmp_path / "mlflow.yml"
    config.write_text(
        "tracking_uri: sqlite:///store/mlflow.db\nartifact_location: store/artifacts\n"
        "registered_model_name: served\nstudy_storage: sqlite:///store/optuna.db\n"
    )
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "GNNREC_MLFLOW_CONFIG": str(config),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "OMP_NUM_THREADS": "2",  # the flow run's process default, which its `threads` parameter overrides
    }
    server_log, serve_log = (tmp_path / "server.log").open("wb"), (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    runner = None
    try:
        assert wait_for_http(f"{api}/health", timeout_s=150), (tmp_path / "server.log").read_text()[-3000:]
        runner = subprocess.Popen(
            [sys.executable, "-m", "flows.deploy"],
            env=env,
            cwd=REPO,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        params = PipelineParams(
            data=DataConfig(
                synthetic_users=40, synthetic_items=60, synthetic_interactions=900, synthetic_seed=3
            ),
            split=SplitConfig(seed=3),
            models=("mf", "lightgcn"),
            n_trials=1,
            # Enough to beat popularity (the promotion gate's floor); 2 epochs at lr 1e-3 did not always.
            epochs=10,
            lr=0.01,
            batch_size=256,
            device="cpu",
            threads=1,
            mlflow_config=config,
        )
        with temporary_settings(updates={PREFECT_API_URL: api}):
            deadline = time.monotonic() + 90
            while True:
                try:
                    with get_client(sync_client=True) as client:  # serve() registers them one by one
                        client.read_deployment_by_name("train-and-promote/manual")
                        client.read_deployment_by_name("retrain/weekly")
                    break
                except Exception:
                    assert runner.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, "the deployments were not registered in 90 s"
                    time.sleep(1)
            with get_client(sync_client=True) as client:
                weekly = client.read_deployment_by_name("retrain/weekly")
            assert weekly.schedules and weekly.schedules[0].schedule.cron == "0 3 * * 1"
            flow_run = run_deployment(
                "train-and-promote/manual",
                # The form's schema has no null branches: unset fields are left out, as the Run form does.
                parameters={"params": params.model_dump(mode="json", exclude_none=True)},
                timeout=300,
                poll_interval=2,
                as_subflow=False,
            )
        assert flow_run.state is not None and flow_run.state.is_completed(), (
            f"{flow_run.state}\n{(tmp_path / 'serve.log').read_text()[-4000:]}"
        )
    finally:
        if runner is not None:
            _stop(runner)
        _stop(server)

    settings = load_mlflow_settings(config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags.get("gnnrec.role") for r in runs} >= {"pipeline", "model", "trial"}
    (parent,) = [r for r in runs if r.data.tags.get("gnnrec.role") == "pipeline"]
    assert parent.data.params["torch_threads"] == "1"  # applied in the flow run's own process
    champion = client.get_model_version_by_alias("served", "champion")
    assert champion.tags["gnnrec.model_family"] in ("mf", "lightgcn")
