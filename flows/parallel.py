"""Where the models' branches run: one after another in the flow's process, or at once on Dask workers.

``parallel: 1`` (the default) keeps the flow's own one-worker runner (:func:`flows.train_and_promote.
model_task_runner`). ``parallel: N`` opens a Dask ``LocalCluster`` of N worker processes with one thread
each, for the models' branches only, and closes it when they are done; ``dask_address`` sends them to the
workers of a running scheduler instead. Each worker is a process of its own, so each model has its own torch
random generator and thread pool, and its result does not depend on the runner.

Prefect 3.9 has a ``ProcessPoolTaskRunner`` too; ``parallel: N`` uses Dask's ``LocalCluster`` instead so
that one runner, and one tested path, serves both a single machine and a cluster.

An address where no scheduler answers is refused before any work, with :class:`DaskUnavailableError` (a
``ConnectionError``: the CLI exits 3, an infrastructure failure).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.pipeline_config import PipelineParams

#: Seconds the scheduler probe (and the runner's client) waits for a Dask scheduler to answer.
DASK_CONNECT_TIMEOUT_S = 10.0


class DaskUnavailableError(ConnectionError):
    """No Dask scheduler answers at the configured address."""


def probe_dask_scheduler(address: str, timeout_s: float = DASK_CONNECT_TIMEOUT_S) -> int:
    """Connect to the scheduler at ``address`` and return its number of workers.

    Dask's client waits its whole connect timeout (30 s by default) and then raises a bare ``OSError``; one
    short connection here turns a scheduler that is not there into a message that says what to do.

    Raises:
        DaskUnavailableError: Nothing answers at ``address`` within ``timeout_s``.
    """
    from distributed import Client

    try:
        with Client(address, timeout=timeout_s, set_as_default=False) as client:
            return len(client.scheduler_info(n_workers=-1).get("workers", {}))
    except (OSError, TimeoutError) as err:
        raise DaskUnavailableError(
            f"No Dask scheduler answers at {address} ({' '.join(str(err).split())[:300]}). Start one "
            f"(`dask scheduler` and `dask worker {address} --nthreads 1`), or leave --dask-address out to "
            "run the models on a local cluster (--parallel N) or one after another."
        ) from None


def worker_threads(params: PipelineParams) -> int | None:
    """Torch threads of each model's worker: ``threads`` when given, else the cores shared out evenly.

    ``None`` on an existing cluster without ``threads``: its workers keep their own setting.
    """
    if params.threads is not None:
        return params.threads
    if params.dask_address:
        return None
    return max(1, (os.cpu_count() or 1) // params.parallel)


#: Dask settings of the local cluster's workers. Dask's nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` into
#: each worker by default; setting it at all turns off glibc's adaptive mmap threshold, so every tensor over
#: 128 KiB is a fresh ``mmap``/``munmap`` with its page faults: LightGCN trained 3.5 times slower in such a
#: worker than in the flow's process (7.8 s against 2.2 s, 1500 users, 8 epochs, one thread; with the
#: variable unset, 2.2 s). ``None`` removes it (benchmarks/RESULTS.md, issue 14).
WORKER_DASK_CONFIG: dict[str, Any] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextmanager
def model_branch_runner(params: PipelineParams) -> Iterator[Any | None]:
    """The started Dask task runner for the models' branches, or ``None`` to run them in the flow.

    A local cluster has no dashboard (no port to collide with another run's), one thread per worker (a
    model's parallelism is torch's, set per worker by :func:`worker_threads`) and glibc's own malloc
    tuning (:data:`WORKER_DASK_CONFIG`); it is closed, its workers with it, when the context exits.
    """
    if params.dask_address is None and params.parallel <= 1:
        yield None
        return
    import dask
    import distributed  # noqa: F401 (its defaults first: setting a key before they load drops them all on exit)

    with dask.config.set(WORKER_DASK_CONFIG), _dask_runner(params) as runner:
        yield runner


def _dask_runner(params: PipelineParams) -> Any:
    from prefect_dask import DaskTaskRunner

    if params.dask_address is not None:
        return DaskTaskRunner(address=params.dask_address, client_kwargs={"timeout": DASK_CONNECT_TIMEOUT_S})
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": params.parallel,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )
