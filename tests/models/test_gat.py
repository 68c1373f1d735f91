from __future__ import annotations

import dataclasses

import pytest
import torch
from torch_geometric.nn import GATConv, GATv2Conv
from torch_geometric.utils import scatter

from models import get_model
from models.gat import GAT, joint_edge_index
from models.serving import EmbeddingServable
from tasks.evaluate import evaluate, popularity_metrics
from tasks.train import TrainConfig, train
from tests.models.planted import batch, planted, random_graphs


def test_registered_as_a_graph_model_needing_only_the_user_item_graph():
    assert get_model("gat") is GAT
    assert GAT.family == "graph"
    assert GAT.requires == frozenset({"user_item"})


def test_joint_edge_index_has_both_directions_with_items_offset():
    graphs = random_graphs(num_users=4, num_items=3, num_pairs=5)
    edges = joint_edge_index(graphs.ui_edge_index, graphs.num_users)
    e = graphs.ui_edge_index.shape[1]
    assert edges.shape == (2, 2 * e)
    assert torch.equal(edges[0, :e], graphs.ui_edge_index[0])
    assert torch.equal(edges[1, :e], graphs.ui_edge_index[1] + 4)
    assert torch.equal(edges[:, e:], edges[:, :e].flip(0))


@pytest.mark.parametrize(("version", "layer"), [("v1", GATConv), ("v2", GATv2Conv)])
def test_layers_are_pyg_attention_layers_with_heads_and_attention_dropout(version, layer):
    model = GAT.from_graphs(random_graphs(), embedding_dim=8, heads=4, attention_dropout=0.3, version=version)
    for conv in model.convs:
        assert type(conv) is layer
        assert conv.heads == 4 and conv.out_channels == 2 and conv.concat
        assert conv.dropout == 0.3 and conv.add_self_loops


def test_attention_is_a_distribution_over_each_nodes_neighbourhood():
    graphs = random_graphs(seed=2)
    model = GAT.from_graphs(graphs, embedding_dim=8, heads=2).eval()
    with torch.no_grad():
        edges, alpha = model.attention(0)
    n = graphs.num_users + graphs.num_items
    assert alpha.shape == (edges.shape[1], 2)
    sums = scatter(alpha, edges[1], dim=0, dim_size=n, reduce="sum")
    assert torch.allclose(sums, torch.ones(n, 2), atol=1e-5)
    assert edges.shape[1] == 2 * graphs.ui_edge_index.shape[1] + n  # self-loops added


@pytest.mark.parametrize(("combine", "width"), [("concat", 8 * 3), ("mean", 8)])
def test_shapes_and_losses(combine, width):
    graphs = random_graphs()
    model = GAT.from_graphs(graphs, embedding_dim=8, num_layers=2, combine=combine)
    user_emb, item_emb = model.embeddings()
    assert user_emb.shape == (graphs.num_users, width)
    assert item_emb.shape == (graphs.num_items, width)
    users, pos, neg = batch(graphs.num_users, graphs.num_items, negatives=3)
    for kind in ("bpr", "softmax"):
        loss = model.loss(users, pos, neg, loss=kind)
        assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_loss_falls_under_adam(version):
    torch.manual_seed(0)
    graphs = random_graphs()
    model = GAT.from_graphs(graphs, embedding_dim=8, version=version, dropout=0.0, attention_dropout=0.0)
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


def test_dropout_acts_in_training_only():
    model = GAT.from_graphs(random_graphs(), embedding_dim=8, attention_dropout=0.5, dropout=0.5)
    model.train()
    assert not torch.equal(model.embeddings()[1], model.embeddings()[1])
    model.eval()
    assert torch.equal(model.embeddings()[1], model.embeddings()[1])


def test_user_features_change_the_output_and_get_gradients():
    graphs = random_graphs(seed=3)
    feats = torch.randn(graphs.num_users, 4, generator=torch.Generator().manual_seed(0))
    featured = GAT.from_graphs(dataclasses.replace(graphs, user_features=feats), embedding_dim=8).eval()
    other = GAT.from_graphs(dataclasses.replace(graphs, user_features=-feats), embedding_dim=8).eval()
    other.load_state_dict(featured.state_dict())
    assert not torch.allclose(featured.embeddings()[0], other.embeddings()[0])
    featured.train()
    users, pos, neg = batch(graphs.num_users, graphs.num_items)
    featured.loss(users, pos, neg).backward()
    projection = featured.input.user_projection
    assert projection is not None and projection.weight.grad is not None
    assert projection.weight.grad.abs().sum() > 0


def test_hard_negatives_are_scored_with_the_previous_steps_embeddings():
    graphs = random_graphs()
    model = GAT.from_graphs(graphs, embedding_dim=8, dropout=0.0, attention_dropout=0.0)
    model.train()
    users, pos, neg = batch(graphs.num_users, graphs.num_items)
    model.loss(users, pos, neg)
    user_emb, item_emb = (t.detach().clone() for t in model.embeddings())
    with torch.no_grad():  # the parameters move; the scorer still reads the last step's embeddings
        model.input.item_embedding.weight.add_(1.0)
    items = torch.randint(0, graphs.num_items, (len(users), 3))
    scores = model.candidate_scorer()(users, items)
    expected = (user_emb[users].unsqueeze(1) * item_emb[items]).sum(-1)
    assert torch.allclose(scores, expected, atol=1e-6)
    model.eval()  # outside training the scorer computes embeddings afresh
    fresh_user, fresh_item = model.embeddings()
    fresh = (fresh_user[users].unsqueeze(1) * fresh_item[items]).sum(-1)
    assert torch.allclose(model.candidate_scorer()(users, items), fresh, atol=1e-6)


def test_trains_through_the_pipeline_beats_popularity_and_is_deterministic():
    _, split, graphs = planted(num_users=120, num_items=80, num_interactions=2400, seed=3)
    config = TrainConfig(
        model="gat",
        hparams={"embedding_dim": 16},
        epochs=8,
        lr=0.01,
        batch_size=256,
        eval_every=4,
        metric="ndcg@10",
        ks=(10,),
        negative_sampler="hard",
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


def test_exports_embeddings():
    graphs = random_graphs()
    model = GAT.from_graphs(graphs, embedding_dim=8).eval()
    servable = model.export()
    assert isinstance(servable, EmbeddingServable)
    with model.inference():
        assert torch.allclose(model.score_users(torch.arange(3)), servable.user_emb[:3] @ servable.item_emb.T)


def test_bad_hyperparameters_are_rejected():
    graphs = random_graphs()
    with pytest.raises(ValueError, match="divisor"):
        GAT.from_graphs(graphs, embedding_dim=8, heads=3)
    with pytest.raises(ValueError, match="version"):
        GAT.from_graphs(graphs, version="v3")
    with pytest.raises(ValueError, match="attention_dropout"):
        GAT.from_graphs(graphs, attention_dropout=1.0)
