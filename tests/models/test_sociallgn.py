"""SocialLGN: LightGCN without social influence, the social graph's effect, the fusion, the refusal."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.lightgcn import LightGCN
from models.sociallgn import SocialLGN
from tasks.compat import ModelDataMismatchError, check_requirements
from tasks.graphs import symmetric_normalized_adjacency
from tasks.train import TrainConfig, train
from tests.models.planted import batch, planted


@pytest.fixture(scope="module")
def data():
    return planted(num_users=80, num_items=50, num_interactions=1200, seed=4)


def _lightgcn_twin(model: SocialLGN, graphs) -> LightGCN:
    """A LightGCN on the same user-item graph with the same layer-0 tables."""
    twin = LightGCN.from_graphs(graphs, num_layers=model.num_layers, embedding_dim=model.embedding_dim)
    with torch.no_grad():
        twin.user_embedding.weight.copy_(model.user_embedding.weight)
        twin.item_embedding.weight.copy_(model.item_embedding.weight)
    return twin


def _with_social(graphs, pairs: torch.Tensor):
    """``graphs`` with the social graph of the undirected ``pairs`` ``[2, S]``."""
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    adj = symmetric_normalized_adjacency(pairs, graphs.num_users)
    return dataclasses.replace(graphs, social_edge_index=edge_index, social_adj=adj)


def test_mix_at_zero_social_weight_is_lightgcn(data) -> None:
    _, _, graphs = data
    model = SocialLGN.from_graphs(graphs, fusion="mix", social_weight=0.0)
    twin = _lightgcn_twin(model, graphs)
    for got, want in zip(model.embeddings(), twin.embeddings(), strict=True):
        torch.testing.assert_close(got, want)


def test_mix_on_a_social_graph_without_edges_is_lightgcn(data) -> None:
    _, _, graphs = data
    empty = _with_social(graphs, torch.zeros(2, 0, dtype=torch.long))
    model = SocialLGN.from_graphs(empty, fusion="mix", social_weight=0.7)
    assert not bool(model.has_friends.any())
    twin = _lightgcn_twin(model, graphs)
    for got, want in zip(model.embeddings(), twin.embeddings(), strict=True):
        torch.testing.assert_close(got, want)


def test_mix_layer_is_the_convex_mix_of_user_item_and_social_propagation(data) -> None:
    _, _, graphs = data
    model = SocialLGN.from_graphs(graphs, fusion="mix", social_weight=0.3, num_layers=1)
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    joint = graphs.ui_adj.to_dense() @ x
    social = graphs.social_adj.to_dense() @ x[: graphs.num_users]
    has_friends = (graphs.social_adj.to_dense() != 0).any(1, keepdim=True).float()
    users = joint[: graphs.num_users] + 0.3 * has_friends * (social - joint[: graphs.num_users])
    user_emb, item_emb = model.embeddings()
    torch.testing.assert_close(user_emb, (x[: graphs.num_users] + users) / 2)
    torch.testing.assert_close(item_emb, (x[graphs.num_users :] + joint[graphs.num_users :]) / 2)


@pytest.mark.parametrize("fusion", ["graph-comb", "mix"])
def test_a_new_friendship_changes_exactly_the_users_it_touches(data, fusion) -> None:
    _, _, graphs = data
    user = int(graphs.social_edge_index[0, 0])
    # The planted social graph without this user's ties, then the same with one new tie to a stranger.
    pairs = graphs.social_edge_index[:, graphs.social_edge_index[0] < graphs.social_edge_index[1]]
    pairs = pairs[:, (pairs[0] != user) & (pairs[1] != user)]
    stranger = int(pairs[0, 0])
    before_graphs = _with_social(graphs, pairs)
    after_graphs = _with_social(graphs, torch.cat([pairs, torch.tensor([[user], [stranger]])], dim=1))
    model = SocialLGN.from_graphs(before_graphs, fusion=fusion, num_layers=1)
    other = SocialLGN.from_graphs(after_graphs, fusion=fusion, num_layers=1)
    other.load_state_dict(model.state_dict())
    before, after = model.embeddings()[0].detach(), other.embeddings()[0].detach()
    assert not torch.allclose(before[user], after[user], atol=1e-6)
    assert not torch.allclose(before[stranger], after[stranger], atol=1e-6)
    # One layer: only the two, and the friends of the stranger (whose degree, hence weight, changed), move.
    touched = (
        {user, stranger}
        | set(pairs[1, pairs[0] == stranger].tolist())
        | set(pairs[0, pairs[1] == stranger].tolist())
    )
    untouched = [u for u in range(graphs.num_users) if u not in touched]
    assert len(untouched) > graphs.num_users // 2
    torch.testing.assert_close(before[untouched], after[untouched])


def test_graph_comb_rows_are_unit_norm_and_its_weights_learn(data) -> None:
    _, _, graphs = data
    model = SocialLGN.from_graphs(graphs, fusion="graph-comb", num_layers=2)
    layers = model.layers()
    torch.testing.assert_close(layers[1][: graphs.num_users].norm(dim=1), torch.ones(graphs.num_users))
    model.loss(*batch(graphs.num_users, graphs.num_items, size=32)).backward()
    for layer in (model.fuse_ui, model.fuse_social, model.fuse_out):
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0


def test_trains_through_the_trainer_and_the_loss_falls(data) -> None:
    _, split, graphs = data
    config = TrainConfig(
        model="sociallgn", epochs=15, batch_size=256, lr=5e-3, progress=False, seed=1, eval_every=100
    )
    result = train(graphs, split, config)
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < 0.8 * losses[0]


def test_refuses_data_without_a_social_graph(data) -> None:
    _, _, graphs = data
    bare = dataclasses.replace(graphs, social_edge_index=None, social_adj=None)
    with pytest.raises(ModelDataMismatchError, match="sociallgn cannot run on dataset 'toy'.*needs social"):
        check_requirements(["sociallgn"], bare, "toy")
    with pytest.raises(ValueError, match="needs a social graph"):
        SocialLGN.from_graphs(bare)


def test_bad_arguments_are_named(data) -> None:
    _, _, graphs = data
    with pytest.raises(ValueError, match="fusion must be one of"):
        SocialLGN.from_graphs(graphs, fusion="sum")
    with pytest.raises(ValueError, match="social_weight must lie in"):
        SocialLGN.from_graphs(graphs, social_weight=1.5)
    with pytest.raises(ValueError, match=r"social adjacency must be \[U, U\]"):
        SocialLGN(graphs.num_users, graphs.num_items, graphs.ui_adj, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="does not take hyperparameter"):
        SocialLGN.from_graphs(graphs, beta=0.1)
