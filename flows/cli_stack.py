"""``gnnrec stack up|down``: the pipeline's servers on PostgreSQL, on one machine, ready for more workers.

``stack up`` creates the databases it needs on a PostgreSQL server (``--postgres``, an admin URL; each
database only when missing), then starts, in one process group of its own:

* a Prefect server whose database is PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL``,
  ``postgresql+asyncpg://``),
* an MLflow tracking server with a PostgreSQL backend store and a folder as its artifact store
  (``--artifacts-destination``, served to clients, so workers elsewhere need no shared folder),
* a process work pool, the project's deployments (``prefect deploy --all`` on ``prefect.yaml``) and one
  process worker,

writes the ``mlflow.yml`` that points at them (tracking server, Optuna studies on PostgreSQL), prints the
URLs and how to add workers on other machines, and stays in the foreground until Ctrl-C, SIGTERM or
``gnnrec stack down``, which stop everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

from flows.cli_common import EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE, InfrastructureError, error_boundary, fail

app = typer.Typer(
    help="Run the Prefect server, the MLflow tracking server and a worker on PostgreSQL (stack up / down).",
    no_args_is_help=True,
)

#: The repository root: ``prefect deploy`` reads ``prefect.yaml`` there and records it as the runs' folder.
ROOT = Path(__file__).resolve().parents[1]
#: The work pool of ``prefect.yaml``'s deployments (``prefect deploy --all`` ignores ``--pool``).
DEFAULT_POOL = "gnnrec-local"
STATE_FILE = "stack.json"

StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        help="Folder of the stack's files: its mlflow.yml, artifacts, logs and the stack.json that "
        "`stack down` reads.",
        file_okay=False,
    ),
]


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop."""


def database_url(admin: str, database: str, driver: str) -> str:
    """``database`` on the server of ``admin`` (``postgresql://user@host:port``), with ``driver``."""
    parts = urlsplit(admin)
    if parts.scheme.partition("+")[0] not in ("postgresql", "postgres") or not parts.hostname:
        raise InfrastructureError(
            f"--postgres {admin!r} is not a PostgreSQL URL: write postgresql://USER@HOST:5432 (a user "
            "that may create databases)."
        )
    return urlunsplit((f"postgresql+{driver}", parts.netloc, f"/{database}", "", ""))


def create_databases(admin: str, names: list[str]) -> list[str]:
    """Create each database of ``names`` that does not exist yet; returns those created.

    Raises:
        InfrastructureError: The server cannot be reached or refuses to create a database.
    """
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(admin)
    maintenance = urlunsplit(
        ("postgresql", parts.netloc, parts.path if parts.path.strip("/") else "/postgres", "", "")
    )
    try:
        connection = psycopg2.connect(maintenance, connect_timeout=5)
    except psycopg2.Error as err:
        raise InfrastructureError(
            f"The PostgreSQL server at {parts.hostname}:{parts.port or 5432} cannot be reached "
            f"({' '.join(str(err).split())}). Start it, or pass --postgres postgresql://USER@HOST:PORT."
        ) from None
    connection.autocommit = True
    created = []
    try:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
    except psycopg2.Error as err:
        raise InfrastructureError(
            f"Cannot create the database {name!r} ({' '.join(str(err).split())}); use a --postgres user that "
            "may create databases, or create it yourself."
        ) from None
    finally:
        connection.close()
    return created


def stop_group(procs: list[subprocess.Popen[bytes]], pgid: int | None) -> None:
    """SIGTERM every process the stack started (its process group), then SIGKILL what is left."""
    from flows.cli_ui import stop_group as stop

    stop(procs, pgid)


