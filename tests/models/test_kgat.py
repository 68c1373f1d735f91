"""KGAT: the attention, the propagation against an edge-by-edge reference, the KG loss, the explanations."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch_geometric.utils import scatter

from models.kgat import KGAT, KGPath, _SpMM
from tasks.compat import ModelDataMismatchError, check_requirements
from tasks.evaluate import evaluate, popularity_metrics
from tasks.train import TrainConfig, train
from tests.models.planted import batch, planted


@pytest.fixture(scope="module")
def data():
    return planted(num_users=120, num_items=80, num_interactions=2400, seed=3)


@pytest.fixture(scope="module")
def trained(data) -> KGAT:
    _, split, graphs = data
    config = TrainConfig(model="kgat", epochs=30, batch_size=256, lr=5e-3, progress=False, seed=1)
    model = train(graphs, split, config).model
    assert isinstance(model, KGAT)
    return model


def test_attention_is_a_softmax_over_the_edges_leaving_each_node(data) -> None:
    _, _, graphs = data
    model = KGAT.from_graphs(graphs)
    sums = scatter(model.attention, model.edge_src, dim=0, dim_size=model.num_nodes, reduce="sum")
    has_edges = torch.bincount(model.edge_src, minlength=model.num_nodes) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum())))
    assert bool((model.attention > 0).all())
    # The CKG holds the KG (with inverses) and each training pair in both directions.
    assert model.edge_src.numel() == graphs.kg_edge_index.shape[1] + 2 * graphs.ui_edge_index.shape[1]


@pytest.mark.parametrize("num_layers", [1, 2])
def test_propagation_matches_an_edge_by_edge_reference(data, num_layers) -> None:
    _, _, graphs = data
    torch.manual_seed(0)
    model = KGAT.from_graphs(graphs, embedding_dim=8, num_layers=num_layers, message_dropout=0.0).eval()
    x = model._node_table()
    outputs = [x]
    for w_sum, w_product in zip(model.w_sum, model.w_product, strict=True):
        messages = model.attention.unsqueeze(1) * x[model.edge_dst]
        neighbours = scatter(messages, model.edge_src, dim=0, dim_size=model.num_nodes, reduce="sum")
        x = torch.nn.functional.leaky_relu(w_sum(x + neighbours), 0.2) + torch.nn.functional.leaky_relu(
            w_product(x * neighbours), 0.2
        )
        outputs.append(torch.nn.functional.normalize(x, dim=1))
    expected = torch.cat(outputs, 1)
    users, items = model.embeddings()
    torch.testing.assert_close(users, expected[model.num_entities :], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(items, expected[: graphs.num_items], rtol=1e-5, atol=1e-5)
    assert users.shape[1] == [16, 20][num_layers - 1]  # ego 8, then layers of 8 (and 4)


def test_linear_aggregator_averages_powers_of_the_attention_matrix(data) -> None:
    _, _, graphs = data
    model = KGAT.from_graphs(graphs, embedding_dim=8, num_layers=2, aggregator="linear")
    adj = torch.zeros(model.num_nodes, model.num_nodes)
    adj.index_put_((model.edge_src, model.edge_dst), model.attention, accumulate=True)
    x = model._node_table()
    expected = (x + adj @ x + adj @ (adj @ x)) / 3
    users, items = model.embeddings()
    torch.testing.assert_close(users, expected[model.num_entities :], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(items, expected[: graphs.num_items], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="aggregator"):
        KGAT.from_graphs(graphs, aggregator="mean")


def test_sparse_product_gradient_uses_the_transpose() -> None:
    dense = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0], [0.0, 0.5, 0.0]])
    x = torch.randn(3, 2, requires_grad=True)
    out = _SpMM.apply(dense.to_sparse_csr(), dense.T.contiguous().to_sparse_csr(), x)
    out.pow(2).sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    (dense @ reference).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)


def test_the_kg_loss_is_part_of_the_loss_and_draws_from_the_generator(data) -> None:
    _, _, graphs = data
    users, pos, neg = batch(graphs.num_users, graphs.num_items, size=32)
    with_kg = KGAT.from_graphs(graphs, message_dropout=0.0)
    without = KGAT.from_graphs(graphs, message_dropout=0.0, kg_weight=0.0)
    without.load_state_dict(with_kg.state_dict())
    losses = []
    for model in (with_kg, with_kg, without):
        model.on_epoch_start(1, torch.Generator().manual_seed(4))
        losses.append(model.loss(users, pos, neg).item())
    assert losses[0] == pytest.approx(losses[1])  # same generator seed: same KG batch
    assert losses[0] > losses[2]  # softplus of the TransR margin is positive
    kg_only = with_kg.transr_loss(32)
    kg_only.backward()
    assert with_kg.relation_proj.grad is not None and with_kg.relation_proj.grad.abs().sum() > 0


def test_trained_model_beats_popularity_and_keeps_its_attention_in_the_state(data, trained) -> None:
    _, split, graphs = data
    assert (
        evaluate(trained, split, "valid", ks=(10,))["ndcg@10"]
        > popularity_metrics(split, "valid", ks=(10,))["ndcg@10"]
    )
    state = trained.state_dict()
    assert "attention" in state
    fresh = KGAT.from_graphs(graphs, **trained.hparams)
    fresh.load_state_dict(state)
    users = torch.arange(5)
    with trained.inference(), fresh.inference():
        torch.testing.assert_close(fresh.score_users(users), trained.score_users(users))


def test_every_explanation_path_is_in_the_kg_and_the_training_interactions(data, trained) -> None:
    _, split, graphs = data
    kg = graphs.kg_edge_index
    edges = {
        (int(h), int(r), int(t))
        for h, r, t in zip(kg[0].tolist(), graphs.kg_edge_type.tolist(), kg[1].tolist(), strict=True)
    }
    seen = {(int(u), int(i)) for u, i in split.train.tolist()}
    attention = {
        (int(h), int(r), int(t)): float(a)
        for h, r, t, a in zip(
            trained.edge_src.tolist(),
            trained.edge_type.tolist(),
            trained.edge_dst.tolist(),
            trained.attention.tolist(),
            strict=True,
        )
    }
    explained = 0
    for user in range(20):
        with trained.inference():
            scores = trained.score_users(torch.tensor([user]))[0]
        scores[[i for u, i in seen if u == user]] = -torch.inf
        items = scores.topk(5).indices.tolist()
        for item, paths in zip(items, trained.explain(user, items, top=3), strict=True):
            assert len(paths) <= 3
            assert [p.weight for p in paths] == sorted((p.weight for p in paths), reverse=True)
            for path in paths:
                assert isinstance(path, KGPath) and path.user == user
                assert path.entities[-1] == item and len(path.entities) == len(path.relations) + 1
                assert (user, path.entities[0]) in seen  # the path starts at one of the user's items
                hops = list(zip(path.entities[:-1], path.relations, path.entities[1:], strict=True))
                assert all(hop in edges for hop in hops)
                weight = attention[(graphs.num_entities + user, graphs.num_relations, path.entities[0])]
                for hop in hops:
                    weight *= attention[hop]
                assert path.weight == pytest.approx(weight, rel=1e-5)
                explained += 1
    assert explained > 0


def test_refused_up_front_on_data_without_a_kg(data) -> None:
    _, _, graphs = data
    no_kg = dataclasses.replace(graphs, kg_edge_index=None, kg_edge_type=None, num_relations=0)
    with pytest.raises(ModelDataMismatchError, match="kgat cannot run on dataset 'toy': needs kg"):
        check_requirements(["kgat"], no_kg, "toy")
    with pytest.raises(ValueError, match="knowledge graph"):
        KGAT.from_graphs(no_kg)
