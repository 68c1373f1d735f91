"""GraphFilter (GF-CF / BSPM): every term against dense numpy, the SVD against LAPACK, export, new users."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import get_model
from models.base import History
from models.graphfilter import GraphFilter, sharpening_polynomial
from tasks.evaluate import evaluate, popularity_metrics
from tests.models.planted import planted, random_graphs


def fitted(graphs, **hparams) -> GraphFilter:
    model = GraphFilter.from_graphs(graphs, **hparams)
    model.fit(graphs)
    return model


def dense_parts(graphs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X``, ``P = R~^T R~`` and the item scale ``d_i^-1/2`` straight from the definitions, in float64."""
    x = graphs.user_item_csr().to_dense().double().numpy()
    du, di = x.sum(1), x.sum(0)
    inv_u = np.where(du > 0, 1 / np.sqrt(np.maximum(du, 1)), 0)
    inv_i = np.where(di > 0, 1 / np.sqrt(np.maximum(di, 1)), 0)
    norm = inv_u[:, None] * x * inv_i[None, :]
    return x, norm.T @ norm, inv_i


def dense_filter(graphs, rank, beta, blur_time, blur_steps, sharpen_time, sharpen_steps, order) -> np.ndarray:
    """The filter as one dense ``[I, I]`` matrix: Euler blur, exact ideal low-pass, Taylor sharpening."""
    x, p, inv_i = dense_parts(graphs)
    n = p.shape[0]
    eye = np.eye(n)
    h = blur_time / blur_steps
    w = np.linalg.matrix_power(eye + h * (p - eye), blur_steps)
    if beta > 0:
        _, _, vt = np.linalg.svd(
            np.diag(np.where(x.sum(1) > 0, 1 / np.sqrt(np.maximum(x.sum(1), 1)), 0)) @ x @ np.diag(inv_i)
        )
        v = vt[:rank].T
        scale_out = np.where(inv_i > 0, 1 / np.where(inv_i > 0, inv_i, 1), 0)
        w = w + beta * (np.diag(inv_i) @ v @ v.T @ np.diag(scale_out))
    if sharpen_time > 0:
        step = sharpen_time / sharpen_steps
        one = sum(c * np.linalg.matrix_power(p, j) for j, c in enumerate(sharpening_polynomial(step, order)))
        w = w @ np.linalg.matrix_power(one, sharpen_steps)
    return w


CASES = [
    # GF-CF's linear filter alone, GF-CF with the ideal low-pass, BSPM (RK4 sharpening), multi-step variants.
    {"rank": 4, "ideal_weight": 0.0},
    {"rank": 5, "ideal_weight": 0.3},
    {"rank": 6, "ideal_weight": 0.2, "sharpen_time": 2.5, "sharpen_order": 4},
    {
        "rank": 3,
        "ideal_weight": 0.5,
        "blur_time": 0.7,
        "blur_steps": 3,
        "sharpen_time": 1.2,
        "sharpen_steps": 2,
    },
]


@pytest.mark.parametrize("hparams", CASES)
def test_scores_equal_the_dense_filter(hparams):
    graphs = random_graphs()
    model = fitted(graphs, svd_iterations=40, **hparams)
    full = {**GraphFilter.default_hparams(), **hparams}
    w = dense_filter(
        graphs,
        full["rank"],
        full["ideal_weight"],
        full["blur_time"],
        full["blur_steps"],
        full["sharpen_time"],
        full["sharpen_steps"],
        full["sharpen_order"],
    )
    x = graphs.user_item_csr().to_dense().double().numpy()
    users = torch.arange(graphs.num_users)
    np.testing.assert_allclose(model.score_users(users).double().numpy(), x @ w, rtol=2e-3, atol=2e-4)


def test_basis_spans_the_top_singular_subspace():
    graphs = random_graphs()
    model = fitted(graphs, rank=4, svd_iterations=60)
    x, _, inv_i = dense_parts(graphs)
    du = x.sum(1)
    norm = np.where(du > 0, 1 / np.sqrt(np.maximum(du, 1)), 0)[:, None] * x * inv_i[None, :]
    _, s, vt = np.linalg.svd(norm)
    assert s[3] > s[4] * 1.01  # a gap, so the top-4 subspace is well defined
    basis = model.basis.double().numpy()
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-4)
    np.testing.assert_allclose(basis @ basis.T, vt[:4].T @ vt[:4], atol=2e-3)


def test_rank_is_capped_by_the_data_and_zero_beta_skips_the_svd():
    graphs = random_graphs()
    assert fitted(graphs, rank=10_000).basis.shape == (
        graphs.num_items,
        min(graphs.num_users, graphs.num_items),
    )
    assert fitted(graphs, ideal_weight=0.0).basis.shape == (graphs.num_items, 0)


