"""``gnnrec ui``: a local Prefect server, the MLflow UI and the two deployments, on 127.0.0.1, until stopped.

The three children run in one process group of their own (the first child leads it), so Ctrl-C, SIGTERM or
SIGHUP to ``gnnrec ui`` stops each of them and whatever they started (the deployments' flow runs, uvicorn
workers) and frees the ports. Ports already taken are refused before anything starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from flows.cli_common import EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE, error_boundary, fail, load_settings
from flows.cli_pipeline import MlflowConfigOption, ThreadsOption
from flows.cli_serve import port_free

#: Seconds the children get to stop after SIGTERM before SIGKILL.
STOP_GRACE_S = 15.0


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop."""


def stop_group(procs: list[subprocess.Popen[bytes]], pgid: int | None, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group ``pgid`` (every child and grandchild), wait, then SIGKILL what is left."""
    if pgid is None:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)  # grandchildren outlive their parents otherwise
    except ProcessLookupError:
        pass
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def ui(
    ctx: typer.Context,
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.", min=1, max=65535)] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port.", min=1, max=65535)] = 5000,
    mlflow_config: MlflowConfigOption = None,
    threads: ThreadsOption = None,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the Prefect server to answer.", min=1.0)
    ] = 120.0,
) -> None:
    """Start a local Prefect server, the MLflow UI, and serve the deployments, on 127.0.0.1, until Ctrl-C.

    The deployments' flow runs are processes of their own: ``--threads`` becomes their default ``threads``
    parameter (the Run form can change it). Exit 2 when a port is taken; 3 when a server does not start.
    """
    from flows.deploy import wait_for_http
    from tasks.register.settings import is_tracking_server

    with error_boundary():
        settings = load_settings(mlflow_config)
    for name, port in (("--prefect-port", prefect_port), ("--mlflow-port", mlflow_port)):
        if not port_free("127.0.0.1", port):
            fail(f"Port {port} on 127.0.0.1 is already in use: stop what listens there or pass {name}.")
    if prefect_port == mlflow_port:
        fail("--prefect-port and --mlflow-port must differ.", EXIT_BAD_INPUT)
    bin_dir = Path(sys.executable).parent
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    env = {**os.environ, "PREFECT_API_URL": api_url}
    root_threads = ctx.find_root().params.get("threads")
    threads = threads if threads is not None else root_threads
    if threads:
        env["GNNREC_THREADS"] = str(threads)
    if mlflow_config is not None:
        env["GNNREC_MLFLOW_CONFIG"] = str(mlflow_config.resolve())
    procs: list[subprocess.Popen[bytes]] = []
    names: dict[int, str] = {}
    pgid: int | None = None

    def start(command: list[str]) -> None:
        nonlocal pgid
        # The first child leads a new process group; the others join it, so one killpg reaches them all.
        proc = subprocess.Popen(command, env=env, process_group=0 if pgid is None else pgid)
        pgid = proc.pid if pgid is None else pgid
        procs.append(proc)
        names[proc.pid] = " ".join(Path(command[0]).name.split() + command[1:3])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    code = 0
    try:
        prefect = [
            str(bin_dir / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(prefect_port),
        ]
        start(prefect)
        mlflow_url = settings.tracking_uri  # a tracking server already serves its UI
        if not is_tracking_server(settings.tracking_uri):
            mlflow_url = f"http://127.0.0.1:{mlflow_port}"
            start(
                [
                    str(bin_dir / "mlflow"),
                    *("ui", "--backend-store-uri", settings.tracking_uri),
                    *("--default-artifact-root", str(settings.artifact_location)),
                    *("--host", "127.0.0.1", "--port", str(mlflow_port)),
                ]
            )
        if not wait_for_http(f"{api_url}/health", timeout_s=startup_timeout):
            raise _Stop(f"the Prefect server did not start within {startup_timeout:g} s (--startup-timeout)")
        start([sys.executable, "-m", "flows.deploy"])
        typer.echo(
            f"Prefect UI: http://127.0.0.1:{prefect_port}  (Deployments -> train-and-promote/manual -> Run)"
        )
        typer.echo(f"MLflow UI:  {mlflow_url}")
        typer.echo("Ctrl-C stops what this command started.")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        stopped = next(p for p in procs if p.poll() is not None)
        typer.echo(
            f"Error: {names[stopped.pid]} stopped (exit {stopped.returncode}); stopping the others.", err=True
        )
        code = EXIT_INFRASTRUCTURE
    except KeyboardInterrupt:
        pass
    except _Stop as why:
        if str(why) not in ("SIGTERM", "SIGHUP"):
            typer.echo(f"Error: {why}.", err=True)
            code = EXIT_INFRASTRUCTURE
    finally:
        stop_group(procs, pgid)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code:
        raise typer.Exit(code)
