from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from numpy.typing import ArrayLike

from tasks.graphs import KG_RELATION, RATED_BY, RATES, TRUSTS, Graphs, build_graphs
from tasks.ingest.dataset import Dataset
from tasks.split import Split


def make_dataset(
    pairs: ArrayLike,
    num_users: int,
    num_items: int,
    *,
    social: ArrayLike | None = None,
    kg: ArrayLike | None = None,
    relation_names: tuple[str, ...] = (),
    num_entities: int | None = None,
) -> Dataset:
    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    entity_ids = (
        None if num_entities is None else np.array([f"e{j}" for j in range(num_entities)], dtype=object)
    )
    return Dataset(
        name="toy",
        user=edges[:, 0].copy(),
        item=edges[:, 1].copy(),
        rating=None,
        timestamp=None,
        user_ids=np.arange(num_users),
        item_ids=np.arange(num_items),
        social=None if social is None else np.asarray(social, dtype=np.int64),
        kg=None if kg is None else np.asarray(kg, dtype=np.int64),
        relation_names=relation_names,
        entity_ids=entity_ids,
    )


def make_split(
    train: ArrayLike,
    num_users: int,
    num_items: int,
    valid: ArrayLike = (),
    test: ArrayLike = (),
    seed: int = 0,
) -> Split:
    def arr(x: ArrayLike) -> np.ndarray:
        return np.asarray(x, dtype=np.int64).reshape(-1, 2)

    return Split("fixed", seed, num_users, num_items, arr(train), arr(valid), arr(test))


def dense_normalised(edges: list[tuple[int, int]], n: int) -> np.ndarray:
    """Hand-rolled D^-1/2 A D^-1/2 with explicit loops, independent of the code under test."""
    a = np.zeros((n, n))
    for u, v in edges:
        a[u, v] = a[v, u] = 1.0
    out = np.zeros((n, n))
    deg = a.sum(1)
    for i in range(n):
        for j in range(n):
            if a[i, j]:
                out[i, j] = 1.0 / np.sqrt(deg[i] * deg[j])
    return out


# Toy bipartite graph: 4 users, 3 items. User 3 and item 2 have no training interaction.
TOY_TRAIN = [(0, 0), (0, 1), (1, 0), (2, 1), (1, 0)]  # (1, 0) twice: merged
TOY_VALID = [(3, 2)]
TOY_TEST = [(2, 2), (3, 0)]


@pytest.fixture
def toy() -> Graphs:
    ds = make_dataset(TOY_TRAIN + TOY_VALID + TOY_TEST, 4, 3)
    return build_graphs(ds, make_split(TOY_TRAIN, 4, 3, TOY_VALID, TOY_TEST))


def test_ui_edge_index_is_unique_sorted_training_pairs(toy: Graphs) -> None:
    assert toy.ui_edge_index.dtype == torch.long
    assert toy.ui_edge_index.tolist() == [[0, 0, 1, 2], [0, 1, 0, 1]]
    assert (toy.num_users, toy.num_items) == (4, 3)


def test_ui_adj_matches_hand_computed_normalisation(toy: Graphs) -> None:
    adj = toy.ui_adj
    assert adj.layout == torch.sparse_csr
    assert adj.dtype == torch.float32
    assert adj.shape == (7, 7)
    dense = adj.to_dense().numpy()
    expected = dense_normalised([(u, 4 + i) for u, i in set(TOY_TRAIN)], 7)
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    np.testing.assert_allclose(dense, dense.T)
    # A spot value: user 0 has degree 2, item 0 (node 4) has degree 2 -> 1/2.
    assert dense[0, 4] == pytest.approx(0.5)
    # user 2 (deg 1) - item 1 (deg 2)
    assert dense[2, 5] == pytest.approx(1 / np.sqrt(2))


def test_isolated_nodes_have_zero_rows_and_no_nan(toy: Graphs) -> None:
    dense = toy.ui_adj.to_dense()
    assert torch.isfinite(dense).all()
    assert torch.count_nonzero(dense[3]) == 0  # user 3
    assert torch.count_nonzero(dense[:, 3]) == 0
    assert torch.count_nonzero(dense[4 + 2]) == 0  # item 2
    crow = toy.ui_adj.crow_indices()
    assert crow[4] == crow[3] and crow[7] == crow[6]


