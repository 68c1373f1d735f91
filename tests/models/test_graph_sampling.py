"""Neighbour sampling and random-walk neighbourhoods on small graphs whose answers are known."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection

import pytest
import torch

from models import graph_sampling
from models.graph_sampling import (
    BipartiteCSR,
    SampledSubgraph,
    _sample_without_replacement,
    random_walk_neighbors,
    sample_neighbors,
    time_order,
)

FAN_OUTS = [[-1], [1], [3, 2], [5, 5, 5], [100, 100], [35]]  # 35 > 32 uses the random-key path


def random_graph(num_users: int = 40, num_items: int = 80, seed: int = 0) -> tuple[torch.Tensor, int, int]:
    """Users with densities from 0 to 0.9, so degrees span 0..~70 (both sampling paths, isolated nodes)."""
    gen = torch.Generator().manual_seed(seed)
    density = torch.linspace(0.0, 0.9, num_users)[:, None]
    mask = torch.rand(num_users, num_items, generator=gen) < density
    users, items = mask.nonzero(as_tuple=True)
    return torch.stack([users, items]), num_users, num_items


def joint_neighbours(edge_index: torch.Tensor, num_users: int) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in edge_index.t().tolist():
        out.setdefault(u, set()).add(num_users + i)
        out.setdefault(num_users + i, set()).add(u)
    return out


def check_subgraph(
    sub: SampledSubgraph,
    seeds: torch.Tensor,
    fan_outs: list[int],
    adjacency: dict[int, set[int]],
    excluded: Collection[tuple[int, int]] = (),
) -> None:
    """Everything a GraphSAGE layer relies on: ids consistent, edges real, counts and distinctness exact."""
    assert len(sub.blocks) == len(fan_outs) and len(sub.node_ids) == len(fan_outs) + 1
    assert torch.equal(sub.seed_nodes[sub.seed_index], seeds)
    assert torch.equal(sub.seed_nodes, torch.unique(seeds))
    for hop, fan_out in enumerate(fan_outs):
        layer = len(fan_outs) - 1 - hop  # hop 0 is the last layer
        block, src_ids, dst_ids = sub.blocks[layer], sub.node_ids[layer], sub.node_ids[layer + 1]
        assert block.size == (src_ids.numel(), dst_ids.numel())
        assert torch.equal(src_ids[: block.n_dst], dst_ids)  # x_dst = x_src[:n_dst]
        assert src_ids.unique().numel() == src_ids.numel()
        src, dst = block.edge_index
        assert all(0 <= s < block.n_src for s in src.tolist())
        assert all(0 <= d < block.n_dst for d in dst.tolist())
        sampled: dict[int, list[int]] = {}
        for s, d in zip(src_ids[src].tolist(), dst_ids[dst].tolist(), strict=True):
            sampled.setdefault(d, []).append(s)
        for d in dst_ids.tolist():
            allowed = {n for n in adjacency.get(d, set()) if (d, n) not in excluded}
            got = sampled.get(d, [])
            assert len(got) == len(set(got))  # without replacement
            assert set(got) <= allowed  # every sampled edge exists (and is not excluded)
            if fan_out == -1 or len(allowed) <= fan_out:
                assert set(got) == allowed
            else:
                assert len(got) == fan_out
        # every new source node was reached by an edge of this block
        assert set(src_ids[block.n_dst :].tolist()) <= set(src_ids[src].tolist())


# -- CSR --------------------------------------------------------------------------------------------------


def test_csr_lists_each_direction_sorted_and_deduplicated() -> None:
    edge_index = torch.tensor([[1, 0, 1, 0, 1], [2, 1, 0, 1, 2]])  # (0,1) and (1,2) twice
    graph = BipartiteCSR.from_edge_index(edge_index, num_users=3, num_items=4)
    assert graph.user_to_item.indptr.tolist() == [0, 1, 3, 3]
    assert graph.user_to_item.indices.tolist() == [1, 0, 2]
    assert graph.item_to_user.indptr.tolist() == [0, 1, 2, 3, 3]
    assert graph.item_to_user.indices.tolist() == [1, 0, 1]
    assert graph.joint.indptr.tolist() == [0, 1, 3, 3, 4, 5, 6, 6]
    assert graph.joint.indices.tolist() == [4, 3, 5, 1, 0, 1]
    assert graph.joint.degree().tolist() == [1, 2, 0, 1, 1, 1, 0]
    assert graph.num_nodes == 7 and graph.to("cpu").joint.indices.tolist() == graph.joint.indices.tolist()
    assert graph.joint_edge_index().tolist() == [[4, 3, 5, 1, 0, 1], [0, 1, 1, 3, 4, 5]]


@pytest.mark.parametrize("bad", [[[0], [4]], [[3], [0]], [[-1], [0]]])
def test_csr_rejects_out_of_range_ids(bad: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="ids must lie in"):
        BipartiteCSR.from_edge_index(torch.tensor(bad), num_users=3, num_items=4)


# -- neighbour sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fan_outs", FAN_OUTS)
def test_sampled_blocks_are_exact(fan_outs: list[int]) -> None:
    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index, num_users, num_items)
    seeds = torch.tensor([39, 0, 5, num_users + 3, 39, num_users + 79, 20])  # users, items, a repeat
    sub = sample_neighbors(graph, seeds, fan_outs, generator=torch.Generator().manual_seed(1))
    check_subgraph(sub, seeds, fan_outs, joint_neighbours(edge_index, num_users))


def test_blocks_with_every_neighbour_reproduce_full_graph_sage_layers() -> None:
    """The blocks are what PyG's layers take: two SAGEConv layers on blocks that keep every neighbour give
    the seeds the same output as the same layers on the whole graph."""
    from torch_geometric.nn import SAGEConv

    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index, num_users, num_items)
    torch.manual_seed(0)
    x = torch.randn(graph.num_nodes, 8)
    convs = [SAGEConv(8, 16), SAGEConv(16, 4)]
    full = convs[1](convs[0](x, graph.joint_edge_index()).relu(), graph.joint_edge_index())
    seeds = torch.tensor([39, 0, 5, num_users + 3, 39, num_users + 79, 20])
    sub = sample_neighbors(graph, seeds, [-1, -1])
    h = x[sub.input_nodes]
    for layer, (conv, block) in enumerate(zip(convs, sub.blocks, strict=True)):
        h = conv((h, h[: block.n_dst]), block.edge_index)
        h = h.relu() if layer == 0 else h
    assert torch.allclose(h[sub.seed_index], full[seeds], atol=1e-5)


def test_fan_out_at_least_degree_returns_every_neighbour_on_a_hand_made_graph() -> None:
    # user 0: items 0, 1, 2; user 1: item 1; item 1 (joint 3): users 0, 1.
    graph = BipartiteCSR.from_edge_index(torch.tensor([[0, 0, 0, 1], [0, 1, 2, 1]]), 2, 3)
    sub = sample_neighbors(graph, torch.tensor([0]), [3, 3], generator=torch.Generator().manual_seed(0))
    assert sub.node_ids[2].tolist() == [0]
    assert sub.node_ids[1].tolist() == [0, 2, 3, 4]
    assert sub.node_ids[0].tolist() == [0, 2, 3, 4, 1]
    last = sub.blocks[1]
    assert sorted(sub.node_ids[1][last.edge_index[0]].tolist()) == [2, 3, 4]
    first = sub.blocks[0]
    pairs = {
        (int(s), int(d))
        for s, d in zip(
            sub.node_ids[0][first.edge_index[0]], sub.node_ids[1][first.edge_index[1]], strict=True
        )
    }
    assert pairs == {(2, 0), (3, 0), (4, 0), (0, 2), (0, 3), (1, 3), (0, 4)}


@pytest.mark.parametrize("fan_outs", [[2], [3, 3]])
def test_both_relabelling_paths_give_the_same_subgraph(
    fan_outs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index, num_users, num_items)
    seeds = torch.tensor([39, 0, 5, num_users + 3, 39, num_users + 79, 20])

    def run() -> SampledSubgraph:
        return sample_neighbors(graph, seeds, fan_outs, generator=torch.Generator().manual_seed(4))

    table = run()  # a 120-node graph: the id-indexed table
    monkeypatch.setattr(graph_sampling, "_DENSE_RELABEL_RATIO", 0)  # force the sort
    sorted_ = run()
    check_subgraph(sorted_, seeds, fan_outs, joint_neighbours(edge_index, num_users))
    assert all(torch.equal(a, b) for a, b in zip(table.node_ids, sorted_.node_ids, strict=True))
    assert all(
        torch.equal(a.edge_index, b.edge_index) for a, b in zip(table.blocks, sorted_.blocks, strict=True)
    )


def test_sampling_is_seeded() -> None:
    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index, num_users, num_items)
    seeds = torch.arange(num_users, num_users + num_items)

    def run(seed: int) -> list[torch.Tensor]:
        sub = sample_neighbors(graph, seeds, [3, 3], generator=torch.Generator().manual_seed(seed))
        return [*sub.node_ids, *(b.edge_index for b in sub.blocks)]

    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("fan_outs", [[-1, -1], [2, 2], [100]])
def test_excluded_edges_are_never_sampled(fan_outs: list[int]) -> None:
    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index, num_users, num_items)
    targets = edge_index[:, torch.tensor([0, 5, 100, 400])]
    not_in_graph = torch.tensor([[0], [0]])  # user 0 has density 0: no edges; ignored
    seeds = torch.cat([targets[0], num_users + targets[1]])
    sub = sample_neighbors(
        graph,
        seeds,
        fan_outs,
        generator=torch.Generator().manual_seed(3),
        exclude_edges=torch.cat([targets, not_in_graph], 1),
    )
    excluded = set()
    for u, i in targets.t().tolist():
        excluded |= {(u, num_users + i), (num_users + i, u)}
    check_subgraph(sub, seeds, fan_outs, joint_neighbours(edge_index, num_users), excluded)


def test_sampling_without_replacement_is_uniform() -> None:
    # 6000 rows of degree 6, fan-out 2 (Floyd): each of the 15 pairs about 400 times.
    gen = torch.Generator().manual_seed(0)
    rows, positions = _sample_without_replacement(torch.full((6000,), 6), 2, gen)
    pairs = Counter(tuple(sorted(p)) for p in positions.view(-1, 2).tolist())
    assert set(pairs) == set(itertools.combinations(range(6), 2))
    assert all(330 < c < 470 for c in pairs.values())
    assert torch.equal(rows, torch.arange(6000).repeat_interleave(2))
    # 2000 rows of degree 40, fan-out 35 (random keys): each position kept 35/40 of the time.
    rows, positions = _sample_without_replacement(torch.full((2000,), 40), 35, gen)
    per_row = positions.view(2000, 35)
    assert all(len(set(r)) == 35 for r in per_row.tolist())
    freq = torch.bincount(positions, minlength=40).double() / 2000
    assert torch.allclose(freq, torch.full((40,), 35 / 40, dtype=torch.float64), atol=0.03)


def test_no_hops_and_bad_input() -> None:
    graph = BipartiteCSR.from_edge_index(torch.tensor([[0, 1], [0, 0]]), 2, 1)
    sub = sample_neighbors(graph, torch.tensor([2, 0, 2]), [])
    assert sub.blocks == () and sub.node_ids[0].tolist() == [0, 2] and sub.seed_index.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="joint ids"):
        sample_neighbors(graph, torch.tensor([3]), [1])
    with pytest.raises(ValueError, match="fan-outs"):
        sample_neighbors(graph, torch.tensor([0]), [-2])
    with pytest.raises(ValueError, match="exclude_edges"):
        sample_neighbors(graph, torch.tensor([0]), [1], exclude_edges=torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="exclude_edges"):
        sample_neighbors(graph, torch.tensor([0]), [1], exclude_edges=torch.tensor([0, 0]))


def test_graph_without_edges() -> None:
    graph = BipartiteCSR.from_edge_index(torch.empty(2, 0, dtype=torch.long), 2, 3)
    sub = sample_neighbors(graph, torch.tensor([0, 4]), [2, -1], exclude_edges=torch.tensor([[0], [1]]))
    assert [ids.tolist() for ids in sub.node_ids] == [[0, 4], [0, 4], [0, 4]]
    assert all(block.edge_index.shape == (2, 0) for block in sub.blocks)
    neighbors, weights = random_walk_neighbors(graph, 2, num_walks=3, walk_length=2)
    assert neighbors.tolist() == [[-1, -1]] * 3 and weights.tolist() == [[0.0, 0.0]] * 3


def test_without_edges_drops_exactly_the_given_pairs_in_every_direction() -> None:
    pairs = torch.tensor([[0, 0, 1, 1, 2], [0, 2, 0, 1, 2]])
    graph = BipartiteCSR.from_edge_index(pairs, 3, 3)
    # (1, 0) is dropped, (2, 0) is not an edge (ignored).
    reduced = graph.without_edges(torch.tensor([1, 2]), torch.tensor([0, 0]))
    expected = BipartiteCSR.from_edge_index(torch.tensor([[0, 0, 1, 2], [0, 2, 1, 2]]), 3, 3)
    for name in ("user_to_item", "item_to_user", "joint"):
        got, want = getattr(reduced, name), getattr(expected, name)
        assert torch.equal(got.indptr, want.indptr) and torch.equal(got.indices, want.indices), name
    assert graph.user_to_item.nnz == 5  # the original is unchanged


# -- random walks -----------------------------------------------------------------------------------------


def test_walks_never_cross_disconnected_communities() -> None:
    # users 0-2 with items 0-4, users 3-5 with items 5-9; item 10 has no user.
    gen = torch.Generator().manual_seed(0)
    left = torch.stack([torch.randint(0, 3, (30,), generator=gen), torch.randint(0, 5, (30,), generator=gen)])
    right = torch.stack(
        [torch.randint(3, 6, (30,), generator=gen), torch.randint(5, 10, (30,), generator=gen)]
    )
    graph = BipartiteCSR.from_edge_index(torch.cat([left, right], 1), 6, 11)
    for batch_size in (None, 1, 4):
        neighbors, weights = random_walk_neighbors(
            graph,
            6,
            num_walks=20,
            walk_length=3,
            generator=torch.Generator().manual_seed(1),
            batch_size=batch_size,
        )
        assert neighbors.shape == (11, 6) and weights.shape == (11, 6)
        for item in range(11):
            row = neighbors[item][neighbors[item] >= 0].tolist()
            community = set(range(5)) if item < 5 else set(range(5, 10)) if item < 10 else set()
            assert set(row) <= community - {item}
            assert len(row) == len(set(row))
        assert neighbors[10].tolist() == [-1] * 6 and weights[10].tolist() == [0.0] * 6


def test_most_visited_neighbour_and_weights() -> None:
    # users 0, 1: items {0, 2}; user 2: items {0, 1}. From item 0, one hop visits item 2 with probability
    # 1/3, item 1 with 1/6 (and itself with 1/2, not counted): weights 2/3 and 1/3, item 2 first although
    # its id is higher.
    graph = BipartiteCSR.from_edge_index(torch.tensor([[0, 0, 1, 1, 2, 2], [0, 2, 0, 2, 0, 1]]), 3, 4)
    neighbors, weights = random_walk_neighbors(
        graph, 3, num_walks=6000, walk_length=1, generator=torch.Generator().manual_seed(0)
    )
    assert neighbors[0].tolist() == [2, 1, -1]
    assert weights[0, 0].item() == pytest.approx(2 / 3, abs=0.03)
    assert weights[0, 2].item() == 0.0
    assert neighbors[1].tolist() == [0, -1, -1] and weights[1].tolist() == [1.0, 0.0, 0.0]
    assert neighbors[3].tolist() == [-1, -1, -1]  # item 3 has no user
    assert torch.allclose(weights[:3].sum(1), torch.ones(3))
    # weights follow visit counts: non-increasing along each row
    assert bool((weights[:, 1:] <= weights[:, :-1]).all())


def test_walks_are_seeded_and_items_select_rows() -> None:
    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index, num_users, num_items)

    def run(seed: int, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return random_walk_neighbors(
            graph, 5, num_walks=4, walk_length=2, items=items, generator=torch.Generator().manual_seed(seed)
        )

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    neighbors, weights = run(0, torch.tensor([7, 3]))
    assert neighbors.shape == (2, 5) and bool((neighbors[0] != 7).all()) and bool((neighbors[1] != 3).all())


def test_restart_keeps_walks_near_the_source() -> None:
    # a chain: item 0 - user 0 - item 1 - user 1 - item 2 - user 2 - item 3
    graph = BipartiteCSR.from_edge_index(torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 3]]), 3, 4)
    source = torch.tensor([0])

    def far_weight(restart: float) -> float:
        neighbors, weights = random_walk_neighbors(
            graph,
            3,
            num_walks=4000,
            walk_length=4,
            restart_prob=restart,
            items=source,
            generator=torch.Generator().manual_seed(0),
        )
        return float(weights[0][neighbors[0] >= 2].sum())

    assert far_weight(0.9) < 0.5 * far_weight(0.0)
    with pytest.raises(ValueError, match="restart_prob"):
        random_walk_neighbors(graph, 3, num_walks=1, walk_length=1, restart_prob=1.0)


# -- devices ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_and_walks() -> None:
    edge_index, num_users, num_items = random_graph()
    graph = BipartiteCSR.from_edge_index(edge_index.cuda(), num_users, num_items)
    assert graph.device.type == "cuda"
    seeds = torch.tensor([39, 0, 5, num_users + 3, 39, num_users + 79, 20], device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(1)
    sub = sample_neighbors(graph, seeds, [3, 2], generator=gen, exclude_edges=edge_index[:, :3].cuda())
    assert all(t.device.type == "cuda" for t in sub.node_ids)
    excluded = set()
    for u, i in edge_index[:, :3].t().tolist():
        excluded |= {(u, num_users + i), (num_users + i, u)}
    cpu = SampledSubgraph(
        tuple(t.cpu() for t in sub.node_ids),
        tuple(type(b)(b.edge_index.cpu(), b.n_src, b.n_dst) for b in sub.blocks),
        sub.seed_index.cpu(),
    )
    check_subgraph(cpu, seeds.cpu(), [3, 2], joint_neighbours(edge_index, num_users), excluded)
    neighbors, weights = random_walk_neighbors(graph, 5, num_walks=4, walk_length=2, generator=gen)
    assert neighbors.device.type == "cuda" and weights.device.type == "cuda"
    row_sums = weights.sum(1)
    has = neighbors[:, 0] >= 0
    assert torch.allclose(row_sums[has], torch.ones_like(row_sums[has]))


def test_time_order_ranks_each_users_items_oldest_first():
    # User 0: item 1 (9 days old), item 3 (5), item 2 (1); user 1: item 2 (3), item 0 (2).
    edges = torch.tensor([[0, 0, 0, 1, 1], [3, 1, 2, 0, 2]])
    ages = torch.tensor([5.0, 9.0, 1.0, 2.0, 3.0])
    keys, rank, items = time_order(edges, ages, num_items=4)
    assert keys.tolist() == [1, 2, 3, 4, 6]  # (0,1), (0,2), (0,3), (1,0), (1,2): the user CSR's order
    assert rank.tolist() == [0, 2, 1, 1, 0]
    assert items.tolist() == [1, 3, 2, 2, 0]  # each user's items, oldest first


def test_time_order_needs_ages():
    with pytest.raises(ValueError, match="timestamps"):
        time_order(torch.tensor([[0], [0]]), None, num_items=1)
