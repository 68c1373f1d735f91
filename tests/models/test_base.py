from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from models import MODELS, Recommender, UnknownModelError, get_model
from models.base import register_model
from models.losses import batch_l2, bpr_loss, ranking_loss, softmax_loss
from tests.models.planted import batch, random_graphs


class FakeTrial:
    """Records what a search space asks for and answers the lower bound / first choice."""

    def __init__(self) -> None:
        self.asked: dict[str, Any] = {}

    def suggest_float(self, name, low, high, *, step=None, log=False):
        assert low <= high
        self.asked[name] = ("float", low, high)
        return low

    def suggest_int(self, name, low, high, *, step=1, log=False):
        assert low <= high
        self.asked[name] = ("int", low, high)
        return low

    def suggest_categorical(self, name, choices):
        self.asked[name] = ("cat", list(choices))
        return choices[0]


def test_registry_holds_the_three_models():
    assert {"mf", "lightgcn", "ngcf"} <= set(MODELS)
    for name, cls in MODELS.items():
        assert cls.name == name
        assert issubclass(cls, Recommender)


def test_unknown_model_error_names_it_and_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as err:
        get_model("lightgnc")
    message = str(err.value)
    assert "'lightgnc'" in message
    for name in ("lightgcn", "mf", "ngcf"):
        assert name in message


def test_get_model_is_case_insensitive():
    assert get_model("LightGCN") is MODELS["lightgcn"]


def test_register_model_rejects_a_taken_name():
    base: Any = MODELS["mf"]

    class Impostor(base):
        name = "lightgcn"

    with pytest.raises(ValueError, match="taken"):
        register_model(Impostor)
    assert MODELS["lightgcn"].__name__ == "LightGCN"


@pytest.mark.parametrize("name", ["mf", "lightgcn", "ngcf"])
def test_search_space_returns_constructor_hyperparameters(name):
    cls = get_model(name)
    trial = FakeTrial()
    space = cls.search_space(trial)
    assert set(space) <= set(cls.default_hparams())
    assert set(space) == set(trial.asked)
    model = cls.from_graphs(random_graphs(), **space)
    for key, value in space.items():
        assert model.hparams[key] == value


@pytest.mark.parametrize("name", ["mf", "lightgcn", "ngcf"])
def test_unknown_hyperparameter_is_named(name):
    with pytest.raises(TypeError, match="num_heads"):
        get_model(name).from_graphs(random_graphs(), num_heads=4)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "ngcf"])
def test_repr_shows_key_hyperparameters(name):
    model = get_model(name).from_graphs(random_graphs(), embedding_dim=8)
    text = repr(model)
    assert "embedding_dim=8" in text and "12 users" in text and "9 items" in text


def test_bpr_matches_its_formula():
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    expected = torch.stack(
        [-torch.log(torch.sigmoid(pos[i] - neg[i, j])) for i in range(2) for j in range(2)]
    ).mean()
    assert torch.allclose(bpr_loss(pos, neg), expected)
    assert torch.allclose(ranking_loss(pos, neg, loss="bpr"), expected)


def test_softmax_is_cross_entropy_of_the_positive():
    pos = torch.tensor([2.0, 0.5])
    neg = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    t = 0.5
    logits = torch.cat([pos[:, None], neg], 1) / t
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(softmax_loss(pos, neg, t), expected)
    with pytest.raises(ValueError, match="temperature"):
        softmax_loss(pos, neg, 0.0)
    with pytest.raises(ValueError, match="bpr, softmax"):
        ranking_loss(pos, neg, loss="hinge")  # type: ignore[arg-type]


def test_batch_l2_is_half_squared_norm_over_batch():
    a = torch.tensor([[3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert math.isclose(float(batch_l2(a, b, batch_size=5)), 0.5 * (25 + 1 + 4) / 5)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "ngcf"])
def test_loss_adds_l2_on_layer0_embeddings_of_the_batch(name):
    graphs = random_graphs()
    users, pos, neg = batch(graphs.num_users, graphs.num_items, negatives=2)
    with_l2 = get_model(name).from_graphs(graphs, reg_weight=0.5).eval()
    torch.manual_seed(0)
    no_l2 = get_model(name).from_graphs(graphs, reg_weight=0.0).eval()
    no_l2.load_state_dict(with_l2.state_dict())
    user0, item0 = with_l2.layer0_embeddings()
    expected_l2 = batch_l2(user0[users], item0[pos], item0[neg], batch_size=len(users))
    diff = with_l2.loss(users, pos, neg) - no_l2.loss(users, pos, neg)
    assert torch.allclose(diff, 0.5 * expected_l2, atol=1e-6)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "ngcf"])