def test_rk4_step_is_the_fourth_order_taylor_polynomial():
    # Classical RK4 on dx/dt = -x P, one step h, written out, against the coefficients the model uses.
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    p = a @ a.T / 10
    x = rng.normal(size=(1, 5))
    h = 0.8

    def f(y):
        return -y @ p

    k1 = f(x)
    k2 = f(x + h / 2 * k1)
    k3 = f(x + h / 2 * k2)
    k4 = f(x + h * k3)
    rk4 = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    poly = sum(c * x @ np.linalg.matrix_power(p, j) for j, c in enumerate(sharpening_polynomial(h, 4)))
    np.testing.assert_allclose(rk4, poly, rtol=1e-12)
    assert sharpening_polynomial(h, 1) == [1.0, -h]
    assert sharpening_polynomial(2.0, 3)[3] == pytest.approx(-8 / math.factorial(3))


def test_new_user_history_scores_like_the_known_user():
    graphs = random_graphs()
    model = fitted(graphs, rank=4, sharpen_time=1.0, sharpen_order=4)
    csr = graphs.user_item_csr()
    crow, col = csr.crow_indices(), csr.col_indices()
    users = [0, 3, 7]
    history = History.from_lists([col[crow[u] : crow[u + 1]].tolist() for u in users])
    torch.testing.assert_close(model.score_history(history), model.score_users(torch.tensor(users)))


def test_export_with_every_neighbour_is_the_dense_filter_and_state_reloads():
    graphs = random_graphs()
    model = fitted(graphs, rank=4, ideal_weight=0.4, sharpen_time=1.5, export_neighbors=10_000)
    eye = torch.eye(graphs.num_items)
    dense_w = model.score_history(History.from_lists([[i] for i in range(graphs.num_items)]))
    torch.testing.assert_close(dense_w, model._score_rows(eye))
    sparse_w = model.sparse_weights().to_dense()
    torch.testing.assert_close(sparse_w, dense_w, rtol=1e-5, atol=1e-6)
    fresh = GraphFilter.from_graphs(graphs, rank=4, ideal_weight=0.4, sharpen_time=1.5)
    fresh.load_state_dict(model.state_dict())
    users = torch.arange(graphs.num_users)
    torch.testing.assert_close(fresh.score_users(users), model.score_users(users))


def test_pruned_export_keeps_the_largest_weights_per_row():
    graphs = random_graphs()
    model = fitted(graphs, rank=4, sharpen_time=2.0, sharpen_order=4, export_neighbors=3)
    sparse_w = model.sparse_weights()
    counts = sparse_w.crow_indices().diff()
    assert int(counts.max()) <= 3
    dense_w = model._score_rows(torch.eye(graphs.num_items))
    kept = sparse_w.to_dense()
    for row in range(graphs.num_items):
        threshold = dense_w[row].abs().topk(3).values.min()
        nonzero = kept[row] != 0
        assert bool((kept[row][nonzero].abs() >= threshold - 1e-6).all())


@pytest.mark.parametrize(
    "bad",
    [{"rank": 0}, {"ideal_weight": -0.1}, {"sharpen_order": 5}, {"blur_steps": 0}, {"export_neighbors": 0}],
)
def test_bad_hyperparameters_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        GraphFilter.from_graphs(random_graphs(), **bad)


def test_declares_a_closed_form_item_item_model_with_the_published_settings_in_its_space():
    cls = get_model("graphfilter")
    assert cls.closed_form and cls.family == "item-item" and "history" in cls.new_users
    space = cls.describe()["search_space"]
    assert space["rank"]["low"] <= 256 <= space["rank"]["high"]  # GF-CF
    assert space["rank"]["low"] <= 448 <= space["rank"]["high"]  # BSPM
    assert space["sharpen_time"]["high"] >= 2.5 and 4 in space["sharpen_order"]["choices"]


def test_beats_popularity_on_planted_data():
    _, split, graphs = planted()
    model = fitted(graphs, rank=16)
    ours = evaluate(model, split, "test", ks=(10,))["ndcg@10"]
    popularity = popularity_metrics(split, "test", ks=(10,))["ndcg@10"]
    assert ours > 1.2 * popularity


def test_the_tuner_starts_from_bspm_published_setting():
    from tasks.train import TrainConfig
    from tasks.tune import prior_params

    cls = get_model("graphfilter")
    params = prior_params(cls, cls.train_space(), TrainConfig(model="graphfilter"))
    assert params == {"rank": 448, "ideal_weight": 0.2, "sharpen_time": 2.5, "sharpen_order": 4}
    assert cls.train_space() == {}
