"""The temporary Prefect server of a command-line run, started so that it dies with the command.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server as a child process the first time a flow
needs it, and stops it from an ``atexit`` hook. A command killed by ``SIGKILL`` (or by ``SIGTERM`` before
Python's exit hooks run) never runs that hook, and the server lived on as an orphan holding its port.
:func:`start_temporary_server` starts that same server up front, from the main thread, as a child that the
kernel signals when its parent dies (:func:`tasks.reconcile.die_with_parent`, Linux), and registers it as the
server Prefect uses.

:func:`crash_flow_run` tells the server (temporary or persistent) that a flow run ended with its process, when
a signal ends the process before Prefect's engine could say so.
"""

from __future__ import annotations

import os
import subprocess
import types
from functools import partial
from typing import Any


def start_temporary_server() -> str | None:
    """Start the temporary Prefect server now, as a child that dies with this process.

    Does nothing when ``PREFECT_API_URL`` points at a server, or when a temporary server already runs.

    Returns:
        The server's API URL, or ``None`` when no temporary server is used.
    """
    from prefect.server.api import server as server_module
    from prefect.settings import PREFECT_API_URL

    from tasks.reconcile import die_with_parent

    if PREFECT_API_URL.value():
        return None
    parent = os.getpid()

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        popen_any: Any = subprocess.Popen
        return popen_any(*args, preexec_fn=partial(die_with_parent, parent), **kwargs)

    # Prefect's own server class and command line, with only the process creation wrapped.
    shim = types.ModuleType("subprocess")
    shim.__dict__.update(subprocess.__dict__)
    shim.Popen = popen  # type: ignore[attr-defined]

    class ChildServer(server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            real = server_module.subprocess
            server_module.subprocess = shim
            try:
                return super()._run_uvicorn_command()
            finally:
                server_module.subprocess = real

    # Prefect asks SubprocessASGIServer() for its temporary server: the instance registered without a port.
    server = server_module.SubprocessASGIServer._instances.get(None) or ChildServer()
    server.start()
    return server.api_url


def crash_flow_run(flow_run_id: str | None, signum: int, *, timeout_s: float = 10.0) -> None:
    """Mark a flow run, and its task runs still open, ``Crashed`` because the process dies of ``signum``.

    Prefect's engine reports a crash for an exception it sees (its own ``SIGTERM`` handler raises one), but a
    process that dies of ``SIGINT`` right away, as :func:`tasks.reconcile.closing_on_signals` makes it so that
    no worker thread keeps training, never tells the server: a persistent server showed the run ``Running``
    for ever. Called from that signal handler (``before_exit``). The calls run in a thread of their own with
    a fresh client, bounded by ``timeout_s``, so an unreachable server cannot hold the process.

    Args:
        flow_run_id: The flow run; ``None`` (not in a flow run) does nothing.
        signum: The signal, named in the state's message.
        timeout_s: How long to wait for the server.
    """
    import signal
    import threading
    from uuid import UUID

    if not flow_run_id:
        return
    name = signal.Signals(signum).name
    message = (
        f"Execution was aborted by {name}; its MLflow runs were closed KILLED and its Optuna trials FAIL."
    )

    def report() -> None:
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.states import Crashed

        run_id = UUID(str(flow_run_id))
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            for task_run in task_runs:
                if task_run.state is not None and not task_run.state.is_final():
                    client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)

    def guarded() -> None:
        try:
            report()
        except Exception:  # noqa: BLE001 (best effort on the way out: the server may be gone)
            pass

    worker = threading.Thread(target=guarded, name="crash-flow-run", daemon=True)
    worker.start()
    worker.join(timeout_s)