def test_score_agrees_with_pair_score(name):
    model = get_model(name).from_graphs(random_graphs(), embedding_dim=8).eval()
    user_emb, item_emb = model.embeddings()
    full = model.score(user_emb[:3], item_emb)
    items = torch.tensor([[0, 4], [1, 2], [8, 8]])
    pairs = model.pair_score(user_emb[:3], item_emb[items])
    assert torch.allclose(pairs, full.gather(1, items), atol=1e-6)


def test_fold_in_with_a_kept_gram_matches_and_the_servable_keeps_it() -> None:
    from models.base import History, fold_in, item_gram
    from models.serving import EmbeddingServable

    gen = torch.Generator().manual_seed(0)
    item_emb = torch.randn(30, 6, generator=gen)
    history = History.from_lists([[1, 4, 9], [2], [0, 5, 7, 29]])
    torch.testing.assert_close(
        fold_in(item_emb, history, gram=item_gram(item_emb)), fold_in(item_emb, history)
    )
    servable = EmbeddingServable(torch.zeros(2, 6), item_emb)
    first = servable.score_history(history.indptr.numpy(), history.items.numpy())
    assert servable._gram is not None
    again = servable.score_history(history.indptr.numpy(), history.items.numpy())
    expected = (fold_in(item_emb, history) @ item_emb.T).numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("budget", [1 << 22, 8])  # one block, or one user per block
def test_fold_in_solves_the_stated_objective_user_by_user(budget: int, monkeypatch) -> None:
    import models.base as base
    from models.base import History, fold_in

    monkeypatch.setattr(base, "_GRAM_BUDGET", budget)
    gen = torch.Generator().manual_seed(1)
    item_emb = torch.randn(25, 5, generator=gen, dtype=torch.float64)
    lists = [[0, 3, 3, 8], [], [24], list(range(0, 25, 2))]
    got = fold_in(item_emb, History.from_lists(lists), ridge=0.5)
    gram = item_emb.T @ item_emb
    lam = 0.5 * float(torch.diagonal(gram).sum()) / 5
    for b, items in enumerate(lists):
        vh = item_emb[sorted(set(items))]
        lhs = len(vh) / 25 * gram + vh.T @ vh + lam * torch.eye(5, dtype=torch.float64)
        expected = torch.linalg.solve(lhs, vh.sum(0)) if len(vh) else torch.zeros(5, dtype=torch.float64)
        torch.testing.assert_close(got[b], expected)


def test_fold_in_matches_a_per_user_ridge_solve_and_gives_empty_histories_zero() -> None:
    from models.base import History, fold_in

    g = torch.Generator().manual_seed(0)
    item_emb = torch.randn(7, 3, generator=g, dtype=torch.float64)
    lists = [[0, 2, 5], [], [6]]
    users = fold_in(item_emb, History.from_lists(lists), ridge=0.5)
    gram = item_emb.T @ item_emb
    lam = 0.5 * float(torch.trace(gram)) / 3
    for row, items in zip(users, lists, strict=True):
        if not items:
            assert torch.count_nonzero(row) == 0
            continue
        vh = item_emb[items]
        lhs = len(items) / 7 * gram + vh.T @ vh + lam * torch.eye(3, dtype=torch.float64)
        torch.testing.assert_close(row, torch.linalg.solve(lhs, vh.sum(0)))


def test_fold_in_of_training_users_beats_popularity_on_planted_data() -> None:
    from models.base import History
    from tasks.evaluate import full_ranking_metrics, popularity_metrics
    from tasks.train import TrainConfig, train
    from tests.models.planted import planted

    _, split, graphs = planted()
    model = train(
        graphs, split, TrainConfig(model="mf", epochs=15, lr=5e-3, progress=False, device="cpu")
    ).model
    csr = graphs.user_item_csr()
    crow, col = csr.crow_indices(), csr.col_indices()

    def from_history(users: torch.Tensor) -> torch.Tensor:
        lists = [col[crow[u] : crow[u + 1]].tolist() for u in users.tolist()]
        return model.score_history(History.from_lists(lists))

    with model.inference():
        folded = full_ranking_metrics(
            from_history, split.valid, split.train, split.num_users, split.num_items
        )
    assert folded["ndcg@20"] > 1.5 * popularity_metrics(split, "valid")["ndcg@20"]
