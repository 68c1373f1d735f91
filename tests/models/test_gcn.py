from __future__ import annotations

import dataclasses

import pytest
import torch
from torch_geometric.nn import GCNConv

from models import get_model
from models.base import History
from models.gcn import GCN, renormalized_adjacency
from models.serving import EmbeddingServable
from tasks.evaluate import evaluate, popularity_metrics
from tasks.train import TrainConfig, train
from tests.models.planted import batch, planted, random_graphs


def _edge_index(graphs):
    u, i = graphs.ui_edge_index
    i = i + graphs.num_users
    return torch.cat([torch.stack([u, i]), torch.stack([i, u])], 1)


def test_registered_as_a_graph_model_needing_only_the_user_item_graph():
    assert get_model("gcn") is GCN
    assert GCN.family == "graph"
    assert GCN.requires == frozenset({"user_item"})


def test_renormalized_adjacency_is_the_papers_formula():
    graphs = random_graphs(num_users=7, num_items=5, num_pairs=12, seed=1)
    n = graphs.num_users + graphs.num_items
    a = torch.zeros(n, n)
    u, i = graphs.ui_edge_index
    a[u, i + graphs.num_users] = 1
    a[i + graphs.num_users, u] = 1
    a_tilde = a + torch.eye(n)
    d = a_tilde.sum(1).rsqrt()
    expected = d[:, None] * a_tilde * d[None, :]
    adj = renormalized_adjacency(graphs.ui_edge_index, graphs.num_users, graphs.num_items)
    assert adj.layout == torch.sparse_csr
    assert torch.allclose(adj.to_dense(), expected, atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_layers_are_pyg_gcnconv_and_match_it_on_the_edge_index(num_layers):
    graphs = random_graphs(num_users=15, num_items=11, num_pairs=50, seed=4)
    model = GCN.from_graphs(graphs, embedding_dim=6, num_layers=num_layers).eval()
    assert all(isinstance(conv, GCNConv) for conv in model.convs)
    reference = [GCNConv(6, 6) for _ in range(num_layers)]  # normalises the edge index itself
    for ours, theirs in zip(model.convs, reference, strict=True):
        theirs.load_state_dict(ours.state_dict())
        torch.nn.init.normal_(ours.bias)
        theirs.bias.data.copy_(ours.bias.data)
    h = torch.cat([model.input.user_embedding.weight, model.input.item_embedding.weight]).detach()
    expected = [h]
    for layer, conv in enumerate(reference):
        h = conv(h, _edge_index(graphs))
        if layer < num_layers - 1:
            h = torch.relu(h)
        expected.append(h)
    assert torch.allclose(torch.cat(model.embeddings()), torch.cat(expected, 1), atol=1e-5)


@pytest.mark.parametrize(("combine", "width"), [("concat", 8 * 3), ("mean", 8)])
def test_shapes_and_losses(combine, width):
    graphs = random_graphs()
    model = GCN.from_graphs(graphs, embedding_dim=8, num_layers=2, combine=combine)
    user_emb, item_emb = model.embeddings()
    assert user_emb.shape == (graphs.num_users, width)
    assert item_emb.shape == (graphs.num_items, width)
    users, pos, neg = batch(graphs.num_users, graphs.num_items, negatives=3)
    for kind in ("bpr", "softmax"):
        loss = model.loss(users, pos, neg, loss=kind)
        assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_loss_falls_under_adam(combine):
    torch.manual_seed(0)
    graphs = random_graphs()
    model = GCN.from_graphs(graphs, embedding_dim=8, combine=combine, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    users, pos = graphs.ui_edge_index
    neg = torch.randint(0, graphs.num_items, (len(users), 2), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(users, pos, neg)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_item_features_change_the_output_and_get_gradients():
    graphs = random_graphs(seed=3)
    feats = torch.randn(graphs.num_items, 5, generator=torch.Generator().manual_seed(0))
    with_features = dataclasses.replace(graphs, item_features=feats)
    torch.manual_seed(1)
    plain = GCN.from_graphs(graphs, embedding_dim=8).eval()
    torch.manual_seed(1)
    featured = GCN.from_graphs(with_features, embedding_dim=8).eval()
    assert plain.input.item_projection is None
    assert featured.input.item_projection is not None and featured.input.user_projection is None
    assert not torch.allclose(plain.embeddings()[1], featured.embeddings()[1])
    # Other features, same parameters: a different output, so the features are read.
    other = dataclasses.replace(graphs, item_features=torch.randn(graphs.num_items, 5))
    swapped = GCN.from_graphs(other, embedding_dim=8).eval()
    swapped.load_state_dict(featured.state_dict())
    assert not torch.allclose(swapped.embeddings()[1], featured.embeddings()[1])
    assert not any("features" in key for key in featured.state_dict())  # data, not state
    featured.train()
    users, pos, neg = batch(graphs.num_users, graphs.num_items)
    featured.loss(users, pos, neg).backward()
    assert featured.input.item_projection.weight.grad is not None
    assert featured.input.item_projection.weight.grad.abs().sum() > 0


def test_features_of_the_wrong_length_are_rejected():
    graphs = random_graphs()
    bad = dataclasses.replace(graphs, user_features=torch.zeros(graphs.num_users + 1, 3))
    with pytest.raises(ValueError, match="user_features has"):
        GCN.from_graphs(bad)


def test_trains_through_the_pipeline_beats_popularity_and_is_deterministic():
    _, split, graphs = planted(num_users=120, num_items=80, num_interactions=2400, seed=3)
    config = TrainConfig(
        model="gcn",
        hparams={"embedding_dim": 16},
        epochs=8,
        lr=0.01,
        batch_size=256,
        eval_every=4,
        metric="ndcg@10",
        ks=(10,),
        device="cpu",
        progress=False,
        seed=5,
    )
    first = train(graphs, split, config)
    second = train(graphs, split, config)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    ours = evaluate(first.model, split, "test", ks=(10,))["ndcg@10"]
    assert ours > 1.5 * popularity_metrics(split, "test", ks=(10,))["ndcg@10"]


def test_exports_embeddings_and_folds_in_new_users():
    graphs = random_graphs()
    model = GCN.from_graphs(graphs, embedding_dim=8).eval()
    servable = model.export()
    assert isinstance(servable, EmbeddingServable)
    with model.inference():
        assert torch.allclose(model.score_users(torch.arange(3)), servable.user_emb[:3] @ servable.item_emb.T)
    with model.inference():
        scores = model.score_history(History.from_lists([[0, 1], [2]]))
    assert scores.shape == (2, graphs.num_items) and torch.isfinite(scores).all()


def test_bad_hyperparameters_are_rejected():
    graphs = random_graphs()
    with pytest.raises(ValueError, match="combine"):
        GCN.from_graphs(graphs, combine="sum")
    with pytest.raises(ValueError, match="num_layers"):
        GCN.from_graphs(graphs, num_layers=0)
    with pytest.raises(ValueError, match="CSR"):
        GCN(graphs.num_users + 1, graphs.num_items, adj=graphs.ui_adj)


@pytest.mark.parametrize("name", ["gcn", "gat"])
def test_use_features_false_ignores_them(name):
    graphs = random_graphs(seed=3)
    featured = dataclasses.replace(graphs, item_features=torch.randn(graphs.num_items, 5))
    torch.manual_seed(2)
    ignored = get_model(name).from_graphs(featured, embedding_dim=8, use_features=False).eval()
    torch.manual_seed(2)
    plain = get_model(name).from_graphs(graphs, embedding_dim=8).eval()
    assert ignored.input.item_projection is None
    assert torch.equal(ignored.embeddings()[1], plain.embeddings()[1])
