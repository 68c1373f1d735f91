"""EASE: the closed form against numpy, zero diagonal, pruned sparse export, the memory guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import get_model
from models.base import History
from models.ease import EASE
from models.serving import ItemItemServable, load_servable
from tasks.evaluate import evaluate, popularity_metrics
from tests.models.planted import planted, random_graphs


def fitted(graphs, **hparams) -> EASE:
    model = EASE.from_graphs(graphs, **hparams)
    model.fit(graphs)
    return model


def numpy_ease(graphs, l2: float) -> np.ndarray:
    """Steck's closed form, solved directly: B = I - P diag(1/diag P), P = (X^T X + l2 I)^-1."""
    x = graphs.user_item_csr().to_dense().double().numpy()
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)
    np.fill_diagonal(b, 0.0)  # exactly zero (the formula gives 1 - 1)
    return b


# More users than items (the I x I inverse) and fewer (the Woodbury U x U solve).
SHAPES = [(15, 9, 50), (6, 20, 40)]


@pytest.mark.parametrize(("num_users", "num_items", "num_pairs"), SHAPES)
@pytest.mark.parametrize("l2", [1.0, 30.0, 500.0])
def test_weights_equal_the_closed_form_with_a_zero_diagonal(num_users, num_items, num_pairs, l2):
    graphs = random_graphs(num_users, num_items, num_pairs, seed=4)
    model = fitted(graphs, l2=l2)
    got = model.weights.double().numpy()
    np.testing.assert_allclose(got, numpy_ease(graphs, l2), rtol=1e-4, atol=1e-6)
    assert np.all(np.diag(got) == 0.0)


def test_float32_solve_when_float64_does_not_fit_the_budget():
    graphs = random_graphs(num_users=6, num_items=20, num_pairs=40, seed=4)
    # Two float64 20 x 20 matrices take 6400 bytes, two float32 ones 3200.
    model = EASE.from_graphs(graphs, l2=30.0, max_memory_gib=5000 / 1024**3)
    assert model.solve_dtype() == torch.float32
    model.fit(graphs)
    np.testing.assert_allclose(model.weights.double().numpy(), numpy_ease(graphs, 30.0), rtol=1e-3, atol=1e-5)


def test_too_many_items_for_the_memory_budget_is_refused_with_the_size_and_the_need():
    graphs = random_graphs(num_users=6, num_items=20, num_pairs=40)
    model = EASE.from_graphs(graphs, max_memory_gib=1e-9)
    with pytest.raises(ValueError, match=r"20 x 20.*GiB.*max_memory_gib=1e-09"):
        model.fit(graphs)
    assert not model.fitted


def test_history_scores_equal_known_user_scores_for_the_same_items():
    graphs = random_graphs(num_users=15, num_items=9, num_pairs=50)
    model = fitted(graphs, l2=10.0)
    users = torch.tensor([1, 2, 11])
    crow, col = model.user_indptr, model.user_items
    history = History.from_lists([col[crow[u] : crow[u + 1]].tolist() for u in users])
    with model.inference():
        torch.testing.assert_close(model.score_history(history), model.score_users(users))
        torch.testing.assert_close(model.score_users(users), model.user_rows(users) @ model.weights)


def test_export_keeps_the_largest_weights_of_each_row(tmp_path: Path):
    graphs = random_graphs(num_users=15, num_items=9, num_pairs=50)
    model = fitted(graphs, l2=5.0, export_neighbors=3)
    servable = model.export()
    assert isinstance(servable, ItemItemServable)
    assert int(servable.weights.crow_indices().diff().max()) <= 3
    kept = servable.weights.to_dense().double().numpy()
    dense = model.weights.double().numpy()
    for row, full in zip(kept, dense, strict=True):
        mask = row != 0
        assert mask.sum() == min(3, int((full != 0).sum()))
        np.testing.assert_allclose(row[mask], full[mask], rtol=1e-6)
        assert np.abs(full[~mask]).max() <= np.abs(row[mask]).min() + 1e-7
    loaded = load_servable(servable.save(tmp_path / "servable"))
    np.testing.assert_array_equal(loaded.weights.to_dense().numpy(), servable.weights.to_dense().numpy())


def test_unpruned_export_serves_the_training_scores(tmp_path: Path):
    graphs = random_graphs(num_users=15, num_items=9, num_pairs=50)
    model = fitted(graphs, l2=5.0, export_neighbors=9)
    loaded = load_servable(model.export().save(tmp_path / "servable"))
    users = np.arange(graphs.num_users)
    with model.inference():
        expected = model.score_users(torch.as_tensor(users)).numpy()
        np.testing.assert_allclose(loaded.score_users(users), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            loaded.score_history(np.array([0, 3]), np.array([0, 4, 8])),
            model.score_history(History.from_lists([[0, 4, 8]])).numpy(),
            rtol=1e-5,
            atol=1e-6,
        )


def test_fitted_state_loads_into_a_fresh_model():
    graphs = random_graphs()
    model = fitted(graphs, l2=5.0)
    fresh = EASE.from_graphs(graphs, l2=5.0)
    fresh.load_state_dict(model.state_dict())
    users = torch.arange(graphs.num_users)
    torch.testing.assert_close(fresh.score_users(users), model.score_users(users))


@pytest.mark.parametrize("bad", [{"l2": 0.0}, {"export_neighbors": 0}, {"max_memory_gib": 0.0}])
def test_bad_hyperparameters_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        EASE.from_graphs(random_graphs(), **bad)


def test_declares_a_closed_form_item_item_model_tuned_on_l2():
    cls = get_model("ease")
    assert cls.closed_form and cls.family == "item-item" and "history" in cls.new_users
    assert cls.describe()["search_space"] == {"l2": {"type": "float", "low": 1.0, "high": 1e4, "log": True}}


def test_beats_popularity_on_planted_data():
    _, split, graphs = planted()
    model = fitted(graphs, l2=50.0)
    ours = evaluate(model, split, "test", ks=(10,))["ndcg@10"]
    popularity = popularity_metrics(split, "test", ks=(10,))["ndcg@10"]
    assert ours > 1.2 * popularity
