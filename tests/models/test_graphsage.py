from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

import models.graphsage as graphsage_module
from models.base import History
from models.graph_sampling import sample_neighbors
from models.graphsage import GraphSAGE, parse_fan_outs
from models.serving import load_servable
from tasks.evaluate import evaluate, popularity_metrics
from tasks.train import TrainConfig, train
from tests.models.planted import batch, graphs_from_pairs, planted, random_graphs


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def trained(data):
    _, split, graphs = data
    config = TrainConfig(
        model="graphsage", epochs=8, batch_size=256, lr=1e-2, progress=False, device="cpu", seed=3
    )
    return train(graphs, split, config)


def _max_degree(graphs) -> int:
    users, items = graphs.ui_edge_index
    return int(max(torch.bincount(users).max(), torch.bincount(items, minlength=graphs.num_items).max()))


@pytest.mark.parametrize("aggregator", ["mean", "pool"])
@pytest.mark.parametrize("fan_outs", ["3", "4,2", "3,2,2"])
def test_scores_have_one_row_per_user_and_one_column_per_item(aggregator, fan_outs):
    graphs = random_graphs()
    model = GraphSAGE.from_graphs(graphs, aggregator=aggregator, fan_outs=fan_outs, embedding_dim=8)
    assert len(model.convs) == len(parse_fan_outs(fan_outs))
    with model.inference():
        scores = model.score_users(torch.tensor([0, 5, 11]))
        new = model.score_history(History.from_lists([[1, 2], [0], []]))
    assert scores.shape == (3, graphs.num_items)
    assert new.shape == (3, graphs.num_items)
    users, pos, neg = batch(graphs.num_users, graphs.num_items, negatives=3)
    assert model.loss(users, pos, neg).ndim == 0


@pytest.mark.parametrize("aggregator", ["mean", "pool"])
def test_full_graph_inference_equals_mini_batch_inference_when_fan_outs_cover_every_degree(aggregator):
    graphs = random_graphs(num_users=20, num_items=15, num_pairs=90, seed=3)
    model = GraphSAGE.from_graphs(graphs, aggregator=aggregator, fan_outs="3,3", embedding_dim=8)
    model.eval()
    nodes = torch.arange(graphs.num_users + graphs.num_items)
    with torch.no_grad():
        full = model.layerwise()[-1]
        degree = _max_degree(graphs)
        assert degree > 3  # the model's own fan-outs would sample
        mini = model.embed_nodes(nodes, fan_outs=[degree, degree])
        sampled = model.embed_nodes(nodes)
    assert torch.allclose(full, mini, atol=1e-5)
    assert not torch.allclose(full, sampled, atol=1e-3)


def test_full_graph_inference_in_chunks_equals_one_chunk():
    graphs = random_graphs(num_users=20, num_items=15, num_pairs=90, seed=3)
    model = GraphSAGE.from_graphs(graphs, fan_outs="3,3", embedding_dim=8, aggregator="pool").eval()
    with torch.no_grad():
        whole = model.layerwise()[-1]
        model.inference_chunk = 4
        chunked = model.layerwise()[-1]
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_training_samples_a_sub_graph_smaller_than_the_graph(data):
    _, _, graphs = data
    model = GraphSAGE.from_graphs(graphs, fan_outs="2,2", embedding_dim=8)
    model.on_epoch_start(1, torch.Generator().manual_seed(0))
    users, pos, neg = batch(graphs.num_users, graphs.num_items, size=4)
    model.loss(users, pos, neg)
    sizes = model.last_subgraph_sizes
    assert len(sizes) == 3
    assert sizes[0] < graphs.num_users + graphs.num_items
    assert sizes[0] >= sizes[1] >= sizes[2]
    assert sizes[2] <= 12  # 4 users, 4 positives, 4 negatives: the distinct seeds


def test_target_edges_are_excluded_from_the_sampled_graph(monkeypatch):
    # user 0 has only item 0: with its training edge excluded, user 0 has no neighbour to aggregate.
    graphs = graphs_from_pairs(np.array([[0, 0], [1, 0], [1, 1]]), 2, 2)
    model = GraphSAGE.from_graphs(graphs, fan_outs="5", embedding_dim=4)
    calls = []

    def spy(*args, **kwargs):
        sub = sample_neighbors(*args, **kwargs)
        calls.append((kwargs.get("exclude_edges"), sub))
        return sub

    monkeypatch.setattr(graphsage_module, "sample_neighbors", spy)
    model.loss(torch.tensor([0]), torch.tensor([0]), torch.tensor([[1]]))
    excluded, sub = calls[0]
    assert excluded.tolist() == [[0], [0]]
    seeds = sub.node_ids[-1]
    user_row = int((seeds == 0).nonzero())
    edges = sub.blocks[0].edge_index
    assert not bool((edges[1] == user_row).any())


