"""The temporary Prefect server of a command-line run, started so that it dies with the command.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server as a child process the first time a flow
needs it, and stops it from an ``atexit`` hook. A command killed by ``SIGKILL`` (or by ``SIGTERM`` before
Python's exit hooks run) never runs that hook, and the server lived on as an orphan holding its port.
:func:`start_temporary_server` starts that same server up front, from the main thread, as a child that the
kernel signals when its parent dies (:func:`tasks.reconcile.die_with_parent`, Linux), and registers it as the
server Prefect uses.
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
