"""tasks.prepare: the one load -> contract -> index -> split -> graphs chain, on tiny seeded data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, SplitConfig
from tasks.prepare import DataContractError, prepare_data, require_passed

SMALL = DataConfig(synthetic_users=40, synthetic_items=60, synthetic_interactions=800, synthetic_seed=5)


def write_csv(folder: Path, *, duplicates: int = 0) -> Path:
    """30 users x 6 items each as interactions.csv; the first ``duplicates`` rows repeated at the end."""
    rows = [(u, (u * 7 + k) % 25 + 1, 1 + (u + k) % 5) for u in range(1, 31) for k in range(6)]
    rows += rows[:duplicates]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user", "item", "rating"]).to_csv(folder / "interactions.csv", index=False)
    return folder


def test_success_returns_consistent_objects() -> None:
    prepared = prepare_data(SMALL, SplitConfig(seed=5))
    assert prepared.report.success and prepared.split_report.success
    assert prepared.expectations == len(prepared.report.results) + len(prepared.split_report.results) > 0
    data, split, graphs = prepared.dataset, prepared.split, prepared.graphs
    assert len(prepared.raw.interactions) == len(data.user) == 800
    assert (split.num_users, split.num_items) == (data.num_users, data.num_items)
    assert (graphs.num_users, graphs.num_items) == (data.num_users, data.num_items)
    assert len(split.train) + len(split.valid) + len(split.test) == len(data.user)
    # The graph holds exactly the training pairs, nothing from validation or test.
    edges = set(map(tuple, graphs.ui_edge_index.T.tolist()))
    assert edges == set(map(tuple, split.train.tolist()))
    assert not edges & set(map(tuple, np.vstack([split.valid, split.test]).tolist()))
    assert set(prepared.timings) == {
        "load",
        "validate",
        "build_dataset",
        "split",
        "validate_split",
        "build_graphs",
    }
    assert all(seconds >= 0 for seconds in prepared.timings.values())


def test_same_configs_give_the_same_fingerprints() -> None:
    a = prepare_data(SMALL, SplitConfig(seed=5))
    b = prepare_data(SMALL, SplitConfig(seed=5))
    c = prepare_data(SMALL, SplitConfig(seed=6))
    assert a.dataset.fingerprint == b.dataset.fingerprint == c.dataset.fingerprint
    assert a.split.fingerprint == b.split.fingerprint != c.split.fingerprint


def test_broken_table_raises_with_the_report(tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "dup", duplicates=3)
    with pytest.raises(DataContractError) as info:
        prepare_data(DataConfig(dataset="csv", data_dir=folder), SplitConfig())
    report = info.value.report
    assert not report.success
    failed = [(r.table, r.expectation, r.unexpected_count) for r in report.failures]
    assert ("interactions", "expect_compound_columns_to_be_unique", 6) in failed
    assert "FAILED" in str(info.value) and "expect_compound_columns_to_be_unique" in str(info.value)
    # Prefect may persist a failed task's exception: it must survive pickling with its report.
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, DataContractError) and again.report == report and str(again) == str(info.value)


def test_duplicates_pass_and_merge_when_aggregation_is_asked(tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "dup", duplicates=3)
    for config, allow in (
        (DataConfig(dataset="csv", data_dir=folder, aggregate_duplicates=True), False),
        (DataConfig(dataset="csv", data_dir=folder), True),
    ):
        prepared = prepare_data(config, SplitConfig(), allow_duplicates=allow)
        assert len(prepared.raw.interactions) == 183
        assert len(prepared.dataset.user) == 180  # the three repeated rows were merged


def test_too_few_interactions_fail_the_contract() -> None:
    with pytest.raises(DataContractError) as info:
        prepare_data(SMALL, SplitConfig(), min_interactions=10_000)
    assert any("interactions" == r.table for r in info.value.report.failures)


def test_require_passed_returns_a_passing_report() -> None:
    prepared = prepare_data(SMALL, SplitConfig(seed=5))
    assert require_passed(prepared.report) is prepared.report