def test_loss_falls_and_the_model_beats_popularity_on_planted_data(data, trained):
    _, split, _ = data
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < 0.7 * losses[0]
    ours = evaluate(trained.model, split, "test", ks=(20,))
    popular = popularity_metrics(split, "test", ks=(20,))
    assert ours["ndcg@20"] > 1.2 * popular["ndcg@20"]


def test_same_seed_same_model_and_another_seed_another(data):
    _, split, graphs = data

    def run(seed):
        config = TrainConfig(
            model="graphsage", epochs=1, batch_size=512, lr=1e-2, progress=False, device="cpu", seed=seed
        )
        result = train(graphs, split, config)
        with result.model.inference():
            return result.model.score_users(torch.arange(10))

    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_history_of_own_items_reproduces_the_trained_score_when_the_user_is_the_unknown_vector(data):
    _, _, graphs = data
    # A history carries no user features here, so the trained user must have none either for exactness.
    graphs = dataclasses.replace(graphs, user_features=None)
    model = GraphSAGE.from_graphs(graphs, fan_outs="5,5", embedding_dim=8).eval()
    user = 7
    with torch.no_grad():
        model.unknown_user.normal_()
        model.input.user_embedding.weight[user] = model.unknown_user
    csr = graphs.user_item_csr()
    items = csr.col_indices()[csr.crow_indices()[user] : csr.crow_indices()[user + 1]].tolist()
    with model.inference():
        trained = model.score_users(torch.tensor([user]))
        replay = model.score_history(History.from_lists([items]))
    assert torch.allclose(trained, replay, atol=1e-5)


def test_history_of_own_items_ranks_like_the_trained_user(data, trained):
    _, _, graphs = data
    model = trained.model
    csr = graphs.user_item_csr()
    users = list(range(0, 60, 3))
    rows = [csr.col_indices()[csr.crow_indices()[u] : csr.crow_indices()[u + 1]].tolist() for u in users]
    with model.inference():
        known = model.score_users(torch.tensor(users))
        replay = model.score_history(History.from_lists(rows))
    top_known = known.topk(20, dim=1).indices
    top_replay = replay.topk(20, dim=1).indices
    overlap = np.mean(
        [len(set(a.tolist()) & set(b.tolist())) / 20 for a, b in zip(top_known, top_replay, strict=True)]
    )
    assert overlap > 0.6


@pytest.mark.parametrize("aggregator", ["mean", "pool"])
def test_without_user_ids_a_training_user_is_scored_as_a_new_user_with_its_items(data, aggregator):
    _, split, graphs = data
    assert graphs.user_features is not None  # the new-user path must carry them too
    config = TrainConfig(
        model="graphsage",
        hparams={"user_ids": False, "aggregator": aggregator, "fan_outs": "5,5", "embedding_dim": 16},
        epochs=2,
        batch_size=256,
        lr=1e-2,
        progress=False,
        device="cpu",
        seed=3,
    )
    model = train(graphs, split, config).model
    assert model.unknown_user.abs().sum() > 0  # trained: it is every user's input
    csr = graphs.user_item_csr()
    users = list(range(0, 60, 3))
    rows = [csr.col_indices()[csr.crow_indices()[u] : csr.crow_indices()[u + 1]].tolist() for u in users]
    history = History.from_lists(rows, user_features=graphs.user_features[users])
    with model.inference():
        known = model.score_users(torch.tensor(users))
        replay = model.score_history(history)
    assert torch.allclose(known, replay, atol=1e-5)
    # No user id is read anywhere: other id embeddings leave every score as it was.
    with torch.no_grad():
        model.input.user_embedding.weight.normal_()
    with model.inference():
        assert torch.allclose(model.score_users(torch.tensor(users)), known, atol=1e-6)