def test_adjacency_on_random_graph_matches_dense_formula() -> None:
    rng = np.random.default_rng(3)
    users, items = 12, 9
    train = np.unique(np.stack([rng.integers(0, users, 40), rng.integers(0, items, 40)], 1), axis=0)
    g = build_graphs(make_dataset(train, users, items), make_split(train, users, items))
    n = users + items
    a = np.zeros((n, n))
    a[train[:, 0], users + train[:, 1]] = 1
    a = a + a.T
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, deg**-0.5, 0.0)
    np.testing.assert_allclose(g.ui_adj.to_dense().numpy(), d[:, None] * a * d[None, :], rtol=1e-6)


def test_user_item_csr(toy: Graphs) -> None:
    csr = toy.user_item_csr()
    assert csr.layout == torch.sparse_csr
    assert csr.shape == (4, 3)
    expected = np.zeros((4, 3), dtype=np.float32)
    for u, i in TOY_TRAIN:
        expected[u, i] = 1
    np.testing.assert_array_equal(csr.to_dense().numpy(), expected)
    crow, col = csr.crow_indices(), csr.col_indices()
    assert col[crow[0] : crow[1]].tolist() == [0, 1]
    assert crow[3] == crow[4]  # user 3 has nothing in training


def test_user_item_csr_sorts_hand_made_edges(toy: Graphs) -> None:
    import dataclasses

    shuffled = dataclasses.replace(toy, ui_edge_index=torch.tensor([[2, 0, 1, 0, 2], [1, 1, 0, 0, 1]]))
    assert shuffled.user_item_csr().to_dense().tolist() == toy.user_item_csr().to_dense().tolist()


def test_social_symmetrised_and_normalised() -> None:
    social = np.array([[0, 1], [0, 2], [1, 2], [3, 4]])  # triangle 0-1-2, edge 3-4, user 5 alone
    ds = make_dataset([(0, 0)], 6, 1, social=social)
    g = build_graphs(ds, make_split([(0, 0)], 6, 1))
    assert g.social_edge_index is not None and g.social_adj is not None
    assert g.social_edge_index.shape == (2, 8)
    edges = set(map(tuple, g.social_edge_index.T.tolist()))
    assert edges == {(a, b) for a, b in social} | {(b, a) for a, b in social}
    assert g.social_adj.layout == torch.sparse_csr and g.social_adj.shape == (6, 6)
    dense = g.social_adj.to_dense().numpy()
    np.testing.assert_allclose(dense, dense_normalised([tuple(p) for p in social], 6), rtol=1e-6)
    assert dense[0, 1] == pytest.approx(0.5)
    assert dense[3, 4] == pytest.approx(1.0)
    assert not dense[5].any()
    assert g.hetero[TRUSTS].edge_index.tolist() == g.social_edge_index.tolist()
    stats = g.stats["social"]
    assert stats["nodes"] == 6 and stats["edges"] == 4
    assert stats["density"] == pytest.approx(4 / 15)
    assert stats["isolated"] == 1
    assert stats["components"] == 3 and stats["largest_component"] == 3
    assert stats["degree"]["max"] == 2 and stats["degree"]["min"] == 0


def test_no_social_no_kg_gives_none() -> None:
    g = build_graphs(make_dataset([(0, 0), (1, 1)], 2, 2), make_split([(0, 0), (1, 1)], 2, 2))
    assert g.social_edge_index is None and g.social_adj is None
    assert g.kg_edge_index is None and g.kg_edge_type is None
    assert g.num_entities == 2 and g.num_relations == 0
    assert g.stats["social"] is None and g.stats["kg"] is None
    assert set(g.hetero.node_types) == {"user", "item"}
    assert set(g.hetero.edge_types) == {RATES, RATED_BY}