@app.command("up")
def up(
    postgres: Annotated[
        str, typer.Option(help="Admin URL of the PostgreSQL server (a user that may create databases).")
    ] = "postgresql://postgres@127.0.0.1:5432",
    prefect_db: Annotated[str, typer.Option(help="Database of the Prefect server.")] = "gnnrec_prefect",
    mlflow_db: Annotated[str, typer.Option(help="Backend store of the MLflow server.")] = "gnnrec_mlflow",
    optuna_db: Annotated[str, typer.Option(help="Database of the Optuna studies.")] = "gnnrec_optuna",
    host: Annotated[
        str, typer.Option(help="Address the servers listen on; 0.0.0.0 lets workers on other machines in.")
    ] = "127.0.0.1",
    prefect_port: Annotated[int, typer.Option(help="Prefect server port.", min=1, max=65535)] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow tracking server port.", min=1, max=65535)] = 5000,
    deploy: Annotated[
        bool,
        typer.Option("--deploy/--no-deploy", help="Create the work pool and deploy prefect.yaml's flows."),
    ] = True,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Start one process worker here.")
    ] = True,
    state_dir: StateDirOption = Path("data/stack"),
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each server to answer.", min=1.0)
    ] = 180.0,
) -> None:
    """Start the Prefect and MLflow servers on PostgreSQL, a work pool, the deployments and a worker.

    Stays in the foreground; Ctrl-C (or `gnnrec stack down`) stops all it started. Exit 2 when a port is
    taken, 3 when PostgreSQL or a server fails.
    """
    from flows.cli_serve import port_free
    from flows.deploy import wait_for_http
    from tasks.reconcile import die_with_parent

    pool = DEFAULT_POOL

    for name, port in (("--prefect-port", prefect_port), ("--mlflow-port", mlflow_port)):
        if not port_free(host, port):
            fail(f"Port {port} on {host} is already in use: stop what listens there or pass {name}.")
    if prefect_port == mlflow_port:
        fail("--prefect-port and --mlflow-port must differ.", EXIT_BAD_INPUT)
    with error_boundary():
        try:
            import asyncpg  # noqa: F401  (Prefect's PostgreSQL driver)
        except ImportError as err:
            raise InfrastructureError(f"Prefect needs asyncpg for PostgreSQL: {err}.") from None
        prefect_url = database_url(postgres, prefect_db, "asyncpg")
        mlflow_url = database_url(postgres, mlflow_db, "psycopg2")
        optuna_url = database_url(postgres, optuna_db, "psycopg2")
        created = create_databases(postgres, [prefect_db, mlflow_db, optuna_db])
    state = state_dir.expanduser().resolve()
    (state / "artifacts").mkdir(parents=True, exist_ok=True)
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 (an address we compare)
    api_url = f"http://{client_host}:{prefect_port}/api"
    tracking = f"http://{client_host}:{mlflow_port}"
    config = state / "mlflow.yml"
    config.write_text(
        "# Written by `gnnrec stack up`: the tracking server keeps runs in PostgreSQL and artifacts in its\n"
        "# --artifacts-destination; Optuna studies live in PostgreSQL too.\n"
        f"tracking_uri: {tracking}\nstudy_storage: {optuna_url}\n"
    )
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "GNNREC_MLFLOW_CONFIG": str(config),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    procs: list[subprocess.Popen[bytes]] = []
    names: dict[int, str] = {}
    pgid: int | None = None

    parent = os.getpid()  # a child gets SIGTERM when `stack up` dies, even of SIGKILL (Linux)

    def start(name: str, command: list[str], extra_env: dict[str, str] | None = None) -> None:
        nonlocal pgid
        log = open(state / f"{name}.log", "ab")  # noqa: SIM115 (the child holds it)
        proc = subprocess.Popen(
            command,
            env={**env, **(extra_env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0 if pgid is None else pgid,
            preexec_fn=partial(die_with_parent, parent),  # noqa: PLW1509 (only prctl, no locks)
        )
        log.close()
        pgid = proc.pid if pgid is None else pgid
        procs.append(proc)
        names[proc.pid] = name

    def prefect(*args: str) -> None:
        done = subprocess.run(
            [str(bin_dir / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split())[-600:]
            raise _Stop(f"`prefect {' '.join(args)}` failed (exit {done.returncode}): {tail}")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    code = 0
    state_file = state / STATE_FILE
    try:
        start(
            "prefect-server",
            [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(prefect_port)],
            {"PREFECT_API_DATABASE_CONNECTION_URL": prefect_url},
        )
        start(
            "mlflow-server",
            [
                str(bin_dir / "mlflow"),
                *(
                    "server",
                    "--backend-store-uri",
                    mlflow_url,
                    "--artifacts-destination",
                    str(state / "artifacts"),
                ),
                *("--host", host, "--port", str(mlflow_port), "--workers", "2"),
            ],
        )
        state_file.write_text(
            json.dumps({"pid": os.getpid(), "pgid": pgid, "prefect": api_url, "mlflow": tracking}, indent=2)
        )
        for what, url in (("Prefect server", f"{api_url}/health"), ("MLflow server", f"{tracking}/health")):
            if not wait_for_http(url, timeout_s=startup_timeout):
                raise _Stop(
                    f"the {what} did not answer within {startup_timeout:g} s (--startup-timeout); its log is "
                    f"in {state}"
                )
        if deploy or worker:
            prefect("work-pool", "create", pool, "--type", "process", "--overwrite")
        if deploy:
            prefect("--no-prompt", "deploy", "--all")  # prefect.yaml names the pool
        if worker:
            start("prefect-worker", [str(bin_dir / "prefect"), "worker", "start", "--pool", pool])
        if created:
            typer.echo(f"Created the databases {', '.join(created)} on {urlsplit(postgres).netloc}.")
        typer.echo(f"Prefect UI and API: http://{client_host}:{prefect_port}  (database {prefect_db})")
        typer.echo(f"MLflow tracking:    {tracking}  (database {mlflow_db}, artifacts {state / 'artifacts'})")
        typer.echo(f"Optuna studies:     {optuna_url}")
        typer.echo(f"mlflow.yml:         {config}")
        if deploy:
            typer.echo(
                f"Deployments on work pool {pool!r}: prefect deployment run 'train-and-promote/manual' "
                "(or the Run button in the UI)."
            )
        typer.echo(
            "More workers, on this or another machine with this project installed (start the stack with "
            "--host 0.0.0.0 and use this machine's address instead of 127.0.0.1):\n"
            f"  PREFECT_API_URL={api_url} GNNREC_MLFLOW_CONFIG=/path/to/a/copy/of/{config.name} "
            f"prefect worker start --pool {pool}"
        )
        typer.echo(f"Stop with Ctrl-C or: gnnrec stack down --state-dir {state_dir}")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        stopped = next(p for p in procs if p.poll() is not None)
        typer.echo(
            f"Error: the {names[stopped.pid]} stopped (exit {stopped.returncode}; log {state}); stopping the "
            "others.",
            err=True,
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
        state_file.unlink(missing_ok=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code:
        raise typer.Exit(code)


@app.command("down")
def down(
    state_dir: StateDirOption = Path("data/stack"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack to stop.", min=1.0)] = 60.0,
) -> None:
    """Stop the stack that `gnnrec stack up` started with this --state-dir (its servers and worker)."""
    state_file = state_dir.expanduser().resolve() / STATE_FILE
    if not state_file.exists():
        fail(f"No stack is running from {state_dir} ({state_file} does not exist).")
    state = json.loads(state_file.read_text())
    pid, pgid = int(state["pid"]), state.get("pgid")
    try:
        os.kill(pid, signal.SIGTERM)  # `stack up` stops its process group and removes the file
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while state_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if state_file.exists():  # `stack up` is gone or stuck: stop what it started ourselves
        if pgid:
            try:
                os.killpg(int(pgid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        state_file.unlink(missing_ok=True)
    typer.echo("Stack stopped.")
