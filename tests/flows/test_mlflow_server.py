"""``gnnrec run`` against a real MLflow tracking server on PostgreSQL, and the server failing.

The server is ``mlflow server`` started here on 127.0.0.1 with a PostgreSQL backend store (a database made
and dropped per test by the ``postgres_db`` fixture) and a folder as its artifact store; the CLI runs as a
process of its own, as a user runs it. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli_common import EXIT_INFRASTRUCTURE
from flows.deploy import wait_for_http

BIN = Path(sys.executable).parent
#: The pipeline kept cheap: a small synthetic dataset, two models, few trials and epochs, one thread.
PIPELINE = (
    *("--models", "mf,lightgcn", "--trials", "2", "--epochs", "3", "--batch-size", "64"),
    *("--users", "30", "--items", "20", "--interactions", "300", "--device", "cpu"),
)
#: Seconds a server gets to answer /health (a loaded 2-core machine needs most of a minute).
STARTUP_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """An ``mlflow server`` process on a PostgreSQL backend store, restartable on the same store and port."""

    def __init__(self, backend: str, artifacts: Path, log: Path) -> None:
        self.backend, self.artifacts, self.log = backend, artifacts, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(BIN / "mlflow"),
            *("server", "--backend-store-uri", self.backend, "--artifacts-destination", str(self.artifacts)),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        if not wait_for_http(f"{self.url}/health", timeout_s=STARTUP_S):
            self.kill()
            pytest.fail(
                f"mlflow server did not answer within {STARTUP_S:g} s: {self.log.read_text()[-2000:]}"
            )

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash, not a clean stop)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(postgres_db: str, tmp_path: Path) -> Iterator[Server]:
    server = Server(postgres_db, tmp_path / "server-artifacts", tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def cli_env() -> dict[str, str]:
    # earlier tests in the same session may have left MLflow URIs in os.environ (mlflow.set_*_uri sets them)
    drop = ("PREFECT_API_URL", "MLFLOW_TRACKING", "MLFLOW_REGISTRY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    return env


def gnnrec(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "gnnrec"), "--threads", "1", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def model_runs(server: Server) -> list[dict]:
    """The per-model runs on the server, through its REST API (as any client sees them)."""
    body = json.dumps({"experiment_ids": ["1"], "filter": "tags.`gnnrec.role` = 'model'"}).encode()
    request = urllib.request.Request(
        f"{server.url}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return json.load(response).get("runs", [])


@pytest.mark.slow
@pytest.mark.postgres
def test_run_on_a_tracking_server_promotes_a_champion_and_survives_the_server_going_away(
    mlflow_server: Server, tmp_path: Path
) -> None:
    studies = tmp_path / "optuna.db"
    config = tmp_path / "mlflow.yml"
    # no artifact_location: the server keeps the artifacts (--artifacts-destination), proxied to clients
    config.write_text(
        f"tracking_uri: {mlflow_server.url}\nstudy_storage: sqlite:///{studies}\nregistered_model_name: srv\n"
    )

    first = gnnrec("run", *PIPELINE, "--mlflow-config", str(config), "--json", cwd=tmp_path)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    outcome = json.loads(out)
    assert outcome["decision"]["promoted"] is True and outcome["champion"] == "models:/srv@champion"
    assert sorted(row["status"] for row in outcome["leaderboard"]) == ["registered", "registered"]
    assert any((tmp_path / "server-artifacts").rglob("MLmodel"))  # written by the server, not the client
    assert not (tmp_path / "mlruns").exists()

    # A fresh process, knowing only the server, loads the champion and recommends for a user.
    load = (
        "import mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/srv@champion')\n"
        "print(model.predict(pd.DataFrame({'user': [1]}), params={'k': 5}).to_json(orient='records'))\n"
    )
    env = {**cli_env(), "MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_REGISTRY_URI": mlflow_server.url}
    loaded = subprocess.run(
        [sys.executable, "-c", load], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    rows = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and {r["user"] for r in rows} == {1}
    assert len({r["item"] for r in rows}) == 5

    # The server dies (SIGKILL) while a second run is training: exit 3, one paragraph, no traceback.
    import optuna

    trials_before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(f"sqlite:///{studies}")}
    seen = len(model_runs(mlflow_server))
    second = gnnrec("run", *PIPELINE, "--trials", "3", "--mlflow-config", str(config), cwd=tmp_path)
    deadline = time.monotonic() + 300
    while len(model_runs(mlflow_server)) == seen and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert second.poll() is None, "the second run ended before the server could be killed"
    mlflow_server.kill()
    out, err = second.communicate(timeout=600)
    assert second.returncode == EXIT_INFRASTRUCTURE, err[-3000:]
    assert "Traceback" not in err
    (message,) = [line for line in err.splitlines() if line.startswith("Error:")]
    assert f"The MLflow tracking server at {mlflow_server.url} stopped answering" in message

    # Nothing recorded is lost: the Optuna studies kept every trial, and once the server is back on the same
    # PostgreSQL store the first run, its versions and the champion are all there.
    trials_after = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(f"sqlite:///{studies}")}
    assert all(trials_after[name] >= n for name, n in trials_before.items())
    mlflow_server.start()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    assert client.get_run(outcome["parent_run_id"]).info.status == "FINISHED"
    champion = client.get_model_version_by_alias("srv", "champion")
    assert champion.version == outcome["decision"]["challenger_version"]
    assert len(client.search_model_versions("name = 'srv'")) >= 2


@pytest.mark.postgres
def test_a_wrong_postgresql_store_exits_3_at_once_with_the_fix(postgres_server: str, tmp_path: Path) -> None:
    from urllib.parse import urlsplit

    host = urlsplit(postgres_server).netloc
    cases = {
        f"postgresql+psycopg2://{host}/gnnrec_no_such_db": 'database "gnnrec_no_such_db" does not exist',
        f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/mlflow": "Start the database server",
    }
    for uri, expected in cases.items():
        config = tmp_path / "mlflow.yml"
        config.write_text(f"tracking_uri: {uri}\nstudy_storage: sqlite:///{tmp_path}/optuna.db\n")
        result = subprocess.run(
            [str(BIN / "gnnrec"), "run", "--mlflow-config", str(config), *PIPELINE],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == EXIT_INFRASTRUCTURE, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        (message,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert "The MLflow tracking store" in message and expected in message
        # MLflow alone retries for minutes; the probe answers before anything starts (no flow ran)
        assert "Flow run" not in result.stderr  # refused before any flow started


def test_a_tracking_server_gone_mid_run_reads_as_one_paragraph_naming_it() -> None:
    from mlflow.exceptions import MlflowException

    from flows.cli_common import infrastructure_message

    # MLflow's own wording when its HTTP client gives up on a server that was killed
    raised = MlflowException(
        "API request to http://127.0.0.1:5732/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5732): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/log-batch (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', "
        'port=5732): Failed to establish a new connection: [Errno 111] Connection refused"))'
    )
    message = infrastructure_message(raised)
    assert message is not None and "\n" not in message
    assert message.startswith(
        "The MLflow tracking server at http://127.0.0.1:5732 stopped answering during the run "
        "(connection refused)"
    )
    # other MLflow failures keep MLflow's own message
    other = infrastructure_message(MlflowException("RESOURCE_DOES_NOT_EXIST: Run 'x' not found"))
    assert other == "The MLflow tracking store failed: RESOURCE_DOES_NOT_EXIST: Run 'x' not found"
