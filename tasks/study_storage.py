"""Open an Optuna RDB storage safely when several processes create its tables at the same moment.

Optuna's :class:`~optuna.storages.RDBStorage` creates its schema on first use (``CREATE TABLE`` then an
Alembic version row). Two processes opening a fresh database together (two tuning workers joining one study,
a pipeline and a reader polling its store) race on it, and the loser fails with ``table ... already exists``
or ``UNIQUE constraint failed: alembic_version.version_num``, though the schema the winner wrote is complete.
:func:`open_storage` retries the open a few times, which then finds the tables and only checks their version.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

#: How many times an open that lost the schema race is tried again, and the first pause (doubled each time).
RETRIES = 5
FIRST_PAUSE_S = 0.2


def ensure_sqlite_dir(storage: str | None) -> None:
    """Create the folder of a ``sqlite:///path`` store, Optuna's or MLflow's (nothing for other URLs)."""
    if storage and storage.startswith("sqlite") and ":///" in storage:
        path = storage.partition(":///")[2]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _lost_schema_race(err: Exception) -> bool:
    text = str(err).lower()
    return "already exists" in text or "alembic_version" in text or "duplicate key" in text


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url``, created if new, tolerant of another process creating it concurrently.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: Any database error other than the creation race, or the race
            still lost after :data:`RETRIES` tries.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    ensure_sqlite_dir(url)
    pause = FIRST_PAUSE_S
    for attempt in range(RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, OperationalError, ProgrammingError) as err:
            if attempt == RETRIES or not _lost_schema_race(err):
                raise
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")
