"""ItemKNN: the blocked top-N cosine against a dense brute force, shrinkage, history scoring, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import get_model
from models.base import History
from models.itemknn import ItemKNN
from models.serving import ItemItemServable, load_servable
from tasks.evaluate import evaluate, popularity_metrics
from tests.models.planted import graphs_from_pairs, planted, random_graphs


def fitted(graphs, block_size: int = 1024, **hparams) -> ItemKNN:
    model = ItemKNN.from_graphs(graphs, **hparams)
    model.block_size = block_size
    model.fit(graphs)
    return model


def dense_cosine(graphs, shrink: float, normalize: bool) -> np.ndarray:
    """Brute force: the full item-item similarity, self-similarity zeroed."""
    x = graphs.user_item_csr().to_dense().double().numpy()
    dots = x.T @ x
    if normalize:
        norms = np.sqrt((x * x).sum(0))
        dots = dots / np.maximum(np.outer(norms, norms) + shrink, 1e-12)
    np.fill_diagonal(dots, 0.0)
    return dots


@pytest.mark.parametrize("block_size", [1, 4, 1024])
@pytest.mark.parametrize(("shrink", "normalize"), [(0.0, True), (5.0, True), (0.0, False)])
def test_without_pruning_the_blocked_similarity_is_the_dense_one(block_size, shrink, normalize):
    graphs = random_graphs(num_users=15, num_items=11, num_pairs=60)
    model = fitted(graphs, block_size, topk=10, shrink=shrink, normalize=normalize)
    got = model.sparse_weights().to_dense().double().numpy()
    np.testing.assert_allclose(got, dense_cosine(graphs, shrink, normalize), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block_size", [1, 3, 1024])
@pytest.mark.parametrize("topk", [1, 3])
def test_pruning_keeps_each_rows_top_n(block_size, topk):
    graphs = random_graphs(num_users=20, num_items=13, num_pairs=70, seed=2)
    model = fitted(graphs, block_size, topk=topk, shrink=2.0)
    kept = model.sparse_weights().to_dense().double().numpy()
    reference = dense_cosine(graphs, 2.0, True)
    for row, ref in zip(kept, reference, strict=True):
        mask = row != 0
        assert mask.sum() == min(topk, int((ref > 0).sum()))
        np.testing.assert_allclose(row[mask], ref[mask], rtol=1e-5)
        # Whatever was dropped is no larger than anything kept (ties may go either way).
        if (~mask).any():
            assert ref[~mask].max() <= row[mask].min() + 1e-6


def test_shrinkage_lowers_rarely_co_rated_pairs():
    # Items 0 and 1 share one user (cosine 1); items 2 and 3 share ten users (cosine 1 too).
    pairs = [(0, 0), (0, 1)] + [(u, i) for u in range(1, 11) for i in (2, 3)]
    graphs = graphs_from_pairs(np.array(pairs), num_users=11, num_items=4)
    plain = fitted(graphs, shrink=0.0).sparse_weights().to_dense()
    shrunk = fitted(graphs, shrink=10.0).sparse_weights().to_dense()
    assert plain[0, 1] == pytest.approx(plain[2, 3]) and plain[0, 1] == pytest.approx(1.0)
    assert shrunk[0, 1] == pytest.approx(1 / 11)
    assert shrunk[2, 3] == pytest.approx(10 / 20)


def test_history_scores_equal_known_user_scores_for_the_same_items():
    graphs = random_graphs(num_users=15, num_items=11, num_pairs=60)
    model = fitted(graphs, topk=4, shrink=1.0)
    users = torch.tensor([0, 3, 7, 14])
    crow, col = model.user_indptr, model.user_items
    history = History.from_lists([col[crow[u] : crow[u + 1]].tolist() for u in users])
    with model.inference():
        torch.testing.assert_close(model.score_history(history), model.score_users(users))
    # Outside inference() (no cached transpose) the scores are the same.
    torch.testing.assert_close(
        model.score_users(users), model.user_rows(users) @ model.sparse_weights().to_dense()
    )


def test_scores_sum_the_neighbours_of_the_history():
    graphs = random_graphs(num_users=10, num_items=8, num_pairs=40, seed=5)
    model = fitted(graphs, topk=3)
    w = model.sparse_weights().to_dense()
    scores = model.score_history(History.from_lists([[1, 4]]))
    torch.testing.assert_close(scores[0], w[1] + w[4])


def test_export_is_sparse_and_round_trips(tmp_path: Path):
    graphs = random_graphs(num_users=20, num_items=13, num_pairs=70, seed=3)
    model = fitted(graphs, topk=2)
    servable = model.export()
    assert isinstance(servable, ItemItemServable)
    assert int((servable.weights.crow_indices().diff()).max()) <= 2
    loaded = load_servable(servable.save(tmp_path / "servable"))
    users = np.arange(graphs.num_users)
    with model.inference():
        expected = model.score_users(torch.as_tensor(users)).numpy()
    np.testing.assert_allclose(loaded.score_users(users), expected, rtol=1e-6)
    np.testing.assert_allclose(
        loaded.score_history(np.array([0, 2]), np.array([5, 9])),
        model.score_history(History.from_lists([[5, 9]])).numpy(),
        rtol=1e-6,
    )


def test_fitted_state_loads_into_a_fresh_model():
    graphs = random_graphs()
    model = fitted(graphs, topk=3)
    fresh = ItemKNN.from_graphs(graphs, topk=3)
    fresh.load_state_dict(model.state_dict())
    users = torch.arange(graphs.num_users)
    torch.testing.assert_close(fresh.score_users(users), model.score_users(users))


def test_scoring_before_fit_is_refused():
    model = ItemKNN.from_graphs(random_graphs())
    with pytest.raises(RuntimeError, match="fit"):
        model.score_users(torch.arange(2))


def test_declares_a_closed_form_item_item_model_with_a_search_space():
    cls = get_model("itemknn")
    assert cls.closed_form and cls.family == "item-item" and "history" in cls.new_users
    described = cls.describe()
    assert set(described["search_space"]) == {"topk", "shrink", "normalize"}
    assert described["defaults"] == {"topk": 100, "shrink": 0.0, "normalize": True}


def test_beats_popularity_on_planted_data():
    _, split, graphs = planted()
    model = fitted(graphs, topk=50)
    ours = evaluate(model, split, "test", ks=(10,))["ndcg@10"]
    popularity = popularity_metrics(split, "test", ks=(10,))["ndcg@10"]
    assert ours > 1.2 * popularity