def test_kg_inverse_edges_and_types() -> None:
    # 3 items (entities 0..2) + 2 other entities (3, 4); relations 0 and 1; entity 2 in no triple.
    kg = np.array([[0, 0, 3], [1, 0, 3], [1, 1, 4], [3, 1, 4]])
    ds = make_dataset([(0, 0)], 1, 3, kg=kg, relation_names=("genre", "director"), num_entities=5)
    g = build_graphs(ds, make_split([(0, 0)], 1, 3))
    assert g.kg_edge_index is not None and g.kg_edge_type is not None
    assert g.num_entities == 5 and g.num_relations == 4
    assert g.kg_edge_index.shape == (2, 8) and g.kg_edge_type.shape == (8,)
    triples = {tuple(t) for t in zip(*g.kg_edge_index.tolist(), g.kg_edge_type.tolist(), strict=True)}
    expected = {(h, t, r) for h, r, t in kg} | {(t, h, r + 2) for h, r, t in kg}
    assert triples == expected
    # First T columns are the forward triples in order.
    assert g.kg_edge_index[:, :4].tolist() == [kg[:, 0].tolist(), kg[:, 2].tolist()]
    assert g.kg_edge_type[:4].tolist() == kg[:, 1].tolist()
    store = g.hetero[KG_RELATION]
    assert store.edge_index.tolist() == g.kg_edge_index.tolist()
    assert store.edge_type.tolist() == g.kg_edge_type.tolist()
    assert g.hetero["entity"].num_nodes == 5
    stats = g.stats["kg"]
    assert stats["nodes"] == 5 and stats["edges"] == 4 and stats["relations"] == 2
    assert stats["isolated"] == 1 and stats["items_linked"] == 2
    assert stats["components"] == 2 and stats["largest_component"] == 4
    assert stats["relation_counts"] == [2, 2]
    assert stats["density"] == pytest.approx(4 / (2 * 25))


def test_kg_relation_count_inferred_without_names() -> None:
    kg = np.array([[0, 2, 1]])
    ds = make_dataset([(0, 0)], 1, 2, kg=kg, num_entities=2)
    g = build_graphs(ds, make_split([(0, 0)], 1, 2))
    assert g.num_relations == 6
    assert g.kg_edge_type is not None and g.kg_edge_type.tolist() == [2, 5]


def test_hetero_contents() -> None:
    ds = make_dataset(
        [(0, 0), (1, 1)], 2, 2, social=[[0, 1]], kg=[[0, 0, 2]], relation_names=("r",), num_entities=3
    )
    g = build_graphs(ds, make_split([(0, 0), (1, 1)], 2, 2))
    h = g.hetero
    assert h["user"].num_nodes == 2 and h["item"].num_nodes == 2 and h["entity"].num_nodes == 3
    assert set(h.edge_types) == {RATES, RATED_BY, TRUSTS, KG_RELATION}
    assert h[RATES].edge_index.tolist() == [[0, 1], [0, 1]]
    assert h[RATED_BY].edge_index.tolist() == g.ui_edge_index.flip(0).tolist()
    assert h[TRUSTS].edge_index.tolist() == [[0, 1], [1, 0]]
    assert h[KG_RELATION].edge_type.tolist() == [0, 1]
    h.validate(raise_on_error=True)


def test_user_item_stats_on_toy(toy: Graphs) -> None:
    s = toy.stats["user_item"]
    assert s["nodes"] == 7 and s["users"] == 4 and s["items"] == 3
    assert s["edges"] == 4
    assert s["density"] == pytest.approx(4 / 12)
    assert s["isolated_users"] == 1 and s["isolated_items"] == 1 and s["isolated"] == 2
    # Component {u0, u1, u2, i0, i1} plus the two isolated nodes.
    assert s["components"] == 3 and s["largest_component"] == 5
    assert s["user_degree"] == {
        "min": 0.0,
        "p25": 0.75,
        "median": 1.0,
        "p75": 1.25,
        "p90": pytest.approx(1.7),
        "p99": pytest.approx(1.97),
        "max": 2.0,
        "mean": 1.0,
    }
    assert s["item_degree"]["max"] == 2 and s["item_degree"]["min"] == 0
    assert s["degree"]["mean"] == pytest.approx(8 / 7)


