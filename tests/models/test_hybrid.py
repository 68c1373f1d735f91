from __future__ import annotations

import numpy as np
import pytest
import torch

from models.hybrid import ContentRecommender, HybridRecommender
from models.serving import load_servable
from tasks.config import SplitConfig
from tasks.evaluate import evaluate, popularity_metrics, unsupported_split
from tasks.graphs import build_graphs
from tasks.ingest.dataset import build_dataset
from tasks.ingest.synthetic import make_synthetic
from tasks.split import split_dataset
from tasks.train import TrainConfig, train


@pytest.fixture(scope="module")
def cold():
    dataset = build_dataset(make_synthetic(200, 120, 4000, seed=3))
    split = split_dataset(dataset, SplitConfig(method="cold-items", cold_fraction=0.3, seed=3))
    return dataset, split, build_graphs(dataset, split)


def _cold_items(split) -> np.ndarray:
    warm = np.zeros(split.num_items, dtype=bool)
    warm[split.train[:, 1]] = True
    return np.flatnonzero(~warm)


def test_cold_items_are_scored_from_their_features(cold):
    _, split, graphs = cold
    model = HybridRecommender.from_graphs(graphs)
    items = torch.as_tensor(_cold_items(split))
    with model.inference():
        scores = model.score_users(torch.tensor([0, 1]))[:, items]
    # Not a constant row: cold items with different features get different scores ...
    assert scores[0].std() > 1e-4
    # ... and a cold item's score is its user's vector against its content vector alone (no id part).
    with torch.no_grad():
        user, _ = model.embeddings()
        _, content = model.content()
    assert torch.allclose(scores, user[[0, 1]] @ content[items].T, atol=1e-5)
    # Changing a cold item's features changes its score; its (untrained) id embedding does not.
    with torch.no_grad():
        model.item_embedding.weight[items[0]] += 5.0
        unchanged = model.score_users(torch.tensor([0]))[0, items[0]]
        model.item_features[items[0]] = model.item_features[items[1]]
        moved = model.score_users(torch.tensor([0]))[0, items[0]]
    assert torch.isclose(unchanged, scores[0, 0], atol=1e-5)
    assert torch.isclose(moved, scores[0, 1], atol=1e-5)


@pytest.mark.parametrize("name", ["hybrid", "content"])
def test_trained_on_warm_items_it_ranks_cold_items_above_the_popularity_floor(cold, name):
    _, split, graphs = cold
    assert unsupported_split(HybridRecommender, "cold-items") is None
    config = TrainConfig(model=name, epochs=15, batch_size=256, progress=False, device="cpu", seed=1, lr=0.01)
    model = train(graphs, split, config).model
    ours = evaluate(model, split, "valid", ks=(10,))
    floor = popularity_metrics(split, "valid", ks=(10,))
    assert ours.users_evaluated == floor.users_evaluated > 0
    assert ours["ndcg@10"] > 1.5 * floor["ndcg@10"]


def test_export_carries_every_catalogue_item_cold_ones_included(cold, tmp_path):
    _, split, graphs = cold
    model = ContentRecommender.from_graphs(graphs)
    loaded = load_servable(model.export().save(tmp_path / "content"))
    users = np.array([0, 4])
    with model.inference():
        expected = model.score_users(torch.from_numpy(users)).numpy()
    served = loaded.score_users(users)
    assert served.shape == (2, graphs.num_items)
    np.testing.assert_allclose(served[:, _cold_items(split)], expected[:, _cold_items(split)], rtol=1e-5)


def test_needs_item_features():
    from tests.models.planted import random_graphs

    with pytest.raises(ValueError, match="needs item features"):
        HybridRecommender.from_graphs(random_graphs())
