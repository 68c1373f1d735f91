"""``gnnrec stack up|down`` on the local PostgreSQL: real servers, real databases, nothing mocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_common import EXIT_INFRASTRUCTURE
from flows.cli_stack import database_url
from flows.deploy import wait_for_http

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def post(port: int, path: str) -> list:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/{path}", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=90) as response:  # noqa: S310 (loopback; a loaded server is slow)
        return json.load(response)


def databases(admin: str) -> set[str]:
    import psycopg2

    connection = psycopg2.connect(admin)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


def drop(admin: str, names: list[str]) -> None:
    import psycopg2

    connection = psycopg2.connect(admin)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def test_database_urls_name_the_driver_and_refuse_other_servers() -> None:
    admin = "postgresql://postgres@127.0.0.1:5432"
    assert (
        database_url(admin, "gnnrec_prefect", "asyncpg")
        == "postgresql+asyncpg://postgres@127.0.0.1:5432/gnnrec_prefect"
    )
    assert (
        database_url(admin + "/postgres", "m", "psycopg2")
        == "postgresql+psycopg2://postgres@127.0.0.1:5432/m"
    )
    result = CliRunner().invoke(
        app, ["stack", "up", "--postgres", "mysql://root@127.0.0.1/x", "--state-dir", "/tmp/x"]
    )
    assert result.exit_code == EXIT_INFRASTRUCTURE and "not a PostgreSQL URL" in result.stderr


def test_stack_down_without_a_stack_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stack", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2 and "No stack is running" in result.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_stack_up_starts_both_servers_on_postgresql_and_stack_down_stops_them(
    postgres_server: str, tmp_path: Path
) -> None:
    admin = postgres_server
    suffix = uuid.uuid4().hex[:8]
    names = [f"gnnrec_t_prefect_{suffix}", f"gnnrec_t_mlflow_{suffix}", f"gnnrec_t_optuna_{suffix}"]
    prefect_port, mlflow_port = free_port(), free_port()
    state = tmp_path / "stack"
    server = urlsplit(admin).netloc
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    command = [
        str(BIN / "gnnrec"),
        *("stack", "up", "--postgres", f"postgresql://{server}", "--state-dir", str(state)),
        *("--prefect-db", names[0], "--mlflow-db", names[1], "--optuna-db", names[2]),
        *("--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port), "--no-deploy"),
    ]
    up = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_http(f"http://127.0.0.1:{prefect_port}/api/health", timeout_s=240), up.poll()
        assert wait_for_http(f"http://127.0.0.1:{mlflow_port}/health", timeout_s=240), up.poll()
        assert set(names) <= databases(admin)
        # both servers keep their state in PostgreSQL: their tables are in the stack's databases
        import psycopg2

        for name, table in ((names[0], "flow_run"), (names[1], "experiments")):
            connection = psycopg2.connect(f"postgresql://{server}/{name}")
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT to_regclass(%s)", (table,))
                    assert cursor.fetchone()[0] == table, (name, table)
            finally:
                connection.close()
        # the process work pool exists and the stack's worker polls it
        # (stack up creates it once both servers answer, so it may not exist yet at the first health answer)
        deadline = time.monotonic() + 120
        while not (pools := post(prefect_port, "work_pools/filter")) and time.monotonic() < deadline:
            time.sleep(1)
        assert [(p["name"], p["type"]) for p in pools] == [("gnnrec-local", "process")]
        deadline = time.monotonic() + 120
        while (
            not post(prefect_port, "work_pools/gnnrec-local/workers/filter") and time.monotonic() < deadline
        ):
            time.sleep(1)
        assert post(prefect_port, "work_pools/gnnrec-local/workers/filter"), "no worker polled the pool"
        written = (state / "mlflow.yml").read_text()
        assert f"tracking_uri: http://127.0.0.1:{mlflow_port}" in written and names[2] in written
        deadline = time.monotonic() + 60
        while not (state / "stack.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)

        down = subprocess.run(
            [str(BIN / "gnnrec"), "stack", "down", "--state-dir", str(state)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
        out, err = up.communicate(timeout=60)
        assert up.returncode == 0, err[-2000:]
        assert (
            "prefect worker start --pool gnnrec-local" in out
            and f"PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api" in out
        )
        assert not listening(prefect_port) and not listening(mlflow_port)
        assert not (state / "stack.json").exists()
    finally:
        if up.poll() is None:
            up.terminate()  # `stack up` stops what it started
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
        drop(admin, names)