def test_stats_are_plain_json() -> None:
    ds = make_dataset(
        [(0, 0), (1, 1)], 3, 2, social=[[0, 1]], kg=[[0, 0, 2]], relation_names=("r",), num_entities=3
    )
    g = build_graphs(ds, make_split([(0, 0), (1, 1)], 3, 2))

    def plain(x: object) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or type(x) in (int, float, str, bool)

    assert set(g.stats) == {"user_item", "social", "kg"}
    assert plain(g.stats)
    assert json.loads(json.dumps(g.stats)) == g.stats


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_valid_or_test_interaction_reaches_training_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    users, items = 25, 30
    key = rng.choice(users * items, size=300, replace=False)
    pairs = np.stack([key // items, key % items], 1)
    part = rng.choice(3, size=len(pairs), p=[0.6, 0.2, 0.2])
    train, valid, test = pairs[part == 0], pairs[part == 1], pairs[part == 2]
    ds = make_dataset(pairs, users, items, social=[[0, 1], [2, 3]])
    g = build_graphs(ds, make_split(train, users, items, valid, test, seed=seed))

    train_set = set(map(tuple, train.tolist()))
    held_out = set(map(tuple, valid.tolist())) | set(map(tuple, test.tolist()))
    assert held_out and not held_out & train_set

    in_edge_index = set(map(tuple, g.ui_edge_index.T.tolist()))
    assert in_edge_index == train_set

    adj = g.ui_adj.to_sparse_coo().coalesce()
    rows, cols = adj.indices().tolist()
    in_adj = {(r, c - users) for r, c in zip(rows, cols, strict=True) if r < users <= c}
    in_adj_t = {(c, r - users) for r, c in zip(rows, cols, strict=True) if c < users <= r}
    assert in_adj == train_set and in_adj_t == train_set
    # No user-user or item-item entries in the bipartite adjacency.
    assert all((r < users) != (c < users) for r, c in zip(rows, cols, strict=True))

    assert set(map(tuple, g.hetero[RATES].edge_index.T.tolist())) == train_set
    assert {(u, i) for i, u in g.hetero[RATED_BY].edge_index.T.tolist()} == train_set
    assert set(map(tuple, g.user_item_csr().to_sparse_coo().coalesce().indices().T.tolist())) == train_set
    assert g.stats["user_item"]["edges"] == len(train_set)


def test_mismatched_split_is_rejected() -> None:
    ds = make_dataset([(0, 0)], 2, 2)
    with pytest.raises(ValueError, match="another dataset"):
        build_graphs(ds, make_split([(0, 0)], 3, 2))
    with pytest.raises(ValueError, match=r"split.train item ids must lie in \[0, 2\)"):
        build_graphs(ds, make_split([(0, 5)], 2, 2))
    with pytest.raises(ValueError, match="dataset.social"):
        build_graphs(make_dataset([(0, 0)], 2, 2, social=[[0, 7]]), make_split([(0, 0)], 2, 2))


def assert_same_graphs(a: Graphs, b: Graphs, device: torch.device) -> None:
    for name in ("ui_edge_index", "social_edge_index", "kg_edge_index", "kg_edge_type"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert tb.device.type == device.type
        assert torch.equal(ta.cpu(), tb.cpu())
    for name in ("ui_adj", "social_adj"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert tb.device.type == device.type and tb.layout == torch.sparse_csr
        assert torch.equal(ta.to_dense().cpu(), tb.to_dense().cpu())
    for store in b.hetero.edge_stores:
        for value in store.values():
            if isinstance(value, torch.Tensor):
                assert value.device.type == device.type
    assert b.user_item_csr().device.type == device.type
    assert torch.equal(a.user_item_csr().to_dense().cpu(), b.user_item_csr().to_dense().cpu())
    assert b.stats == a.stats


def full_graphs() -> Graphs:
    ds = make_dataset(
        [(0, 0), (1, 1), (2, 0)], 3, 2, social=[[0, 1]], kg=[[0, 0, 2]], relation_names=("r",), num_entities=3
    )
    return build_graphs(ds, make_split([(0, 0), (1, 1), (2, 0)], 3, 2))


def test_to_cpu_round_trip() -> None:
    g = full_graphs()
    moved = g.to("cpu")
    assert moved is not g and moved.hetero is not g.hetero
    assert moved.device == torch.device("cpu")
    assert_same_graphs(g, moved, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_and_back() -> None:
    g = full_graphs()
    cuda = g.to("cuda")
    assert cuda.device.type == "cuda"
    assert_same_graphs(g, cuda, torch.device("cuda"))
    # Propagation works on the device: one LightGCN-style step.
    x = torch.randn(g.num_users + g.num_items, 4)
    assert torch.allclose((cuda.ui_adj @ x.cuda()).cpu(), g.ui_adj @ x, atol=1e-6)
    assert_same_graphs(g, cuda.to("cpu"), torch.device("cpu"))
    # The original is left on the CPU.
    assert g.device.type == "cpu" and g.hetero[RATES].edge_index.device.type == "cpu"
