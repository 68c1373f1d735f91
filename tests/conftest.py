"""Shared test set-up: telemetry off, no network, small seeded data."""

from __future__ import annotations

import os

for _key, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # Test graphs are tiny: one thread is fastest, and on a shared, loaded CPU torch's OpenMP threads
    # waiting on each other made single model tests 100x slower (18 s instead of 0.1 s).
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_key, _value)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """A temporary Prefect API (SQLite in tmp) and result storage for the whole session (flow tests)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=None):
            yield storage


#: Where the PostgreSQL tests find a server: the project's machines run PostgreSQL 15 here with trust auth.
POSTGRES_ADMIN_URL = os.environ.get("GNNREC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_unreachable() -> str | None:
    """Why no PostgreSQL test can run here, or ``None`` when the server answers."""
    try:
        import psycopg2
    except ImportError as err:  # pragma: no cover - psycopg2-binary is a dependency
        return f"psycopg2 is not installed ({err})"
    try:
        psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg2.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"no PostgreSQL server at {POSTGRES_ADMIN_URL} ({first}); start PostgreSQL 15 with trust auth "
            "for user postgres on 127.0.0.1:5432, or point GNNREC_TEST_POSTGRES at a server you may create "
            "databases on"
        )
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL server; skips, naming what to start, when none answers."""
    reason = _postgres_unreachable()
    if reason is not None:
        pytest.skip(reason)
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_db(postgres_server: str):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards; yields its SQLAlchemy URL.

    The URL uses the ``postgresql+psycopg2`` driver name, which Optuna, MLflow and Prefect (via SQLAlchemy)
    all accept.
    """
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = f"gnnrec_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(postgres_server)
        url = urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", "", ""))
        yield url
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


_ENGINE_MARKERS = ("postgres", "dask", "distributed")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """Say how many tests of each real-engine marker passed, failed or were skipped (CI shows it)."""
    counts: dict[str, dict[str, int]] = {m: {} for m in _ENGINE_MARKERS}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            keywords = getattr(report, "keywords", {})
            for marker in _ENGINE_MARKERS:
                if marker in keywords and (report.when == "call" or outcome in ("skipped", "error")):
                    counts[marker][outcome] = counts[marker].get(outcome, 0) + 1
    lines = [
        f"{marker} tests: " + ", ".join(f"{n} {o}" for o, n in sorted(c.items()))
        for marker, c in counts.items()
        if c
    ]
    if lines:
        terminalreporter.write_sep("-", "real-engine tests")
        for line in lines:
            terminalreporter.write_line(line)
