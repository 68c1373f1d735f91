from __future__ import annotations

import numpy as np
import pytest
import torch

from models.base import History
from models.graph_sampling import BipartiteCSR, random_walk_neighbors
from models.pinsage import PinSage, PinSageConv
from models.serving import load_servable
from tasks.evaluate import evaluate, popularity_metrics
from tasks.train import TrainConfig, train
from tests.models.planted import batch, planted, random_graphs


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def trained(data):
    _, split, graphs = data
    config = TrainConfig(
        model="pinsage", epochs=8, batch_size=256, lr=1e-2, progress=False, device="cpu", seed=3
    )
    return train(graphs, split, config)


def _items_of(graphs, user):
    csr = graphs.user_item_csr()
    return csr.col_indices()[csr.crow_indices()[user] : csr.crow_indices()[user + 1]].tolist()


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_scores_have_one_row_per_user_and_one_column_per_item(num_layers):
    graphs = random_graphs()
    model = PinSage.from_graphs(graphs, num_layers=num_layers, num_neighbors=3, embedding_dim=8)
    with model.inference():
        scores = model.score_users(torch.tensor([0, 5, 11]))
        new = model.score_history(History.from_lists([[1, 2], [0], []]))
    assert scores.shape == (3, graphs.num_items)
    assert new.shape == (3, graphs.num_items)
    assert torch.equal(new[2], torch.zeros(graphs.num_items))  # an empty history: the caller's fallback
    users, pos, neg = batch(graphs.num_users, graphs.num_items, negatives=2)
    assert model.loss(users, pos, neg).ndim == 0


