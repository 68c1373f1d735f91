"""Open an Optuna RDB storage safely when several processes create its tables at the same moment.

Optuna's :class:`~optuna.storages.RDBStorage` creates its schema on first use (``CREATE TABLE`` then an
Alembic version row). Two processes opening a fresh database together (two tuning workers joining one study,
a pipeline and a reader polling its store) race on it, and the loser fails with ``table ... already exists``
or ``UNIQUE constraint failed: alembic_version.version_num``, though the schema the winner wrote is complete.
:func:`open_storage` retries the open a few times, which then finds the tables and only checks their version.

Trials of one study may run in several processes or machines. Each running trial records a heartbeat in the
storage (Optuna's own mechanism); a trial whose process died (``SIGKILL``, a lost machine) stops beating and
the next worker that looks marks it ``FAIL`` after a grace period (:func:`trial_heartbeat`), so its slot of
the trial budget goes to another worker. The failed trial is not retried with the same parameters (Optuna's
``RetryHeartbeatStaleTrialCallback``): a worker killed mid-trial is often the kernel's out-of-memory killer
answering those very parameters, which would then kill the next worker too; a new trial is sampled instead.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

#: How many times an open that lost the schema race is tried again, and the first pause (doubled each time).
RETRIES = 5
FIRST_PAUSE_S = 0.2

#: Environment variables of the trial heartbeat (seconds; whole numbers, as Optuna takes them): how often a
#: running trial beats, and how long after its last beat another worker marks it ``FAIL``.
HEARTBEAT_ENV = "GNNREC_TRIAL_HEARTBEAT_S"
GRACE_ENV = "GNNREC_TRIAL_GRACE_S"
DEFAULT_HEARTBEAT_S = 30
DEFAULT_GRACE_S = 120

#: Seconds a PostgreSQL connection attempt may take before the storage is reported unreachable.
CONNECT_TIMEOUT_S = 10


def trial_heartbeat() -> tuple[int, int]:
    """``(heartbeat interval, grace period)`` in seconds: the environment's, else 30 and 120.

    The grace period is at least two intervals, so one late beat of a busy worker does not fail its trial.

    Raises:
        ValueError: A variable that is not a positive whole number.
    """
    values = []
    for name, default in ((HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S), (GRACE_ENV, DEFAULT_GRACE_S)):
        raw = os.environ.get(name, "").strip()
        if not raw:
            values.append(default)
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{name} must be a positive whole number of seconds, got {raw!r}")
        values.append(int(raw))
    interval, grace = values
    return interval, max(grace, 2 * interval)


def ensure_sqlite_dir(storage: str | None) -> None:
    """Create the folder of a ``sqlite:///path`` store, Optuna's or MLflow's (nothing for other URLs)."""
    if storage and storage.startswith("sqlite") and ":///" in storage:
        path = storage.partition(":///")[2]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def storage_url(url: str) -> str:
    """``url`` with a loadable driver: a plain ``postgresql://`` names psycopg2 when only it is installed.

    SQLAlchemy 2.1 reads a plain ``postgresql://`` as psycopg (version 3); the project installs
    psycopg2-binary, so such a URL would fail with "no module named psycopg".
    """
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _lost_schema_race(err: Exception) -> bool:
    text = str(err).lower()
    return "already exists" in text or "alembic_version" in text or "duplicate key" in text


def open_storage(url: str, *, heartbeat: bool = False) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url``, created if new, tolerant of another process creating it concurrently.

    Args:
        url: SQLAlchemy URL (``sqlite:///...``, ``postgresql://user@host:5432/db``...).
        heartbeat: Record a heartbeat of every trial run through this storage and fail the trials whose
            heartbeat stopped (:func:`trial_heartbeat`); for the storages that run trials.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: Any database error other than the creation race, or the race
            still lost after :data:`RETRIES` tries.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    ensure_sqlite_dir(url)
    url = storage_url(url)
    options: dict[str, Any] = {}
    if heartbeat:
        interval, grace = trial_heartbeat()
        options = {"heartbeat_interval": interval, "grace_period": grace}
    engine: dict[str, Any] = {}
    if url.split("://")[0] in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        # libpq's own timeout: a host that does not answer fails in seconds, not after minutes of TCP retries
        engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    pause = FIRST_PAUSE_S
    for attempt in range(RETRIES + 1):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **options)
        except (IntegrityError, OperationalError, ProgrammingError) as err:
            if attempt == RETRIES or not _lost_schema_race(err):
                raise
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")
