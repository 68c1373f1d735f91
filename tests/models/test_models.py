"""Behaviour every registered recommender must show, parametrised over models and hyperparameters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models import get_model
from tests.models.planted import batch, random_graphs

CASES = [
    ("mf", {"embedding_dim": 8}),
    ("mf", {"embedding_dim": 16, "reg_weight": 1e-2}),
    ("lightgcn", {"embedding_dim": 8, "num_layers": 1}),
    ("lightgcn", {"embedding_dim": 16, "num_layers": 3}),
    ("lightgcn", {"embedding_dim": 8, "num_layers": 2, "alpha": [0.2, 0.3, 0.5]}),
    ("ngcf", {"embedding_dim": 8, "num_layers": 1}),
    ("ngcf", {"embedding_dim": 8, "num_layers": 3, "node_dropout": 0.3, "message_dropout": 0.2}),
]


def _out_dim(name: str, hparams: dict) -> int:
    d = hparams["embedding_dim"]
    return d * (hparams["num_layers"] + 1) if name == "ngcf" else d


@pytest.mark.parametrize(("name", "hparams"), CASES)
def test_shapes(name, hparams):
    graphs = random_graphs()
    model = get_model(name).from_graphs(graphs, **hparams)
    user_emb, item_emb = model.embeddings()
    d = _out_dim(name, hparams)
    assert user_emb.shape == (graphs.num_users, d)
    assert item_emb.shape == (graphs.num_items, d)
    assert model.score(user_emb[:5], item_emb).shape == (5, graphs.num_items)
    users, pos, neg = batch(graphs.num_users, graphs.num_items, negatives=3)
    for kind in ("bpr", "softmax"):
        loss = model.loss(users, pos, neg, loss=kind)
        assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.loss(users, pos, neg[:, 0]).dim() == 0  # one negative as a vector


@pytest.mark.parametrize(("name", "hparams"), CASES)
@pytest.mark.parametrize("kind", ["bpr", "softmax"])
def test_loss_falls_under_adam(name, hparams, kind):
    torch.manual_seed(0)
    graphs = random_graphs()
    model = get_model(name).from_graphs(graphs, **hparams)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    users = graphs.ui_edge_index[0]
    pos = graphs.ui_edge_index[1]
    neg = torch.randint(0, graphs.num_items, (len(users), 2), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(users, pos, neg, loss=kind)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize(("name", "hparams"), CASES)
def test_same_seed_same_model(name, hparams):
    graphs = random_graphs()
    torch.manual_seed(3)
    a = get_model(name).from_graphs(graphs, **hparams).eval()
    torch.manual_seed(3)
    b = get_model(name).from_graphs(graphs, **hparams).eval()
    for x, y in zip(a.embeddings(), b.embeddings(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(("name", "hparams"), CASES)
def test_reset_parameters_redraws(name, hparams):
    model = get_model(name).from_graphs(random_graphs(), **hparams).eval()
    before = model.embeddings()[0].detach().clone()
    model.reset_parameters()
    assert not torch.equal(before, model.embeddings()[0])


@pytest.mark.parametrize("name", ["lightgcn", "ngcf"])
def test_graph_stays_out_of_the_state_dict_but_moves_with_the_model(name):
    model = get_model(name).from_graphs(random_graphs())
    assert not any("adj" in key for key in model.state_dict())
    model = model.to(torch.float64)
    assert model.adj.layout == torch.sparse_csr


@pytest.mark.parametrize("name", ["lightgcn", "ngcf"])
def test_adjacency_of_the_wrong_size_is_rejected(name):
    graphs = random_graphs()
    cls: Any = get_model(name)
    with pytest.raises(ValueError, match=r"\[U \+ I, U \+ I\]"):
        cls(num_users=graphs.num_users + 1, num_items=graphs.num_items, adj=graphs.ui_adj)


def test_cold_user_still_gets_scores():
    # A user with no training edge: finite, constant-over-depth contributions only from layer 0.
    graphs = random_graphs(num_users=5, num_items=4, num_pairs=0)
    model = get_model("lightgcn").from_graphs(graphs)
    user_emb, item_emb = model.embeddings()
    assert torch.isfinite(model.score(user_emb, item_emb)).all()
