"""SocialGAT: the friends' attention (what a user weighs), its effect on the embedding, LightGCN at beta 0."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.lightgcn import LightGCN
from models.socialgat import SocialGAT
from tasks.compat import ModelDataMismatchError, check_requirements
from tasks.graphs import symmetric_normalized_adjacency
from tests.models.planted import batch, planted


@pytest.fixture(scope="module")
def data():
    return planted(num_users=80, num_items=50, num_interactions=1200, seed=4)


def _friends(graphs, user: int) -> set[int]:
    return set(graphs.social_edge_index[0, graphs.social_edge_index[1] == user].tolist())


def _busiest_user(graphs) -> int:
    return int(torch.bincount(graphs.social_edge_index[1], minlength=graphs.num_users).argmax())


def test_friend_attention_is_a_distribution_over_exactly_the_users_friends(data) -> None:
    _, _, graphs = data
    model = SocialGAT.from_graphs(graphs)
    user = _busiest_user(graphs)
    friends, weights = model.friend_attention(user)
    assert set(friends.tolist()) == _friends(graphs, user) and len(friends) >= 2
    assert bool((weights > 0).all())
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    assert bool((weights[:-1] >= weights[1:]).all()), "sorted by decreasing weight"


def test_a_friend_aligned_with_the_attention_vector_gets_the_most_weight(data) -> None:
    _, _, graphs = data
    model = SocialGAT.from_graphs(graphs, num_layers=1)
    user = _busiest_user(graphs)
    friend = sorted(_friends(graphs, user))[0]
    # GATConv scores an edge j -> i by LeakyReLU(a_src . W x_j + a_dst . W x_i): a source row along
    # W^T a_src raises only that friend's logit.
    direction = model.gat.lin.weight.T @ model.gat.att_src.view(-1)
    with torch.no_grad():
        model.user_embedding.weight[friend] = 5.0 * direction / direction.norm()
    friends, weights = model.friend_attention(user)
    assert int(friends[0]) == friend
    assert float(weights[0]) > 0.5


def test_a_friendless_user_has_no_attention_and_no_social_step(data) -> None:
    _, _, graphs = data
    lonely = 0
    keep = (graphs.social_edge_index != lonely).all(0)
    edges = graphs.social_edge_index[:, keep]
    alone = dataclasses.replace(
        graphs, social_edge_index=edges, social_adj=symmetric_normalized_adjacency(edges, graphs.num_users)
    )
    model = SocialGAT.from_graphs(alone)
    friends, weights = model.friend_attention(lonely)
    assert friends.numel() == 0 and weights.numel() == 0
    assert not bool(model.has_friends[lonely])
    torch.testing.assert_close(
        model.social_propagate(model.user_embedding.weight)[lonely].detach(), torch.zeros(model.embedding_dim)
    )
    with pytest.raises(ValueError, match="outside"):
        model.friend_attention(graphs.num_users)


def test_uniform_attention_gives_the_mean_of_the_friends_transformed_rows(data) -> None:
    _, _, graphs = data
    model = SocialGAT.from_graphs(graphs)
    with torch.no_grad():
        model.gat.att_src.zero_()
        model.gat.att_dst.zero_()
    x = torch.randn(graphs.num_users, model.embedding_dim)
    out = model.social_propagate(x).detach()
    transformed = (x @ model.gat.lin.weight.T).detach()
    user = _busiest_user(graphs)
    friends = sorted(_friends(graphs, user))
    torch.testing.assert_close(out[user], transformed[friends].mean(0))


def test_the_attention_changes_the_users_embedding_and_learns(data) -> None:
    _, _, graphs = data
    model = SocialGAT.from_graphs(graphs, social_weight=0.5)
    twin = LightGCN.from_graphs(graphs)
    with torch.no_grad():
        twin.user_embedding.weight.copy_(model.user_embedding.weight)
        twin.item_embedding.weight.copy_(model.item_embedding.weight)
    user = _busiest_user(graphs)
    assert not torch.allclose(model.embeddings()[0][user], twin.embeddings()[0][user], atol=1e-6)
    model.loss(*batch(graphs.num_users, graphs.num_items, size=32)).backward()
    assert model.gat.att_src.grad is not None and float(model.gat.att_src.grad.abs().sum()) > 0


def test_at_zero_social_weight_it_is_lightgcn(data) -> None:
    _, _, graphs = data
    model = SocialGAT.from_graphs(graphs, social_weight=0.0)
    twin = LightGCN.from_graphs(graphs)
    with torch.no_grad():
        twin.user_embedding.weight.copy_(model.user_embedding.weight)
        twin.item_embedding.weight.copy_(model.item_embedding.weight)
    for got, want in zip(model.embeddings(), twin.embeddings(), strict=True):
        torch.testing.assert_close(got, want)


def test_refuses_data_without_a_social_graph(data) -> None:
    _, _, graphs = data
    bare = dataclasses.replace(graphs, social_edge_index=None, social_adj=None)
    with pytest.raises(ModelDataMismatchError, match="socialgat cannot run on dataset 'toy'.*needs social"):
        check_requirements(["socialgat"], bare, "toy")
    with pytest.raises(ValueError, match="needs a social graph"):
        SocialGAT.from_graphs(bare)
    with pytest.raises(ValueError, match="outside"):
        SocialGAT(
            graphs.num_users,
            graphs.num_items,
            graphs.ui_adj,
            graphs.social_adj,
            torch.tensor([[0], [graphs.num_users]]),
        )
