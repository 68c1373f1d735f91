"""``gnnrec serve``: the champion over REST, in this process, with one-line errors.

The app is MLflow's own scoring server (``POST /invocations``, ``GET /ping``) for ``models:/NAME@champion``,
run by uvicorn inside the ``gnnrec serve`` process: no child process, so SIGTERM or Ctrl-C stops it and frees
the port. A thin layer rewrites the error responses of ``/invocations``: MLflow puts the whole input frame and
sometimes a stack trace in the body; clients get ``{"error_code": ..., "message": "<one line>"}`` with the
same status (400 for a bad ``k``, which the pyfunc itself refuses, see :func:`tasks.recommend.check_k`).
"""

from __future__ import annotations

import json
import socket
from typing import Annotated, Any

import typer

from flows.cli_common import EXIT_BAD_INPUT, error_boundary, fail, load_champion_or_exit, load_settings
from flows.cli_pipeline import MlflowConfigOption


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def one_line_error(body: bytes) -> bytes:
    """An MLflow scoring-server error body reduced to ``{"error_code", "message"}`` with a one-line message.

    Drops ``stack_trace`` and the ``Failed to predict data '<the whole input>'. Error:`` preamble.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        return json.dumps(
            {"error_code": "BAD_REQUEST", "message": " ".join(body.decode(errors="replace").split())}
        ).encode()
    message = str(payload.get("message", ""))
    if "Error:" in message and message.startswith("Failed to predict data"):
        message = message.rsplit("Error:", 1)[1]
    return json.dumps(
        {"error_code": payload.get("error_code", "BAD_REQUEST"), "message": " ".join(message.split())}
    ).encode()


def scoring_app(model: Any) -> Any:
    """MLflow's scoring app for ``model`` with one-line error bodies on ``/invocations``."""
    from fastapi import Request
    from fastapi.responses import Response
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(model)

    @app.middleware("http")
    async def _one_line_errors(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path != "/invocations" or response.status_code < 400:
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        return Response(
            content=one_line_error(body), status_code=response.status_code, media_type="application/json"
        )

    return app


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 5001,
    mlflow_config: MlflowConfigOption = None,
) -> None:
    """Serve the champion over REST (POST /invocations, GET /ping) until Ctrl-C or SIGTERM.

    Exit 2 when there is no champion or the port is taken; 3 when the tracking server or store failed.
    """
    import uvicorn

    with error_boundary():
        settings = load_settings(mlflow_config)
        if not port_free(host, port):
            fail(
                f"Port {port} on {host} is already in use: stop what listens there or pass --port.",
                EXIT_BAD_INPUT,
            )
        uri, model = load_champion_or_exit(settings)
        app = scoring_app(model)
    typer.echo(f"Serving {uri} on http://{host}:{port}")
    typer.echo(
        'Try: curl -s -X POST -H "Content-Type: application/json" '
        f'-d \'{{"dataframe_split": {{"columns": ["user"], "data": [[1]]}}, "params": {{"k": 5}}}}\' '
        f"http://{host}:{port}/invocations"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
