"""Graph sampling on a CSR user-item graph in pure torch: neighbour sampling and random-walk neighbourhoods.

pyg-lib and torch-sparse are not available, so PyG's ``NeighborLoader`` cannot run; these are the sampling
primitives for mini-batch GraphSAGE (`Hamilton et al., 2017 <https://arxiv.org/abs/1706.02216>`_) and
PinSage (`Ying et al., 2018 <https://arxiv.org/abs/1806.01973>`_). Everything is vectorised (Python loops
run over layers, walk steps or fan-out positions, never over nodes) and runs on whichever device the
:class:`BipartiteCSR` lives on. All randomness comes from the ``generator`` argument, which must live on that
device (``torch.Generator(device="cuda")`` for a CUDA graph); ``None`` uses torch's global generator.

* :class:`BipartiteCSR` holds the training graph three ways: user -> items, item -> users, and the joint
  homogeneous graph (users ``0..U-1``, items ``U..U+I-1``) that the neighbour sampler walks.
* :func:`sample_neighbors` samples a GraphSAGE computation graph around seed nodes: per hop, up to
  ``fan_out`` distinct neighbours per node (uniform, without replacement), returned as bipartite blocks in
  the form PyG's layers take (``conv((x_src, x_src[:n_dst]), edge_index)``).
* :func:`random_walk_neighbors` runs item -> user -> item walks and keeps, per item, the top-T most visited
  other items with normalised visit counts (PinSage's importance weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Above this fan-out, sampling without replacement sorts random keys over the whole neighbourhood
# (O(degree) per node) instead of Floyd's algorithm (O(fan_out^2) per node).
_FLOYD_MAX_FAN_OUT = 32
# Relabel sampled nodes with an id-indexed table when the graph has at most this many nodes per sampled
# node; otherwise sort the sample (the table costs O(num_nodes) per hop, the sort O(n log n)).
_DENSE_RELABEL_RATIO = 8


@dataclass(frozen=True, eq=False)
class CSR:
    """A compressed sparse row adjacency without values.

    Row ``r``'s neighbours, in increasing order, are ``indices[indptr[r]:indptr[r + 1]]``.

    Attributes:
        indptr: Row offsets, long ``[num_rows + 1]``, ``indptr[0] == 0``, ``indptr[-1] == nnz``.
        indices: Column ids, long ``[nnz]``, sorted within each row, no duplicates within a row.
        num_cols: Number of columns (ids in ``indices`` are ``< num_cols``).
    """

    indptr: Tensor
    indices: Tensor
    num_cols: int

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return self.indptr.numel() - 1

    @property
    def nnz(self) -> int:
        """Number of stored edges."""
        return self.indices.numel()

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.indptr.device

    def degree(self) -> Tensor:
        """Out-degree of every row, long ``[num_rows]``."""
        return self.indptr[1:] - self.indptr[:-1]

    def to(self, device: torch.device | str) -> CSR:
        """A copy on ``device`` (this one is unchanged)."""
        return CSR(self.indptr.to(device), self.indices.to(device), self.num_cols)

    @staticmethod
    def from_pairs(rows: Tensor, cols: Tensor, num_rows: int, num_cols: int) -> CSR:
        """Build a CSR from (row, col) pairs in any order; duplicate pairs are kept once.

        Args:
            rows: Row ids in ``[0, num_rows)``, long ``[n]``.
            cols: Column ids in ``[0, num_cols)``, long ``[n]``.
            num_rows: Number of rows.
            num_cols: Number of columns.

        Returns:
            The CSR, on the device of ``rows``, columns sorted within each row.
        """
        key = torch.unique(rows.long() * num_cols + cols.long())  # sorted by row, then column
        row, col = key // num_cols, key % num_cols
        indptr = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
        indptr[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
        return CSR(indptr, col, num_cols)


@dataclass(frozen=True, eq=False)
class BipartiteCSR:
    """The user-item training graph as CSR in both directions and as one joint homogeneous graph.

    Build it with :meth:`from_edge_index`. In the joint numbering, node ``u < U`` is user ``u`` and node
    ``U + i`` is item ``i`` (the numbering of ``Graphs.ui_adj``).

    Attributes:
        num_users: ``U``.
        num_items: ``I``.
        user_to_item: Rows are users, columns item ids ``0..I-1``.
        item_to_user: Rows are items, columns user ids ``0..U-1``.
        joint: Rows and columns are joint ids ``0..U+I-1``; a user's neighbours are ``U + item``, an
            item's neighbours are users. Rows are sorted, so a user row lists items, an item row users.
    """

    num_users: int
    num_items: int
    user_to_item: CSR
    item_to_user: CSR
    joint: CSR

    @property
    def num_nodes(self) -> int:
        """``U + I``, the size of the joint numbering."""
        return self.num_users + self.num_items

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.joint.device

    @staticmethod
    def from_edge_index(ui_edge_index: Tensor, num_users: int, num_items: int) -> BipartiteCSR:
        """Build every direction from (user, item) pairs, on the device of ``ui_edge_index``.

        Args:
            ui_edge_index: Training pairs, row 0 users ``0..U-1``, row 1 items ``0..I-1`` (not offset);
                duplicates are kept once. Long ``[2, E]``.
            num_users: ``U``.
            num_items: ``I``.

        Returns:
            The graph.

        Raises:
            ValueError: When the shape is not ``[2, E]`` or an id is out of range.
        """
        if ui_edge_index.ndim != 2 or ui_edge_index.shape[0] != 2:
            raise ValueError(f"ui_edge_index must be [2, E], got {list(ui_edge_index.shape)}")
        users, items = ui_edge_index[0].long(), ui_edge_index[1].long()
        if users.numel():
            if int(users.min()) < 0 or int(users.max()) >= num_users:
                raise ValueError(
                    f"user ids must lie in [0, {num_users}), got {int(users.min())}..{int(users.max())}"
                )
            if int(items.min()) < 0 or int(items.max()) >= num_items:
                raise ValueError(
                    f"item ids must lie in [0, {num_items}), got {int(items.min())}..{int(items.max())}"
                )
        user_to_item = CSR.from_pairs(users, items, num_users, num_items)
        item_to_user = CSR.from_pairs(items, users, num_items, num_users)
        joint = CSR(
            torch.cat([user_to_item.indptr, user_to_item.nnz + item_to_user.indptr[1:]]),
            torch.cat([user_to_item.indices + num_users, item_to_user.indices]),
            num_users + num_items,
        )
        return BipartiteCSR(num_users, num_items, user_to_item, item_to_user, joint)

    def without_edges(self, users: Tensor, items: Tensor) -> BipartiteCSR:
        """The graph with the given (user, item) pairs removed (pairs not in the graph are ignored).

        Message passing on the training graph reads the very edges a batch is trained to predict unless
        they are taken out (DGL's PinSage example removes a batch's query-positive edges from its item
        graph; PyG's ``RandomLinkSplit`` keeps supervision edges out of the message edges). Vectorised,
        ``O(E log E)``.

        Args:
            users: User ids, long ``[X]``.
            items: Item ids (not offset), long ``[X]``.

        Returns:
            A new graph on the same device; this one is unchanged.
        """
        csr = self.user_to_item
        owner = torch.repeat_interleave(torch.arange(self.num_users, device=self.device), csr.degree())
        keys = owner * self.num_items + csr.indices
        drop = torch.isin(keys, users.to(self.device).long() * self.num_items + items.to(self.device).long())
        return BipartiteCSR.from_edge_index(
            torch.stack([owner[~drop], csr.indices[~drop]]), self.num_users, self.num_items
        )

    def joint_edge_index(self) -> Tensor:
        """The whole joint graph as PyG's ``edge_index``, for full-graph (layer-wise) inference.

        Returns:
            Long ``[2, 2E]``: row 0 the source (neighbour), row 1 the destination (the CSR row), every
            user-item edge in both directions, grouped by destination.
        """
        destination = torch.repeat_interleave(
            torch.arange(self.num_nodes, device=self.device), self.joint.degree()
        )
        return torch.stack([self.joint.indices, destination])

    def to(self, device: torch.device | str) -> BipartiteCSR:
        """A copy on ``device`` (this one is unchanged)."""
        return BipartiteCSR(
            self.num_users,
            self.num_items,
            self.user_to_item.to(device),
            self.item_to_user.to(device),
            self.joint.to(device),
        )


# -- neighbour sampling -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Block:
    """One bipartite message-passing layer of a sampled computation graph (PyG's ``(edge_index, size)``).

    Source nodes are the layer's input rows, destination nodes its output rows; the destination nodes are
    the first ``n_dst`` source nodes, so ``x_dst = x_src[:n_dst]`` and a layer is applied as
    ``conv((x_src, x_src[:block.n_dst]), block.edge_index)``.

    Attributes:
        edge_index: Messages ``src -> dst`` in local ids: row 0 indexes the source nodes ``[0, n_src)``,
            row 1 the destination nodes ``[0, n_dst)``. Long ``[2, E_l]``, grouped by destination.
        n_src: Number of source nodes.
        n_dst: Number of destination nodes.
    """

    edge_index: Tensor
    n_src: int
    n_dst: int

    @property
    def size(self) -> tuple[int, int]:
        """``(n_src, n_dst)``, PyG's ``size`` argument."""
        return self.n_src, self.n_dst


@dataclass(frozen=True, eq=False)
class SampledSubgraph:
    """A GraphSAGE computation graph around a batch of seed nodes (joint ids).

    With ``L`` hops, ``node_ids[0]`` are the input nodes (whose features or embeddings feed the first
    layer) and ``node_ids[L]`` the distinct seeds; ``node_ids[l + 1]`` is a prefix of ``node_ids[l]``.
    ``blocks[l]`` maps ``node_ids[l]`` (sources) to ``node_ids[l + 1]`` (destinations), in the order the
    layers are applied::

        x = embed(sub.node_ids[0])
        for conv, block in zip(convs, sub.blocks):
            x = conv((x, x[: block.n_dst]), block.edge_index)
        out = x[sub.seed_index]  # one row per given seed, in the given order

    Attributes:
        node_ids: Global joint ids per hop, ``L + 1`` long tensors ``[n_l]``, ``n_0 >= ... >= n_L``.
        blocks: ``L`` blocks, ``blocks[l].n_src == n_l`` and ``blocks[l].n_dst == n_{l+1}``.
        seed_index: Row of ``node_ids[L]`` (and of the last layer's output) for each given seed, long
            ``[B]``; seeds given more than once share a row.
    """

    node_ids: tuple[Tensor, ...]
    blocks: tuple[Block, ...]
    seed_index: Tensor

    @property
    def input_nodes(self) -> Tensor:
        """``node_ids[0]``: the nodes whose input features the first layer reads."""
        return self.node_ids[0]

    @property
    def seed_nodes(self) -> Tensor:
        """``node_ids[-1]``: the distinct seeds, the rows the last layer outputs."""
        return self.node_ids[-1]


def _rand(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64)


def _segment_arange(counts: Tensor) -> Tensor:
    """``cat([arange(c) for c in counts])`` without a Python loop."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


def _sample_without_replacement(
    degree: Tensor, fan_out: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Per row, ``min(degree, fan_out)`` distinct positions drawn uniformly from ``[0, degree)``.

    A row whose degree is at most ``fan_out`` (or any row when ``fan_out == -1``) gets every position.

    Rows with more neighbours than ``fan_out`` use Floyd's algorithm vectorised over rows (one step per
    fan-out position, ``O(fan_out^2)`` per row, independent of the degree) for small fan-outs, and random
    keys sorted within each row for large ones.

    Returns:
        ``(row, position)``, long ``[n]`` each, grouped by row.
    """
    device = degree.device
    counts = degree.clamp(max=fan_out) if fan_out >= 0 else degree
    rows = torch.repeat_interleave(torch.arange(degree.numel(), device=device), counts)
    positions = _segment_arange(counts)  # rows with degree <= fan_out: every position
    if fan_out < 0:
        return rows, positions
    big = (degree > fan_out).nonzero().squeeze(1)
    if big.numel() == 0 or fan_out == 0:
        return rows, positions
    d = degree[big]
    if fan_out <= _FLOYD_MAX_FAN_OUT:
        # Floyd: for j = d-k .. d-1 draw t in [0, j]; take t unless already taken, else j. Uniform k-subsets.
        picked = torch.empty(big.numel(), fan_out, dtype=torch.long, device=device)
        for step in range(fan_out):
            upper = d - fan_out + step  # inclusive
            t = torch.minimum((_rand(big.numel(), device, generator) * (upper + 1)).long(), upper)
            taken = (picked[:, :step] == t[:, None]).any(1)
            picked[:, step] = torch.where(taken, upper, t)
    else:
        # Random keys: shuffle each big row by sorting (row, random 31-bit key), keep the first fan_out.
        local = torch.repeat_interleave(torch.arange(big.numel(), device=device), d)
        noise = torch.randint(0, 2**31, (local.numel(),), generator=generator, device=device)
        order = torch.sort(local * 2**31 + noise, stable=True).indices  # rows stay grouped, shuffled inside
        shuffled = _segment_arange(d)[order]
        picked = shuffled[_segment_arange(d) < fan_out].view(big.numel(), fan_out)
    # Overwrite the first fan_out slots of each big row (their positions were 0..fan_out-1 above).
    starts = torch.cumsum(counts, 0) - counts
    slots = starts[big][:, None] + torch.arange(fan_out, device=device)
    positions[slots.flatten()] = picked.flatten()
    return rows, positions


@dataclass(frozen=True, eq=False)
class _Exclusion:
    """Excluded neighbour positions of the current frontier, for exact sampling around them.

    For frontier row ``f`` with excluded in-row positions ``q_0 < ... < q_{m-1}``, the ``v``-th kept
    neighbour (0-based) sits at position ``v + #{j : q_j - j <= v}``; ``keys`` holds ``f * stride + q_j - j``
    sorted, ``count`` holds ``m`` per row.
    """

    keys: Tensor
    count: Tensor
    stride: int

    def map(self, rows: Tensor, v: Tensor) -> Tensor:
        start = torch.cumsum(self.count, 0) - self.count
        below = torch.searchsorted(self.keys, rows * self.stride + v, right=True) - start[rows]
        return v + below


def _find_in_rows(csr: CSR, rows: Tensor, cols: Tensor) -> Tensor:
    """In-row position of ``cols[k]`` in row ``rows[k]`` (binary search, rows sorted), or -1 if absent."""
    if csr.nnz == 0:
        return torch.full_like(rows, -1)
    lo, hi = csr.indptr[rows].clone(), csr.indptr[rows + 1].clone()
    while bool((lo < hi).any()):
        active = lo < hi
        mid = (lo + hi) // 2
        value = csr.indices[mid.clamp(max=max(csr.nnz - 1, 0))]
        go_right = active & (value < cols)
        lo = torch.where(go_right, mid + 1, lo)
        hi = torch.where(active & ~go_right, mid, hi)
    found = lo < csr.indptr[rows + 1]
    found &= csr.indices[lo.clamp(max=max(csr.nnz - 1, 0))] == cols
    return torch.where(found, lo - csr.indptr[rows], -1)


def _exclusion_for(
    graph: BipartiteCSR, frontier: Tensor, excluded: tuple[Tensor, Tensor], stride: int
) -> _Exclusion:
    """Excluded in-row positions of the frontier nodes.

    ``excluded`` holds unique joint ``(node, neighbour)`` pairs, both directions of every excluded edge.
    """
    node, neighbour = excluded
    sorted_frontier, order = torch.sort(frontier)
    where = torch.searchsorted(sorted_frontier, node).clamp(max=max(frontier.numel() - 1, 0))
    in_frontier = sorted_frontier[where] == node if frontier.numel() else node < 0
    rows = order[where[in_frontier]]
    q = _find_in_rows(graph.joint, node[in_frontier], neighbour[in_frontier])
    present = q >= 0
    rows, q = rows[present], q[present]
    key, perm = torch.sort(rows * stride + q)
    rows = rows[perm]
    count = torch.bincount(rows, minlength=frontier.numel())
    rank = _segment_arange(count)
    return _Exclusion(keys=key - rank, count=count, stride=stride)


def sample_neighbors(
    graph: BipartiteCSR,
    seeds: Tensor,
    fan_outs: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    exclude_edges: Tensor | None = None,
) -> SampledSubgraph:
    """Sample a GraphSAGE computation graph: per hop, up to ``fan_out`` distinct neighbours of every node.

    Hop ``h`` (``fan_outs[h]``, ``h = 0`` nearest the seeds, as PyG's ``num_neighbors``) samples, for every
    node reached so far, ``min(degree, fan_out)`` distinct neighbours uniformly without replacement (all of
    them when the degree is at most the fan-out; ``-1`` takes all neighbours). Nodes already in the set keep
    their local id; new nodes are appended in increasing global id. The same generator state gives the same
    subgraph.

    Target edges leak unless excluded: every training edge is in ``graph``, so when the seeds are the ends
    of the pairs being predicted, the edge between them can be sampled. Pass those pairs as
    ``exclude_edges`` to sample as if they were absent (both directions, every hop): a node then draws
    ``min(fan_out, degree - excluded)`` distinct neighbours from the rest, exactly uniformly.

    Args:
        graph: The training graph.
        seeds: Joint node ids (users ``0..U-1``, items ``U + i``), long ``[B]``; repeats are allowed.
        fan_outs: Neighbours per node for each hop, ``L`` values (``-1``: all).
        generator: Random source on the graph's device (``None``: torch's global generator).
        exclude_edges: (user, item) pairs to treat as absent, item ids not offset, long ``[2, X]``; pairs
            not in the graph are ignored.

    Returns:
        The blocks and the node ids of every hop; see :class:`SampledSubgraph`.

    Shapes:
        seeds ``[B]`` -> ``node_ids[l]`` ``[n_l]``, ``blocks[l].edge_index`` ``[2, E_l]``,
        ``seed_index`` ``[B]``.
    """
    device = graph.device
    seeds = seeds.to(device=device, dtype=torch.long)
    if seeds.numel() and (int(seeds.min()) < 0 or int(seeds.max()) >= graph.num_nodes):
        raise ValueError(
            f"seeds must be joint ids in [0, {graph.num_nodes}), got {int(seeds.min())}..{int(seeds.max())}"
        )
    if any(k < -1 for k in fan_outs):
        raise ValueError(f"fan-outs must be >= 0 or -1 (all neighbours), got {list(fan_outs)}")
    nodes, seed_index = torch.unique(seeds, return_inverse=True)
    excluded = None
    if exclude_edges is not None and exclude_edges.numel():
        exclude_edges = exclude_edges.to(device=device, dtype=torch.long)
        if exclude_edges.ndim != 2 or exclude_edges.shape[0] != 2:
            raise ValueError(
                f"exclude_edges must be (user, item) pairs [2, X], got {list(exclude_edges.shape)}"
            )
        low, high = exclude_edges.min(1).values, exclude_edges.max(1).values
        if int(low.min()) < 0 or int(high[0]) >= graph.num_users or int(high[1]) >= graph.num_items:
            raise ValueError(
                f"exclude_edges must hold users in [0, {graph.num_users}) and items in "
                f"[0, {graph.num_items}) "
                f"(item ids not offset)"
            )
        users, items = exclude_edges[0], exclude_edges[1] + graph.num_users
        keys = torch.unique(torch.cat([users * graph.num_nodes + items, items * graph.num_nodes + users]))
        excluded = (keys // graph.num_nodes, keys % graph.num_nodes)
        stride = int(graph.joint.degree().max()) + 1  # > every in-row position
    hop_nodes = [nodes]
    blocks: list[Block] = []
    for fan_out in fan_outs:
        ptr = graph.joint.indptr[nodes]
        degree = graph.joint.indptr[nodes + 1] - ptr
        exclusion = None
        if excluded is not None:
            exclusion = _exclusion_for(graph, nodes, excluded, stride)
            degree = degree - exclusion.count
        dst, v = _sample_without_replacement(degree, fan_out, generator)
        position = v
        if exclusion is not None:
            affected = (exclusion.count[dst] > 0).nonzero().squeeze(1)
            position = v.clone()
            position[affected] = exclusion.map(dst[affected], v[affected])
        neighbours = graph.joint.indices[ptr[dst] + position]
        src, nodes = _append_new(nodes, neighbours, graph.num_nodes)
        hop_nodes.append(nodes)
        blocks.append(Block(torch.stack([src, dst]), n_src=nodes.numel(), n_dst=hop_nodes[-2].numel()))
    # Sampling ran outwards from the seeds; layers run inwards.
    return SampledSubgraph(tuple(reversed(hop_nodes)), tuple(reversed(blocks)), seed_index)


def _append_new(nodes: Tensor, neighbours: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Local ids of ``neighbours`` in ``nodes`` extended by the new ones (appended in increasing id).

    Uses an id-indexed table (``O(num_nodes)``, no sort) when the graph is small next to the sample, and a
    sort of the sample otherwise; both give the same result.

    Returns:
        ``(local ids of neighbours [n], extended node set)``; ``nodes`` stays a prefix.
    """
    n_old, device = nodes.numel(), nodes.device
    if num_nodes <= _DENSE_RELABEL_RATIO * (n_old + neighbours.numel()):
        local = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        local[nodes] = torch.arange(n_old, device=device)
        is_new = torch.zeros(num_nodes, dtype=torch.bool, device=device)
        is_new[neighbours] = True
        is_new[nodes] = False
        new = is_new.nonzero().squeeze(1)
        local[new] = n_old + torch.arange(new.numel(), device=device)
        return local[neighbours], torch.cat([nodes, new])
    unique, inverse = torch.unique(torch.cat([nodes, neighbours]), return_inverse=True)
    local = torch.empty(unique.numel(), dtype=torch.long, device=device)
    is_old = torch.zeros(unique.numel(), dtype=torch.bool, device=device)
    is_old[inverse[:n_old]] = True
    local[inverse[:n_old]] = torch.arange(n_old, device=device)
    fresh = (~is_old).nonzero().squeeze(1)
    local[fresh] = n_old + torch.arange(fresh.numel(), device=device)
    extended = torch.empty_like(unique)
    extended[local] = unique
    return local[inverse[n_old:]], extended


# -- random walks -----------------------------------------------------------------------------------------


def _random_neighbor(csr: CSR, nodes: Tensor, generator: torch.Generator | None) -> Tensor:
    """One uniformly random neighbour per node (``-1`` for ``-1`` or a node without neighbours)."""
    valid = nodes >= 0
    safe = nodes.clamp(min=0)
    ptr = csr.indptr[safe]
    degree = torch.where(valid, csr.indptr[safe + 1] - ptr, 0)
    step = (_rand(nodes.numel(), nodes.device, generator) * degree).long()
    step = torch.minimum(step, (degree - 1).clamp(min=0))
    picked = csr.indices[(ptr + step).clamp(max=max(csr.nnz - 1, 0))] if csr.nnz else safe
    return torch.where(degree > 0, picked, -1)


def random_walk_neighbors(
    graph: BipartiteCSR,
    num_neighbors: int,
    *,
    num_walks: int,
    walk_length: int,
    restart_prob: float = 0.0,
    items: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """PinSage neighbourhoods: the top-T most visited items of item -> user -> item random walks.

    From each source item, ``num_walks`` walks take ``walk_length`` item -> item hops (each hop: a uniform
    user of the current item, then a uniform item of that user). Every item reached after a hop is a visit;
    visits to the source itself are not counted. Before each hop after the first, a walk jumps back to its
    source with probability ``restart_prob``. The ``num_neighbors`` most visited items (ties: lower item id
    first) are the neighbourhood, weighted by their visit counts normalised to sum 1 over the kept items.
    An item with fewer distinct visited items (an item without users has none) is padded with ``-1`` and
    weight 0. All walks of a batch of sources step together; the same generator state gives the same result.

    Args:
        graph: The training graph.
        num_neighbors: ``T``, neighbours kept per item.
        num_walks: Walks started from each source item.
        walk_length: Item -> item hops per walk (visits per walk).
        restart_prob: Probability of returning to the source before each hop after the first.
        items: Source item ids ``0..I-1``, long ``[n]`` (default: every item, ``n = I``).
        generator: Random source on the graph's device (``None``: torch's global generator).
        batch_size: Source items walked together (default: all); bounds memory at ``batch * num_walks``.

    Returns:
        ``(neighbors, weights)``: item ids long ``[n, T]`` (``-1`` padding) and float ``[n, T]`` (0 padding),
        rows in the order of ``items``, columns from most to least visited.
    """
    if num_neighbors < 1 or num_walks < 1 or walk_length < 1:
        raise ValueError(
            f"num_neighbors, num_walks and walk_length must be >= 1, got {num_neighbors}, {num_walks}, "
            f"{walk_length}"
        )
    if not 0.0 <= restart_prob < 1.0:
        raise ValueError(f"restart_prob must lie in [0, 1), got {restart_prob}")
    device = graph.device
    num_items = graph.num_items
    if items is None:
        items = torch.arange(num_items, device=device)
    items = items.to(device=device, dtype=torch.long)
    if items.numel() and (int(items.min()) < 0 or int(items.max()) >= num_items):
        raise ValueError(f"items must lie in [0, {num_items}), got {int(items.min())}..{int(items.max())}")
    n = items.numel()
    neighbors = torch.full((n, num_neighbors), -1, dtype=torch.long, device=device)
    weights = torch.zeros(n, num_neighbors, dtype=torch.float32, device=device)
    step = n if batch_size is None else max(1, batch_size)
    for start in range(0, n, step):
        chunk = items[start : start + step]
        rows = torch.arange(chunk.numel(), device=device).repeat_interleave(num_walks)
        source = chunk[rows]
        current = source
        visits = []
        for hop in range(walk_length):
            if hop > 0 and restart_prob > 0:
                current = torch.where(
                    _rand(current.numel(), device, generator) < restart_prob, source, current
                )
            users = _random_neighbor(graph.item_to_user, current, generator)
            current = _random_neighbor(graph.user_to_item, users, generator)
            visits.append(current)
        visited = torch.stack(visits, 1)  # [walks, walk_length]
        walk_rows = rows[:, None].expand_as(visited)
        keep = (visited >= 0) & (visited != source[:, None])
        # The two sorts below are most of a refresh; 32-bit keys sort about twice as fast as 64-bit ones.
        small = chunk.numel() * num_items < 2**31
        key_dtype = torch.int32 if small else torch.long
        keys, counts = torch.unique(
            (walk_rows[keep] * num_items + visited[keep]).to(key_dtype), return_counts=True
        )
        keys = keys.long()
        key_row, key_item = keys // num_items, keys % num_items
        # Most visited first within each row; unique's order (item ascending) breaks ties (stable sort).
        most = int(counts.max()) if counts.numel() else 0
        order_key = key_row * (most + 1) + (most - counts)
        if chunk.numel() * (most + 1) < 2**31:
            order_key = order_key.to(torch.int32)
        by_row = torch.sort(order_key, stable=True).indices
        key_row, key_item, counts = key_row[by_row], key_item[by_row], counts[by_row]
        rank = _segment_arange(torch.bincount(key_row, minlength=chunk.numel()))
        top = rank < num_neighbors
        out_rows = start + key_row[top]
        neighbors[out_rows, rank[top]] = key_item[top]
        weights[out_rows, rank[top]] = counts[top].to(torch.float32)
    total = weights.sum(1, keepdim=True)
    weights = torch.where(total > 0, weights / total.clamp(min=1e-12), weights)
    return neighbors, weights


def time_order(
    ui_edge_index: Tensor, ui_edge_age: Tensor | None, num_items: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Each user's training items in time order (the ``older`` context of PinSage and GraphSAGE).

    Returns:
        ``(edge_keys, time_rank, time_items)``: the sorted unique keys ``user * I + item`` of the pairs (the
        order of the user CSR), each pair's rank among its user's pairs from oldest (0) to newest (ties by
        item id), and the user CSR's items reordered oldest first within each user, all long ``[E]``.
    """
    if ui_edge_age is None:
        raise ValueError("a time order needs interaction timestamps (Graphs.ui_edge_age); this data has none")
    users, items = ui_edge_index[0].long().cpu(), ui_edge_index[1].long().cpu()
    keys = users * num_items + items
    age = ui_edge_age.to(torch.float64).cpu()
    edge_keys, first = _unique_first(keys)
    users, items, age = users[first], items[first], age[first]
    # Sort by user, then oldest first (largest age), then item: a stable sort on each key, last key first.
    by_time = torch.sort(items, stable=True).indices
    by_time = by_time[torch.sort(-age[by_time], stable=True).indices]
    by_time = by_time[torch.sort(users[by_time], stable=True).indices]
    start = torch.searchsorted(users, users)  # first edge of each edge's user (edges are sorted by user)
    time_rank = torch.empty_like(by_time)
    time_rank[by_time] = torch.arange(by_time.numel()) - start[by_time]
    return edge_keys, time_rank, items[by_time]


def _unique_first(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique keys and, for each, the position of its first occurrence in ``keys``."""
    order = torch.sort(keys, stable=True).indices
    sorted_keys = keys[order]
    first = torch.ones_like(sorted_keys, dtype=torch.bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return sorted_keys[first], order[first]