def test_with_user_ids_a_training_user_is_not_scored_as_a_new_user(data, trained):
    _, _, graphs = data
    model = trained.model
    csr = graphs.user_item_csr()
    users = list(range(0, 60, 3))
    rows = [csr.col_indices()[csr.crow_indices()[u] : csr.crow_indices()[u + 1]].tolist() for u in users]
    history = History.from_lists(rows, user_features=graphs.user_features[users])
    with model.inference():
        assert not torch.allclose(model.score_users(torch.tensor(users)), model.score_history(history))


def test_user_features_reach_new_users():
    graphs = random_graphs()
    features = torch.randn(graphs.num_users, 3)
    model = GraphSAGE(
        graphs.num_users, graphs.num_items, graphs.ui_edge_index, user_features=features, embedding_dim=8
    ).eval()
    with model.inference():
        plain = model.score_history(History.from_lists([[1, 2]]))
        featured = model.score_history(History.from_lists([[1, 2]], user_features=features[:1]))
    assert not torch.allclose(plain, featured)


def test_export_pickles_the_network_and_a_fresh_load_scores_the_same(data, trained, tmp_path):
    model = trained.model
    folder = model.export().save(tmp_path / "sage")
    loaded = load_servable(folder)
    users = np.array([0, 4, 9])
    with model.inference():
        expected = model.score_users(torch.from_numpy(users)).numpy()
    np.testing.assert_allclose(loaded.score_users(users), expected, rtol=1e-5, atol=1e-6)
    # The file holds the weights and the graph, nothing per-run: a few times the parameters and edges.
    size = (folder / "model.pt").stat().st_size
    params = sum(p.numel() for p in model.parameters()) * 4
    edges = model.graph.u_items.numel() * 8 * 2
    assert size < 1.5 * (params + edges) + 200_000


def test_the_pickle_leaves_out_the_csr_cache(data):
    _, _, graphs = data
    model = GraphSAGE.from_graphs(graphs, embedding_dim=8)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    with_cache = buffer.tell()
    model.graph.csr()
    assert model.graph._cache is not None
    buffer = io.BytesIO()
    torch.save(model, buffer)
    assert buffer.tell() == with_cache
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.graph._cache is None


def test_older_context_samples_a_user_without_its_items_from_its_first_positive_on():
    _, _, graphs = planted()
    model = GraphSAGE.from_graphs(graphs, context="older", user_ids=False, fan_outs="-1")
    users_all, items_all = graphs.ui_edge_index.tolist()
    ages = graphs.ui_edge_age.tolist()
    order: dict[int, list[int]] = {}
    for u, i, _age in sorted(zip(users_all, items_all, ages, strict=True), key=lambda t: (t[0], -t[2], t[1])):
        order.setdefault(u, []).append(i)
    # User 0 twice (its 5th and 3rd items), user 1 with its first item, user 2 with its last one.
    users = torch.tensor([0, 0, 1, 2])
    pos = torch.tensor([order[0][4], order[0][2], order[1][0], order[2][-1]])
    excluded = model.excluded_edges(users, pos)
    expected = {(0, order[0][4]), (0, order[0][2]), (1, order[1][0]), (2, order[2][-1])}
    expected |= {(0, i) for i in order[0][2:]} | {(2, order[2][-1])}  # user 1: first item, pairs only
    assert set(map(tuple, excluded.T.tolist())) == expected
    # With every neighbour taken, each user's sampled items are exactly those before its first positive.
    sub = sample_neighbors(model.graph.csr(), users, [-1], exclude_edges=excluded)
    block = sub.blocks[0]
    sources, destinations = block.edge_index
    for local, user in enumerate(sub.node_ids[1].tolist()):  # the seeds (destinations)
        got = {int(sub.node_ids[0][s]) - model.num_users for s in sources[destinations == local]}
        want = {0: set(order[0][:2]), 1: set(order[1][1:]), 2: set(order[2][:-1])}[user]
        assert got == want
    with pytest.raises(ValueError, match="timestamps"):
        GraphSAGE.from_graphs(random_graphs(), context="older")


def test_older_context_trains_through_the_trainer():
    _, split, graphs = planted()
    config = TrainConfig(
        model="graphsage",
        hparams={"context": "older", "user_ids": False},
        epochs=2,
        batch_size=256,
        progress=False,
        device="cpu",
        seed=1,
    )
    trained = train(graphs, split, config)
    assert np.isfinite(trained.history[-1]["loss"]) and len(trained.history) == 2
