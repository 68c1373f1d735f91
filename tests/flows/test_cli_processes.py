"""Processes: ``gnnrec ui`` refuses a taken port and stops every child on SIGTERM; two first runs on a fresh
store do not race on MLflow's or Optuna's schema creation."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def settings_file(folder: Path) -> Path:
    path = folder / "mlflow.yml"
    path.write_text(
        "tracking_uri: sqlite:///store/mlflow.db\nartifact_location: store/artifacts\n"
        "study_storage: sqlite:///store/optuna.db\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ui_on_a_taken_port_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app, ["ui", "--prefect-port", str(port), "--mlflow-config", str(settings_file(tmp_path))]
        )
    assert result.exit_code == 2, result.output
    assert f"Port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.output


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        parents, frontier = frontier, set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in parents and int(entry.name) not in found:
                found.add(int(entry.name))
                frontier.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc for the process tree")
def test_sigterm_to_ui_stops_every_child_and_frees_the_ports(tmp_path: Path) -> None:
    prefect_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    log = tmp_path / "ui.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            *(
                "-m",
                "flows.cli",
                "ui",
                "--prefect-port",
                str(prefect_port),
                "--mlflow-port",
                str(mlflow_port),
            ),
            *("--mlflow-config", str(settings_file(tmp_path)), "--startup-timeout", "400"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 420
        while True:
            assert proc.poll() is None, f"gnnrec ui exited: {log.read_text()[-3000:]}"
            children |= _children(proc.pid)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prefect_port}/api/health", timeout=2):
                    if _listening(mlflow_port):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"servers did not start in 420 s: {log.read_text()[-3000:]}"
            time.sleep(1)
        time.sleep(2)
        children |= _children(proc.pid)
        assert len(children) >= 3  # prefect server, mlflow ui, the deployments (and their workers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [c for c in children if _alive(c)], "children outlived gnnrec ui"
        assert not _listening(prefect_port) and not _listening(mlflow_port)
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


_FIRST_TOUCH = """
import sys, time
from pathlib import Path
from flows.cli_common import load_settings
while time.time() < float(sys.argv[1]):  # both processes start creating the store at the same moment
    time.sleep(0.001)
load_settings(Path(sys.argv[2]))
print("ok")
"""


@pytest.mark.slow
def test_two_first_runs_on_a_fresh_store_do_not_race(tmp_path: Path) -> None:
    config = settings_file(tmp_path)
    start = time.time() + 8  # after both interpreters have imported MLflow
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_TOUCH, str(start), str(config)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and output.strip().endswith("ok"), output[-3000:]
