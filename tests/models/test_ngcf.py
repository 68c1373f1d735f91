from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.ngcf import NGCF
from tests.models.planted import random_graphs


def _reference_forward(model: NGCF, feed_normalized: bool = False) -> torch.Tensor:
    """NGCF Eq. 7 written densely: (L + I) E W1 + (L E * E) W2, LeakyReLU 0.2, normalised, concatenated.

    ``feed_normalized`` passes the normalised output on to the next layer (RecBole) instead of the raw one.
    """
    lap = model.adj.to_dense()
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    outs = [ego]
    for w1, w2 in zip(model.w1, model.w2, strict=True):
        assert isinstance(w1, torch.nn.Linear) and isinstance(w2, torch.nn.Linear)
        side = lap @ ego
        ego = F.leaky_relu((side + ego) @ w1.weight.T + w1.bias + (side * ego) @ w2.weight.T + w2.bias, 0.2)
        outs.append(F.normalize(ego, dim=1))
        if feed_normalized:
            ego = outs[-1]
    return torch.cat(outs, 1)


@pytest.mark.parametrize("normalize_propagation", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_eval_forward_matches_the_paper_formula(num_layers, normalize_propagation):
    model = NGCF.from_graphs(
        random_graphs(seed=2),
        embedding_dim=5,
        num_layers=num_layers,
        normalize_propagation=normalize_propagation,
    ).eval()
    for linear in (*model.w1, *model.w2):
        torch.nn.init.normal_(linear.bias)  # non-zero biases so they are checked too
    expected = _reference_forward(model, feed_normalized=normalize_propagation)
    assert torch.allclose(torch.cat(model.embeddings()), expected, atol=1e-5)
    if num_layers > 1:  # the two variants differ from the second layer on
        other = _reference_forward(model, feed_normalized=not normalize_propagation)
        assert not torch.allclose(torch.cat(model.embeddings()), other, atol=1e-3)


def _authors_reference(model: NGCF) -> torch.Tensor:
    """The authors' TF layer densely: S = D^-1 (A + I) E, LReLU(S W1 + b1) + LReLU((S * E) W2 + b2)."""
    n = model.num_users + model.num_items
    a = (model.adj.to_dense() != 0).float()
    norm = (a + torch.eye(n)) / (a.sum(1, keepdim=True) + 1.0)
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    outs = [ego]
    for w1, w2 in zip(model.w1, model.w2, strict=True):
        assert isinstance(w1, torch.nn.Linear) and isinstance(w2, torch.nn.Linear)
        side = norm @ ego
        ego = F.leaky_relu(side @ w1.weight.T + w1.bias, 0.2) + F.leaky_relu(
            (side * ego) @ w2.weight.T + w2.bias, 0.2
        )
        outs.append(F.normalize(ego, dim=1))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_authors_aggregation_matches_their_code(num_layers):
    graphs = random_graphs(seed=4)
    model = NGCF.from_graphs(graphs, embedding_dim=5, num_layers=num_layers, aggregation="authors").eval()
    for linear in (*model.w1, *model.w2):
        torch.nn.init.normal_(linear.bias)
    assert torch.allclose(torch.cat(model.embeddings()), _authors_reference(model), atol=1e-5)
    paper = NGCF.from_graphs(graphs, embedding_dim=5, num_layers=num_layers).eval()
    paper.load_state_dict(model.state_dict())
    assert not torch.allclose(torch.cat(paper.embeddings()), torch.cat(model.embeddings()), atol=1e-3)
    # It trains: gradients reach the tables and both transforms through the row-normalised propagation.
    model.train()
    users, items = model.embeddings()
    (users[:3] @ items[:3].T).sum().backward()
    assert model.user_embedding.weight.grad is not None and model.user_embedding.weight.grad.abs().sum() > 0
    assert all(lin.weight.grad is not None for lin in (*model.w1, *model.w2))


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        NGCF.from_graphs(random_graphs(), aggregation="mean")


def test_layer_outputs_are_row_normalised():
    model = NGCF.from_graphs(random_graphs(), embedding_dim=4, num_layers=2).eval()
    users, _ = model.embeddings()
    for layer in (1, 2):
        norms = users[:, 4 * layer : 4 * (layer + 1)].norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_dropout_only_in_training():
    model = NGCF.from_graphs(random_graphs(), embedding_dim=4, message_dropout=0.5, node_dropout=0.5)
    model.eval()
    first = torch.cat(model.embeddings())
    assert torch.equal(first, torch.cat(model.embeddings()))
    model.train()
    torch.manual_seed(0)
    a = torch.cat(model.embeddings())
    b = torch.cat(model.embeddings())
    assert not torch.allclose(a, b)


def test_node_dropout_silences_dropped_senders():
    # With message dropout off and node dropout p, a node's messages are either all dropped or all scaled
    # by 1/(1-p): the one-layer side term is L @ (m * E) for a 0/(1/(1-p)) mask m.
    graphs = random_graphs(seed=3)
    model = NGCF.from_graphs(graphs, embedding_dim=4, num_layers=1, node_dropout=0.5, message_dropout=0.0)
    model.train()
    torch.manual_seed(11)
    out = torch.cat(model.embeddings())
    torch.manual_seed(11)
    keep = (torch.rand(graphs.num_users + graphs.num_items, 1) >= 0.5).float() / 0.5
    lap = model.adj.to_dense()
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    side = lap @ (ego * keep)
    w1, w2 = model.w1[0], model.w2[0]
    layer = F.leaky_relu(w1(side + ego) + w2(side * ego), 0.2)
    expected = torch.cat([ego, F.normalize(layer, dim=1)], 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_bad_dropout_is_rejected():
    with pytest.raises(ValueError, match="node_dropout"):
        NGCF.from_graphs(random_graphs(), node_dropout=1.0)
