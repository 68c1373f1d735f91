"""Leave no record RUNNING: close this process's runs and trials on a signal, reconcile a dead one's.

A pipeline opens MLflow runs (the parent, one per model) and Optuna trials that stay ``RUNNING`` in their
stores until someone closes them. Three exits can skip the close:

* an exception: the flow closes what it opened in ``finally`` (:meth:`OpenRecords.close_all`);
* ``SIGTERM`` / ``SIGINT`` (a ``kill``, Ctrl-C, a stopped container): :func:`closing_on_signals` installs a
  handler that closes every open record as ``KILLED`` (trials ``FAIL``), lets the orchestrator record the
  end (``before_exit``: the flow marks its Prefect flow run crashed), and then dies of the very signal, with
  its default action, so the exit status still says what happened and no worker thread keeps training;
* ``SIGKILL`` or a power cut: nothing can run, so every record carries its owner (host, pid and the process's
  start time) and the next pipeline run calls :func:`reconcile_mlflow` and :func:`reconcile_optuna`, which
  close the ``RUNNING`` records whose owner process is gone (``KILLED`` runs, ``FAIL`` trials).

A record whose owner is another host, or is still alive, is left alone: it may be a concurrent run.
Plain functions over MLflow and Optuna; no Prefect.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

TAG_HOST = "gnnrec.owner.host"
TAG_PID = "gnnrec.owner.pid"
TAG_STARTED = "gnnrec.owner.started"
TAG_FAILURE = "gnnrec.failure"

#: The Optuna user attribute holding a trial's owner (``{"host": ..., "pid": ..., "started": ...}``).
TRIAL_OWNER_ATTR = "owner"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (``/proc``), ``""`` where unknown.

    With the pid it identifies a process: a pid reused by a later process has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
    except OSError:
        return ""
    # Field 2 (comm) is in parentheses and may hold spaces; field 22 (starttime) is the 20th after it.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Owner:
    """The process that opened a record.

    Attributes:
        host: Host name.
        pid: Process id.
        started: Process start time (``/proc/<pid>/stat``), ``""`` where the system does not tell.
    """

    host: str
    pid: int
    started: str = ""

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()))

    def is_gone(self) -> bool:
        """Whether the process surely no longer runs (only knowable on this host).

        A pid that exists but started at another time is a new process that reused the number.
        """
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, another user's
            pass
        started = _process_start(self.pid)
        return bool(self.started and started and started != self.started)

    def tags(self) -> dict[str, str]:
        """As MLflow run tags."""
        return {TAG_HOST: self.host, TAG_PID: str(self.pid), TAG_STARTED: self.started}

    def as_attr(self) -> dict[str, Any]:
        """As an Optuna user attribute value."""
        return {"host": self.host, "pid": self.pid, "started": self.started}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Owner | None:
        """From MLflow run tags; ``None`` for a run that does not name its owner."""
        if TAG_HOST not in tags or not str(tags.get(TAG_PID, "")).isdigit():
            return None
        return cls(tags[TAG_HOST], int(tags[TAG_PID]), tags.get(TAG_STARTED, ""))

    @classmethod
    def from_attr(cls, attr: Any) -> Owner | None:
        """From an Optuna user attribute; ``None`` when it is not an owner."""
        if not isinstance(attr, Mapping) or "host" not in attr or not isinstance(attr.get("pid"), int):
            return None
        return cls(str(attr["host"]), int(attr["pid"]), str(attr.get("started", "")))


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def claim_run(tracking_uri: str, run_id: str, extra_tags: Mapping[str, str] | None = None) -> None:
    """Tag an MLflow run with this process as its owner (see :func:`reconcile_mlflow`), and more tags."""
    from mlflow.entities import RunTag

    tags = {**Owner.current().tags(), **(extra_tags or {})}
    _client(tracking_uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def close_failed_run(tracking_uri: str, run_id: str, reason: str) -> None:
    """Close a run ``FAILED`` with ``reason`` in its tag ``gnnrec.failure`` (shown in the MLflow UI)."""
    client = _client(tracking_uri)
    client.set_tag(run_id, TAG_FAILURE, reason[:5000])
    client.set_terminated(run_id, status="FAILED")


def fail_running_trials(storage: str, *, owner: Owner | None = None) -> list[tuple[str, int]]:
    """Mark ``RUNNING`` Optuna trials ``FAIL``: those of ``owner``, else those whose owner is gone.

    Args:
        storage: The study storage URL.
        owner: Close this process's trials (on its way out); ``None``: close every trial whose owner
            process is gone (a new run's reconciliation). Trials that name no owner are left alone.

    Returns:
        ``(study name, trial number)`` of each trial closed.
    """
    from optuna.trial import TrialState

    from tasks.study_storage import open_storage

    rdb = open_storage(storage) if "://" in storage else storage
    assert not isinstance(rdb, str)
    closed: list[tuple[str, int]] = []
    for study in rdb.get_all_studies():
        for trial in rdb.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            found = Owner.from_attr(trial.user_attrs.get(TRIAL_OWNER_ATTR))
            if found is None or (found != owner if owner is not None else not found.is_gone()):
                continue
            try:
                rdb.set_trial_system_attr(trial._trial_id, "fail_reason", "its process ended while it ran")
                rdb.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except RuntimeError:  # finished meanwhile: nothing left to close
                continue
            closed.append((study.study_name, trial.number))
    return closed


def reconcile_optuna(storage: str) -> list[tuple[str, int]]:
    """Close the ``RUNNING`` trials of every study in ``storage`` whose owner process is gone.

    Returns:
        ``(study name, trial number)`` of each trial marked ``FAIL``; empty when the storage does not exist.
    """
    if storage.startswith("sqlite") and ":///" in storage:
        path = storage.partition(":///")[2]
        if path and path != ":memory:" and not os.path.exists(path):
            return []
    return fail_running_trials(storage)


def reconcile_mlflow(tracking_uri: str, experiment_name: str) -> list[str]:
    """Close the ``RUNNING`` runs of an experiment whose owner process is gone, as ``KILLED``.

    Runs that do not name their owner (older runs, runs logged by hand) are left alone.

    Returns:
        The ids of the runs closed.
    """
    from mlflow.entities import ViewType

    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    closed: list[str] = []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'RUNNING'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=5000,
    )
    for run in runs:
        owner = Owner.from_tags(run.data.tags)
        if owner is not None and owner.is_gone():
            client.set_tag(run.info.run_id, "gnnrec.closed_by", "reconcile: its process ended while it ran")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


@dataclass
class OpenRecords:
    """What this process has open and must close on its way out.

    Attributes:
        runs: MLflow run id to its tracking URI, in opening order.
        storages: Optuna storages this process runs trials in.
    """

    runs: dict[str, str] = field(default_factory=dict)
    storages: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_run(self, tracking_uri: str, run_id: str) -> None:
        """Remember an open run."""
        with self._lock:
            self.runs[run_id] = tracking_uri

    def closed_run(self, run_id: str) -> None:
        """Forget a run that was closed."""
        with self._lock:
            self.runs.pop(run_id, None)

    def add_storage(self, storage: str) -> None:
        """Remember a study storage this process runs trials in."""
        with self._lock:
            self.storages.add(storage)

    def close_all(self, status: str = "KILLED") -> list[str]:
        """Close every open run (children before parents) with ``status`` and fail this process's trials.

        Best effort: a store that cannot be reached is skipped (the next run's reconciliation closes it).

        Returns:
            The ids of the runs closed.
        """
        with self._lock:
            runs = list(self.runs.items())[::-1]
            storages = sorted(self.storages)
            self.runs.clear()
        closed = []
        for run_id, uri in runs:
            try:
                _client(uri).set_terminated(run_id, status=status)
                closed.append(run_id)
            except Exception:  # noqa: BLE001 (on the way out: close what can be closed)
                continue
        me = Owner.current()
        for storage in storages:
            try:
                fail_running_trials(storage, owner=me)
            except Exception:  # noqa: BLE001
                continue
        return closed


def _die_of(signum: int) -> None:
    """End this process by ``signum`` with its default action (exit status 128 + signum)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextmanager
def closing_on_signals(
    records: OpenRecords,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    *,
    before_exit: Callable[[int], None] | None = None,
    then: Callable[[int], None] = _die_of,
) -> Iterator[OpenRecords]:
    """While inside, ``SIGTERM``/``SIGINT`` close ``records`` as ``KILLED``, then end the process.

    After closing, a ``SIGTERM`` goes on to the handler that was installed before (Prefect's, which marks
    the flow run crashed and then dies of the signal); otherwise, and always for ``SIGINT``, ``before_exit``
    runs (Prefect never hears of a process that dies of a signal: the flow marks its run crashed there, or a
    persistent server shows it ``Running`` for ever), then the process dies of the signal itself (``then``),
    not of an exception: the training runs in a worker thread, which an exception in the main thread would
    not stop. Outside the main thread (where Python cannot install handlers) this does nothing. The previous
    handlers come back on exit.

    Args:
        records: What to close.
        signals: The signals to handle.
        before_exit: Called with the signal number just before this handler ends the process itself; its
            errors are swallowed (the process is on its way out).
        then: What ends the process when no earlier handler does (default: die of the signal; tests pass a
            recorder).

    Yields:
        ``records``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield records
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        records.close_all("KILLED")
        earlier = previous.get(signum)
        if signum == signal.SIGTERM and callable(earlier):
            earlier(signum, frame)
        if before_exit is not None:
            try:
                before_exit(signum)
            except Exception:  # noqa: BLE001 (on the way out: end the process whatever happens)
                pass
        then(signum)

    previous.update({sig: signal.signal(sig, handler) for sig in signals})
    try:
        yield records
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """In a child process (``preexec_fn``): receive ``sig`` when the parent dies, even by ``SIGKILL``.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing. The signal is sent when the
    *thread* that started the child ends, so start such children from the main thread. A parent that died
    between the fork and this call is caught by comparing ``parent_pid`` with the current parent.

    Args:
        parent_pid: The pid of the process that starts the child (``os.getpid()`` before the fork).
        sig: The signal the child receives.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
