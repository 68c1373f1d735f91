"""The contract every registered recommender keeps, parametrised over the registry.

A new model file is covered here without editing this file: it is trained a few steps (or fitted) through
the real trainer, scores known and new users, is evaluated with full ranking, exported, loaded back from
disk, and recommends through the pyfunc in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from models import MODELS, get_model
from models.base import REQUIREMENTS, History, Recommender, describe_search_space
from models.serving import load_servable
from tasks.compat import ModelDataMismatchError, check_requirements
from tasks.evaluate import evaluate
from tasks.recommend import export_recommender
from tasks.train import TrainConfig, TrainedModel, train
from tests.models.planted import planted

NAMES = sorted(MODELS)


@pytest.fixture(scope="module")
def data():
    return planted(num_users=60, num_items=40, num_interactions=900, seed=5)


@pytest.fixture(scope="module")
def trained(data) -> dict[str, TrainedModel]:
    _, split, graphs = data
    cache: dict[str, TrainedModel] = {}
    for name in NAMES:
        config = TrainConfig(model=name, epochs=2, batch_size=256, progress=False, device="cpu", seed=1)
        cache[name] = train(graphs, split, config)
    return cache


def test_registry_is_not_empty_and_every_entry_declares_itself() -> None:
    assert {"mf", "lightgcn", "ngcf"} <= set(NAMES)
    for name in NAMES:
        info = MODELS[name].describe()
        assert info["name"] == name
        assert set(info["requires"]) <= set(REQUIREMENTS)
        assert info["new_users"], f"{name} must say how it scores a new user"
        assert set(info["search_space"]) <= set(info["defaults"]), name


@pytest.mark.parametrize("name", NAMES)
def test_trains_through_the_real_trainer_and_scores_every_item(name, data, trained) -> None:
    _, split, graphs = data
    result = trained[name]
    assert result.history and result.epochs_run >= 1
    model = result.model
    users = torch.tensor([0, 3, 7])
    with model.inference():
        scores = model.score_users(users)
    assert scores.shape == (3, graphs.num_items)
    assert torch.isfinite(scores).all()
    metrics = evaluate(model, split, "valid", ks=(5,))
    assert metrics.users_evaluated > 0
    assert 0.0 <= metrics["ndcg@5"] <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_search_space_suggestions_build_a_model(name, data) -> None:
    _, _, graphs = data
    cls = get_model(name)
    space = describe_search_space(cls)
    first = {
        key: spec["choices"][0] if spec["type"] == "categorical" else spec["low"]
        for key, spec in space.items()
    }
    model = cls.from_graphs(graphs, **first)
    assert isinstance(model, Recommender)
    assert model.hparams


@pytest.mark.parametrize("name", NAMES)
def test_new_users_are_scored_from_their_history(name, data, trained) -> None:
    _, _, graphs = data
    model = trained[name].model
    csr = graphs.user_item_csr()
    rows = [csr.col_indices()[csr.crow_indices()[u] : csr.crow_indices()[u + 1]].tolist() for u in (0, 1)]
    with model.inference():
        scores = model.score_history(History.from_lists(rows))
        empty = model.score_history(History.from_lists([[]]))
    assert scores.shape == (2, graphs.num_items)
    assert torch.isfinite(scores).all()
    assert empty.shape == (1, graphs.num_items)
    # Two users with different histories are told apart (a silent constant row would not be).
    assert not torch.allclose(scores[0], scores[1])


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trips_through_disk(name, trained, tmp_path: Path) -> None:
    model = trained[name].model
    servable = model.export()
    loaded = load_servable(servable.save(tmp_path / name))
    users = np.array([0, 5, 9])
    with model.inference():
        expected = model.score_users(torch.from_numpy(users)).float().numpy()
    np.testing.assert_allclose(loaded.score_users(users), expected, rtol=1e-4, atol=1e-5)
    history = (np.array([0, 2, 3]), np.array([1, 4, 2]))
    np.testing.assert_allclose(
        loaded.score_history(*history), servable.score_history(*history), rtol=1e-4, atol=1e-5
    )


def test_every_model_recommends_from_a_fresh_process(data, trained, tmp_path: Path) -> None:
    dataset, split, _ = data
    folders = {}
    for name in NAMES:
        artifacts = export_recommender(trained[name].model, dataset, split, tmp_path / name)
        folders[name] = artifacts
    users = dataset.user_ids[:2].tolist()
    history = ",".join(str(i) for i in dataset.item_ids[:3].tolist())
    script = textwrap.dedent(
        f"""
        import json, pandas as pd
        from tasks.recommend import ServedRecommender
        out = {{}}
        for name, artifacts in json.loads({json.dumps(json.dumps(folders))}).items():
            model = ServedRecommender()
            model._load(artifacts)
            frame = pd.DataFrame({{"user": {users!r} + [None], "history": [None, None, {history!r}]}})
            out[name] = model.predict(None, frame, params={{"k": 5}}).to_dict(orient="records")
        print(json.dumps(out, default=str))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    first_history = {str(i) for i in dataset.item_ids[:3].tolist()}
    for name in NAMES:
        rows = out[name]
        assert len(rows) == 15, name
        new_user = [r for r in rows if r["user"] is None or r["user"] != r["user"]]  # None or NaN
        assert len(new_user) == 5 and not any(r["fallback"] for r in new_user), name
        assert not {str(r["item"]) for r in new_user} & first_history, name


class _NeedsSocial(Recommender):
    name: ClassVar[str] = "needs-social"
    requires: ClassVar[frozenset[str]] = frozenset({"user_item", "social", "kg"})

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {}

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(users), self.num_items)

    def score_history(self, history: History) -> torch.Tensor:
        return torch.zeros(len(history), self.num_items)


def test_requirements_are_checked_before_work_and_name_the_model_and_why(data, monkeypatch) -> None:
    _, _, graphs = data
    monkeypatch.setitem(MODELS, "needs-social", _NeedsSocial)
    check_requirements(["mf"], graphs, "toy")
    social_free = graphs.__class__(
        **{**graphs.__dict__, "social_edge_index": None, "social_adj": None, "kg_edge_index": None}
    )
    with pytest.raises(ModelDataMismatchError) as err:
        check_requirements(["mf", "needs-social"], social_free, "toy")
    message = str(err.value)
    assert "needs-social cannot run on dataset 'toy'" in message
    assert "needs social" in message and "needs kg" in message
    assert "mf cannot" not in message
