"""Deployments of the pipeline flows, served by a long-running process (``python -m flows.deploy``).

* ``train-and-promote/manual``: no schedule; started from the Prefect UI's Run button (the parameter form
  is rendered from :class:`tasks.pipeline_config.PipelineParams`) or ``prefect deployment run``.
* ``retrain/weekly``: cron schedule, Mondays 03:00 UTC by default (``GNNREC_RETRAIN_CRON`` and
  ``GNNREC_RETRAIN_TIMEZONE`` override it); the timezone is stored with the schedule, as in ``prefect.yaml``.

Neither passes parameters of its own: the flows' defaults are :class:`tasks.pipeline_config.PipelineParams`
(``retrain``: :func:`tasks.pipeline_config.retrain_defaults`), the one definition the CLI reads too.

Each flow run is a process of its own, so the CLI's ``--threads`` does not reach it: ``GNNREC_THREADS=N``
(which ``gnnrec ui --threads N`` sets) makes ``threads: N`` part of both deployments' default parameters,
and the Prefect UI's form can change it per run.

``prefect.yaml`` declares the same two deployments for ``prefect deploy`` with a process work pool; this
module is the no-infrastructure way: ``gnnrec ui`` runs it next to a local server.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from typing import Any

#: Weekly, Monday 03:00 (as ``prefect.yaml``'s ``weekly`` deployment).
DEFAULT_RETRAIN_CRON = "0 3 * * 1"
#: The schedule's timezone unless ``GNNREC_RETRAIN_TIMEZONE`` names another (IANA name, e.g. Europe/Paris).
DEFAULT_RETRAIN_TIMEZONE = "UTC"


def deployments(threads: int | None = None) -> list[Any]:
    """The two runner deployments (``train-and-promote/manual``, ``retrain/weekly``).

    Args:
        threads: CPU threads for torch in their flow runs (default parameters; ``None``: the
            ``GNNREC_THREADS`` environment variable, else torch's default).
    """
    from prefect.schedules import Cron

    from flows.retrain import RETRAIN_DEFAULTS, retrain
    from flows.train_and_promote import train_and_promote
    from tasks.pipeline_config import PipelineParams

    if threads is None and os.environ.get("GNNREC_THREADS"):
        threads = int(os.environ["GNNREC_THREADS"])

    def defaults(params: PipelineParams) -> dict[str, Any]:
        if threads is None:
            return {}  # the flow's own default
        return {"params": params.model_copy(update={"threads": threads}).model_dump(mode="json")}

    return [
        train_and_promote.to_deployment(
            name="manual",
            parameters=defaults(PipelineParams()),
            description="Validate, tune every model, register and promote the best. Start it with Run.",
            tags=["gnnrec"],
        ),
        retrain.to_deployment(
            name="weekly",
            parameters=defaults(RETRAIN_DEFAULTS),
            schedule=Cron(
                os.environ.get("GNNREC_RETRAIN_CRON", DEFAULT_RETRAIN_CRON),
                timezone=os.environ.get("GNNREC_RETRAIN_TIMEZONE", DEFAULT_RETRAIN_TIMEZONE),
            ),
            description="Reload, validate, warm-start, retrain and promote through the same gate.",
            tags=["gnnrec"],
        ),
    ]


def serve_deployments() -> None:
    """Register the deployments with the Prefect API (``PREFECT_API_URL``) and run their flow runs."""
    from prefect import serve

    serve(*deployments(), print_starting_message=True)


def wait_for_http(url: str, *, timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll ``url`` until it answers 2xx or ``timeout_s`` passes; returns whether it answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL we built)
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(interval_s)
    return False


if __name__ == "__main__":
    serve_deployments()