def test_importance_pooling_is_the_visit_weighted_mean_of_relu_messages():
    torch.manual_seed(0)
    conv = PinSageConv(4, 3, 5)
    h = torch.randn(6, 4)
    neighbors = torch.tensor([[1, 2], [0, 5]])
    alpha = torch.tensor([[0.75, 0.25], [1.0, 0.0]])
    out = conv(h, h[[3, 4]], neighbors, alpha)
    messages = torch.relu(conv.q(h))
    pooled = torch.stack([0.75 * messages[1] + 0.25 * messages[2], messages[0]])
    expected = torch.relu(conv.w(torch.cat([h[[3, 4]], pooled], 1)))
    assert torch.allclose(out, torch.nn.functional.normalize(expected, dim=1), atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_neighbourhoods_are_the_walks_top_t_with_normalised_weights(data):
    _, _, graphs = data
    model = PinSage.from_graphs(graphs, num_neighbors=5, num_walks=30)
    generator = torch.Generator().manual_seed(11)
    model.on_epoch_start(1, generator)
    csr = BipartiteCSR.from_edge_index(graphs.ui_edge_index, graphs.num_users, graphs.num_items)
    expected, weights = random_walk_neighbors(
        csr,
        50,
        num_walks=30,
        walk_length=2,
        generator=torch.Generator().manual_seed(11),
        batch_size=2**22 // 60,
    )
    assert torch.equal(model.neighbors, expected[:, :5])
    assert torch.equal(model.hard_pool, expected[:, 10:50])
    assert torch.allclose(model.neighbor_weights.sum(1), torch.ones(graphs.num_items))
    assert bool((model.neighbor_weights[:, :-1] >= model.neighbor_weights[:, 1:]).all())


def test_neighbourhoods_are_refreshed_every_epoch_from_the_generator(data):
    _, _, graphs = data
    model = PinSage.from_graphs(graphs, num_neighbors=10, num_walks=5)
    generator = torch.Generator().manual_seed(0)
    model.on_epoch_start(1, generator)
    first = model.neighbors.clone()
    model.on_epoch_start(2, generator)
    second = model.neighbors.clone()
    assert not torch.equal(first, second)
    again = PinSage.from_graphs(graphs, num_neighbors=10, num_walks=5)
    replay = torch.Generator().manual_seed(0)
    again.on_epoch_start(1, replay)
    assert torch.equal(again.neighbors, first)


def test_full_graph_inference_equals_mini_batch_inference(data):
    _, _, graphs = data
    model = PinSage.from_graphs(graphs, num_neighbors=2, num_layers=1, embedding_dim=8).eval()
    items = torch.tensor([3, 0, 159, 3, 77])
    with torch.no_grad():
        full = model.item_embeddings()
        mini = model.embed_items(items)
    assert torch.allclose(full[items], mini, atol=1e-5)
    # The mini-batch path ran: these items' 1-hop neighbourhood is a small part of the catalogue.
    reached = torch.unique(torch.cat([items, model.neighbors[items].flatten()]))
    assert 2 * reached.numel() < graphs.num_items


def test_curriculum_adds_one_hard_negative_per_epoch_up_to_the_cap(data):
    _, _, graphs = data
    model = PinSage.from_graphs(graphs, max_hard_negatives=2, num_walks=20)
    users, pos, neg = batch(graphs.num_users, graphs.num_items, size=64, negatives=1)
    widths = []
    for epoch in (1, 2, 3, 4):
        model.on_epoch_start(epoch, torch.Generator().manual_seed(epoch))
        widths.append(model.training_negatives(users, pos, neg).shape[1])
    assert widths == [1, 2, 3, 3]


def test_hard_negatives_come_from_the_positives_walk_ranks_and_are_never_positives(data):
    _, _, graphs = data
    model = PinSage.from_graphs(graphs, max_hard_negatives=3, hard_rank_low=2, hard_rank_high=12)
    model.on_epoch_start(4, torch.Generator().manual_seed(1))
    users, pos, neg = batch(graphs.num_users, graphs.num_items, size=200, negatives=1, seed=3)
    out = model.training_negatives(users, pos, neg)
    assert torch.equal(out[:, :1], neg)
    hard = out[:, 1:]
    from_walks = (hard.unsqueeze(2) == model.hard_pool[pos].unsqueeze(1)).any(2)
    fell_back = hard == neg
    assert bool((from_walks | fell_back).all())
    assert from_walks.float().mean() > 0.5
    # batch() draws its "negatives" blindly, so only a fallback may be one of the user's items.
    assert not bool((model.graph.is_positive(users.unsqueeze(1), hard) & ~fell_back).any())


def test_loss_falls_and_the_model_beats_popularity_on_planted_data(data, trained):
    _, split, _ = data
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < 0.85 * losses[0]
    ours = evaluate(trained.model, split, "test", ks=(20,))
    popular = popularity_metrics(split, "test", ks=(20,))
    assert ours["ndcg@20"] > 1.5 * popular["ndcg@20"]


def test_max_margin_loss_is_the_hinge_on_score_differences(data):
    _, _, graphs = data
    model = PinSage.from_graphs(graphs, margin=1e6, embedding_dim=8)
    users, pos, neg = batch(graphs.num_users, graphs.num_items, size=8, negatives=2)
    # With a huge margin every pair is active: the loss is margin + mean(s_neg - s_pos) > 0.
    assert float(model.loss(users, pos, neg).detach()) == pytest.approx(1e6, rel=1e-3)


def test_same_seed_same_model_and_another_seed_another(data):
    _, split, graphs = data

    def run(seed):
        config = TrainConfig(
            model="pinsage", epochs=2, batch_size=512, lr=1e-2, progress=False, device="cpu", seed=seed
        )
        result = train(graphs, split, config)
        with result.model.inference():
            return result.model.score_users(torch.arange(10)), result.model.neighbors.clone()

    (first, nb1), (again, nb2), (other, nb3) = run(5), run(5), run(6)
    assert torch.equal(first, again) and torch.equal(nb1, nb2)
    assert not torch.allclose(first, other)
    assert not torch.equal(nb1, nb3)


def test_history_of_a_training_users_items_gives_exactly_its_scores(data, trained):
    _, _, graphs = data
    model = trained.model
    users = [0, 7, 42]
    with model.inference():
        known = model.score_users(torch.tensor(users))
        replay = model.score_history(History.from_lists([_items_of(graphs, u) for u in users]))
    assert torch.allclose(known, replay, atol=1e-5)


def test_item_features_are_the_input_without_ids():
    graphs = random_graphs()
    features = torch.randn(graphs.num_items, 5)
    model = PinSage(
        graphs.num_users, graphs.num_items, graphs.ui_edge_index, item_features=features, use_item_ids=False
    )
    assert model.item_embedding is None
    assert torch.allclose(model.item_input(torch.arange(3)), model.item_proj(features[:3]))
    without = PinSage.from_graphs(graphs, use_item_ids=False)  # no features: ids are kept
    assert without.item_embedding is not None


def test_export_pickles_the_network_and_a_fresh_load_scores_the_same(data, trained, tmp_path):
    model = trained.model
    folder = model.export().save(tmp_path / "pinsage")
    loaded = load_servable(folder)
    users = np.array([0, 4, 9])
    with model.inference():
        expected = model.score_users(torch.from_numpy(users)).numpy()
    np.testing.assert_allclose(loaded.score_users(users), expected, rtol=1e-5, atol=1e-6)
    history = (np.array([0, 2]), np.array([5, 9]))
    with model.inference():
        new = model.score_history(History(torch.tensor([0, 2]), torch.tensor([5, 9]))).numpy()
    np.testing.assert_allclose(loaded.score_history(*history), new, rtol=1e-5, atol=1e-6)
    size = (folder / "model.pt").stat().st_size
    params = sum(p.numel() for p in model.parameters()) * 4
    buffers = sum(b.numel() * b.element_size() for name, b in model.named_buffers() if name != "hard_pool")
    assert size < 1.2 * (params + buffers) + 200_000
    assert model.hard_pool.numel() > 0  # the trained model keeps its pool; only the export drops it


def test_pooling_operator_follows_restored_neighbourhoods(data, trained):
    # The trainer restores the best epoch's state (neighbourhoods included) after later refreshes: the
    # cached pooling operator must follow, or scores come from another epoch's neighbourhoods.
    model = trained.model
    before = model.pooling_operator()[0].to_dense().clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.on_epoch_start(99, torch.Generator().manual_seed(123))  # a refresh draws other walks
    assert not torch.equal(model.pooling_operator()[0].to_dense(), before)
    model.load_state_dict(state)
    assert torch.equal(model.pooling_operator()[0].to_dense(), before)


def _shortcut_graph(edges):
    """Users 0-1, items 0-2: item 0's only listener is user 0, who also has item 1; user 1 has items 1, 2."""
    return PinSage(
        num_users=2,
        num_items=3,
        ui_edge_index=torch.tensor(edges).T,
        embedding_dim=4,
        num_layers=1,
        num_neighbors=2,
        num_walks=64,
        walk_length=1,
        max_hard_negatives=0,
        user_sample=20,
    )


def test_a_batch_positive_is_not_reached_through_the_user_being_trained():
    model = _shortcut_graph([(0, 0), (0, 1), (1, 1), (1, 2)])
    # On the whole graph item 0's walks go 0 -> user 0 -> item 1 and item 1's reach item 0 the same way:
    # the "shortcut" from the positive to the user's other items, which no held-out item has.
    assert 1 in model.neighbors[0].tolist() and 0 in model.neighbors[1].tolist()
    gen = torch.Generator().manual_seed(0)
    neighbors, weights = model.batch_neighborhoods(torch.tensor([0]), torch.tensor([0]), gen)
    assert neighbors[0].tolist() == [-1, -1] and weights[0].tolist() == [0.0, 0.0]
    assert 0 not in neighbors.flatten().tolist()  # item 0 is reachable only through (user 0, item 0)
    assert neighbors[1].tolist() == [2, -1] and neighbors[2].tolist() == [1, -1]


@pytest.mark.parametrize("exclude", [True, False])
def test_training_loss_is_the_loss_on_the_graph_without_the_batch_edge(exclude):
    full = _shortcut_graph([(0, 0), (0, 1), (1, 1), (1, 2)])
    full.exclude_target_edges = exclude
    without = _shortcut_graph([(0, 1), (1, 1), (1, 2)])  # the graph with (user 0, item 0) removed
    without.load_state_dict(full.state_dict())  # the same weights; its walks are redrawn below
    users, pos, neg = torch.tensor([0]), torch.tensor([0]), torch.tensor([[2]])
    full.on_epoch_start(1, torch.Generator().manual_seed(1))
    without.on_epoch_start(1, torch.Generator().manual_seed(1))
    same = torch.allclose(full.loss(users, pos, neg), without.loss(users, pos, neg))
    # Excluding the batch's edge trains exactly as if it were absent; the old walks give another loss.
    assert same is exclude


def _user_time_ranks(graphs):
    """{(user, item): rank among the user's training items, oldest 0} from the graphs' ages (ties by item)."""
    users, items = graphs.ui_edge_index.tolist()
    ages = graphs.ui_edge_age.tolist()
    by_user: dict[int, list[tuple[float, int]]] = {}
    for u, i, a in zip(users, items, ages, strict=True):
        by_user.setdefault(u, []).append((-a, i))
    return {(u, i): r for u, pairs in by_user.items() for r, (_, i) in enumerate(sorted(pairs))}


def test_older_context_embeds_a_user_only_from_items_before_the_positive(data):
    _, _, graphs = data
    assert graphs.ui_edge_age is not None  # the synthetic source has timestamps
    model = PinSage.from_graphs(graphs, context="older")
    model._generator = torch.Generator().manual_seed(0)
    rank = _user_time_ranks(graphs)
    users, pos = graphs.ui_edge_index[:, ::7]
    context = model.context_items(users, pos)
    assert context.shape == (users.numel(), model.user_sample)
    firsts = 0
    for u, p, items in zip(users.tolist(), pos.tolist(), context.tolist(), strict=True):
        if rank[u, p] == 0:  # the user's first item: any of its items
            firsts += 1
            assert all((u, i) in rank for i in items)
        else:
            assert all(rank[u, i] < rank[u, p] for i in items), (u, p, items)
    assert firsts < users.numel() // 4
    # "any" draws among all the user's items, later ones included.
    plain = PinSage.from_graphs(graphs)
    plain._generator = torch.Generator().manual_seed(0)
    drawn = plain.context_items(users, pos).tolist()
    later = sum(
        rank[u, i] > rank[u, p]
        for u, p, row in zip(users.tolist(), pos.tolist(), drawn, strict=True)
        for i in row
    )
    assert later > 0


def test_older_context_trains_and_needs_timestamps(data):
    _, split, graphs = data
    config = TrainConfig(
        model="pinsage",
        hparams={"context": "older"},
        epochs=2,
        batch_size=256,
        lr=1e-2,
        progress=False,
        device="cpu",
        seed=3,
    )
    trained = train(graphs, split, config)
    assert np.isfinite(trained.history[-1]["loss"])
    served = trained.model.export()
    assert served.model.time_order is None  # the training-only order is not served
    with pytest.raises(ValueError, match="timestamps"):
        PinSage.from_graphs(random_graphs(), context="older")
    with pytest.raises(ValueError, match="context"):
        PinSage.from_graphs(graphs, context="newer")


def test_the_older_context_adds_timestamps_to_the_requirements():
    from tasks.compat import ModelDataMismatchError, check_requirements

    assert PinSage.requirements({}) == PinSage.requires == frozenset({"user_item"})
    assert PinSage.requirements({"context": "older"}) == {"user_item", "timestamps"}
    bare = random_graphs()
    check_requirements(["pinsage"], bare, "toy")
    with pytest.raises(ModelDataMismatchError, match="needs timestamps \\(for its hyperparameters\\)"):
        check_requirements(["pinsage"], bare, "toy", {"pinsage": {"context": "older"}})
