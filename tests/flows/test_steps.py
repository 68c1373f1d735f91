"""The Prefect cache of the steps: a hit when nothing changed, a miss when the code it runs changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect import flow

from flows import steps as t
from tasks import code_version as cv
from tasks.config import DataConfig, SplitConfig

pytestmark = pytest.mark.slow


@flow(name="graphs-cache-probe")
def graphs_flow(seed: int) -> str:
    from tasks.prepare import prepare_data

    prepared = prepare_data(
        DataConfig(synthetic_users=20, synthetic_items=30, synthetic_interactions=300, synthetic_seed=seed),
        SplitConfig(seed=seed),
    )
    state = t.build_graphs(prepared.dataset, prepared.split, return_state=True)
    return state.name


def test_cache_misses_after_a_code_change_and_hits_otherwise(prefect_harness, tmp_path: Path, monkeypatch):
    seed = 4242  # a seed no other test uses, so the first run cannot hit an older cache entry
    assert graphs_flow(seed) == "Completed"
    assert graphs_flow(seed) == "Cached"

    copies = {name: tmp_path / name for name in cv.SOURCE_PACKAGES}
    for name, folder in copies.items():
        shutil.copytree(cv.package_root(name), folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "package_root", lambda name: copies[name])
    assert graphs_flow(seed) == "Cached"  # the same source, read from elsewhere: still a hit

    with (copies["models"] / "graphs.py").open("a") as handle:
        handle.write("\n# an edit to the Graphs type\n")
    assert graphs_flow(seed) == "Completed"  # the pickled class changed: an old pickle must not return
    assert graphs_flow(seed) == "Cached"

    with (copies["tasks"] / "graphs.py").open("a") as handle:
        handle.write("\n# an edit to the graph builder\n")
    assert graphs_flow(seed) == "Completed"  # the code it runs changed: computed afresh
    assert graphs_flow(seed) == "Cached"


def test_train_key_follows_the_model_code(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from tasks.train import TrainConfig

    params = {
        "config": TrainConfig(model="mf", epochs=2, progress=False),
        "dataset_fingerprint": "abc",
        "split": SimpleNamespace(fingerprint="def"),
    }
    before = t._train_key(None, params)  # type: ignore[arg-type]
    assert t._train_key(None, params) == before  # type: ignore[arg-type]
    copies = {name: tmp_path / name for name in cv.SOURCE_PACKAGES}
    for name, folder in copies.items():
        shutil.copytree(cv.package_root(name), folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "package_root", lambda name: copies[name])
    assert t._train_key(None, params) == before  # type: ignore[arg-type]
    (copies["models"] / "mf.py").write_text((copies["models"] / "mf.py").read_text() + "\n# edit\n")
    assert t._train_key(None, params) != before  # type: ignore[arg-type]


def test_cached_steps_expire() -> None:
    for step in (t.build_dataset, t.split_data, t.build_graphs, t.train_model):
        assert step.cache_expiration == t.CACHE_EXPIRATION, step.name
    assert t.CACHE_EXPIRATION.total_seconds() > 0
