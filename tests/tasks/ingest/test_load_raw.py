"""``load_raw`` dispatches on ``DataConfig.dataset`` and passes each source its options."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import DataConfig
from tasks.ingest import SOURCES, load_raw
from tasks.ingest.errors import DatasetNotAvailableError
from tasks.ingest.tables import RawTables


def test_sources_cover_every_config_choice() -> None:
    assert set(SOURCES) == set(DataConfig.model_fields["dataset"].annotation.__args__)  # type: ignore[union-attr]
    assert all(text and "\n" not in text for text in SOURCES.values())


def test_synthetic_is_dispatched_lazily_with_the_config_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, int] = {}

    def make_synthetic(num_users: int, num_items: int, num_interactions: int, seed: int) -> RawTables:
        seen.update(users=num_users, items=num_items, interactions=num_interactions, seed=seed)
        return RawTables(name="synthetic", interactions=pd.DataFrame({"user": [0], "item": [0]}))

    module = types.ModuleType("tasks.ingest.synthetic")
    module.make_synthetic = make_synthetic  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tasks.ingest.synthetic", module)
    config = DataConfig(synthetic_users=20, synthetic_items=30, synthetic_interactions=400, synthetic_seed=7)
    assert load_raw(config).name == "synthetic"
    assert seen == {"users": 20, "items": 30, "interactions": 400, "seed": 7}


def test_csv_options_reach_the_loader(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("u|i\n1|2\n")
    config = DataConfig(dataset="csv", data_dir=tmp_path, csv_sep="|", csv_columns={"user": "u", "item": "i"})
    assert load_raw(config).interactions.to_numpy().tolist() == [[1, 2]]


def test_lightgcn_and_recbole_options_reach_the_loaders(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("1 1\n")
    (tmp_path / "test.txt").write_text("1 2\n")
    assert load_raw(DataConfig(dataset="lightgcn", data_dir=tmp_path)).interactions["user"].tolist() == [0, 0]
    raw = load_raw(DataConfig(dataset="lightgcn", data_dir=tmp_path, one_based=False))
    assert raw.interactions["user"].tolist() == [1, 1]
    (tmp_path / "a.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    (tmp_path / "b.inter").write_text("user_id:token\titem_id:token\n3\t4\n")
    raw = load_raw(DataConfig(dataset="recbole", data_dir=tmp_path, recbole_name="b"))
    assert raw.interactions.to_numpy().tolist() == [[3, 4]]


def test_downloadable_source_offline(tmp_path: Path) -> None:
    config = DataConfig(dataset="lastfm-hetrec", data_dir=tmp_path, download=False)
    with pytest.raises(DatasetNotAvailableError, match="hetrec2011-lastfm-2k.zip"):
        load_raw(config)


@pytest.mark.parametrize("dataset", ["recbole", "lightgcn", "csv"])
def test_local_sources_need_a_folder(dataset: str) -> None:
    with pytest.raises(DatasetNotAvailableError, match="--data-dir"):
        load_raw(DataConfig(dataset=dataset))  # type: ignore[arg-type]
