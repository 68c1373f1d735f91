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
