from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import LGConv
from torch_geometric.nn.models import LightGCN as PyGLightGCN

from models.lightgcn import LightGCN
from models.sparse import symmetric_spmm
from tests.models.planted import random_graphs


def _edge_index(graphs):
    u, i = graphs.ui_edge_index
    i = i + graphs.num_users
    return torch.cat([torch.stack([u, i]), torch.stack([i, u])], 1)


def test_one_layer_equals_pyg_lgconv():
    graphs = random_graphs(num_users=15, num_items=11, num_pairs=50, seed=4)
    model = LightGCN.from_graphs(graphs, num_layers=1, alpha=[0.0, 1.0], embedding_dim=6)
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    ours = torch.cat(model.embeddings())
    theirs = LGConv(normalize=True)(x, _edge_index(graphs))
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3, 4])
def test_layer_mean_equals_pyg_lightgcn(num_layers):
    graphs = random_graphs(num_users=15, num_items=11, num_pairs=50, seed=5)
    model = LightGCN.from_graphs(graphs, num_layers=num_layers, embedding_dim=6)
    reference = PyGLightGCN(graphs.num_users + graphs.num_items, 6, num_layers)
    with torch.no_grad():
        reference.embedding.weight.copy_(
            torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        )
    theirs = reference.get_embedding(_edge_index(graphs))
    assert torch.allclose(torch.cat(model.embeddings()), theirs, atol=1e-6)


def test_symmetric_spmm_gradient_matches_dense():
    graphs = random_graphs(seed=6)
    adj = graphs.ui_adj
    x = torch.randn(adj.shape[0], 4, requires_grad=True)
    weight = torch.randn(adj.shape[0], 4)
    (symmetric_spmm(adj, symmetric_spmm(adj, x)) * weight).sum().backward()
    ours = x.grad
    x2 = x.detach().clone().requires_grad_(True)
    dense = adj.to_dense()
    (dense @ (dense @ x2) * weight).sum().backward()
    assert ours is not None and x2.grad is not None
    assert torch.allclose(ours, x2.grad, atol=1e-5)


def test_init_is_normal_with_std_0_1():
    graphs = random_graphs(num_users=400, num_items=300, num_pairs=100)
    model = LightGCN.from_graphs(graphs, embedding_dim=64)
    std = float(model.user_embedding.weight.detach().std())
    assert 0.095 < std < 0.105


def test_default_hparams_follow_the_paper():
    assert LightGCN.default_hparams() == {
        "embedding_dim": 64,
        "num_layers": 3,
        "reg_weight": 1e-4,
        "alpha": None,
        "init_std": 0.1,
    }


def test_alpha_must_have_one_weight_per_layer_plus_one():
    with pytest.raises(ValueError, match="num_layers \\+ 1"):
        LightGCN.from_graphs(random_graphs(), num_layers=2, alpha=[0.5, 0.5])
