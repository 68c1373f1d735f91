"""The graphs every model reads: the typed value graph construction produces (built by ``tasks.graphs``).

It lives in ``models/`` because the models consume it, so that ``models/`` imports nothing from ``tasks/``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch_geometric.data import HeteroData

#: Edge types of :attr:`Graphs.hetero`.
RATES = ("user", "rates", "item")
RATED_BY = ("item", "rated_by", "user")
TRUSTS = ("user", "trusts", "user")
KG_RELATION = ("entity", "relation", "entity")


@dataclass(frozen=True, eq=False)
class Graphs:
    """Every graph a model may need, built from the training interactions only.

    Node numbering: users ``0..U-1``, items ``0..I-1``. In the joint bipartite adjacency items sit at
    offset ``U`` (node ``U + i`` is item ``i``). KG entities ``0..num_entities-1`` with entity ``i < I`` being
    item ``i``.

    Attributes:
        num_users: U.
        num_items: I.
        ui_edge_index: Training (user, item) pairs, long ``[2, E]`` (item ids not offset), unique and sorted
            by user then item.
        ui_adj: Symmetric-normalised ``D^-1/2 A D^-1/2`` of the joint user+item graph, sparse CSR float
            ``[U + I, U + I]``.
        social_edge_index: Symmetrised user-user edges, long ``[2, 2S]``, or ``None``.
        social_adj: Symmetric-normalised social adjacency, sparse CSR float ``[U, U]``, or ``None``.
        kg_edge_index: Entity-entity edges with inverses, long ``[2, 2T]``, or ``None``. The first ``T``
            columns are the triples as ``head -> tail``, the last ``T`` their inverses ``tail -> head``.
        kg_edge_type: Relation of each KG edge; relation ``r`` has inverse ``r + R``, long ``[2T]``, or None.
        num_entities: Number of KG entities (``I`` when there is no KG).
        num_relations: Number of KG relation types including inverses (``2R``; 0 without a KG).
        hetero: All graphs in one PyG ``HeteroData``: node types ``user``, ``item`` and (with a KG)
            ``entity``; edge types ``('user', 'rates', 'item')``, ``('item', 'rated_by', 'user')``, with
            social data ``('user', 'trusts', 'user')`` (symmetrised) and with a KG
            ``('entity', 'relation', 'entity')`` whose ``edge_type`` holds the relation of each edge (one
            edge type with a relation attribute, the layout ``RGCNConv`` takes, rather than ``2R`` types).
        stats: Per-graph statistics (nodes, edges, density, degree quantiles, isolated, components) under
            ``user_item``, ``social`` and ``kg`` (the last two ``None`` when the data lacks them); plain
            Python types only, ready for JSON.
        user_features: Encoded user features, float32 ``[U, F_u]`` (numeric columns standardised,
            categorical ones one-hot), or ``None`` when the data has none.
        item_features: Encoded item features, float32 ``[I, F_i]``, or ``None``.
        feature_names: The column name of each feature, under ``"user"`` and ``"item"``.
        ui_edge_age: Age in days of each training pair of :attr:`ui_edge_index` (same order) at the training
            cut, the latest training timestamp: ``(cut - t) / 86400 >= 0``, float32 ``[E]``; ``None`` when the
            data has no timestamps. Held-out interactions never enter it (nor the cut).
    """

    num_users: int
    num_items: int
    ui_edge_index: torch.Tensor
    ui_adj: torch.Tensor
    social_edge_index: torch.Tensor | None
    social_adj: torch.Tensor | None
    kg_edge_index: torch.Tensor | None
    kg_edge_type: torch.Tensor | None
    num_entities: int
    num_relations: int
    hetero: HeteroData
    stats: dict[str, Any] = field(default_factory=dict)
    user_features: torch.Tensor | None = None
    item_features: torch.Tensor | None = None
    feature_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ui_edge_age: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        """The device every tensor lives on."""
        return self.ui_edge_index.device

    def to(self, device: torch.device | str) -> Graphs:
        """Return a copy with every tensor, and the ``HeteroData``, on ``device``.

        Args:
            device: Target device (``"cpu"``, ``"cuda"``, ``torch.device("cuda:1")``...).

        Returns:
            A new :class:`Graphs`; this one is left unchanged. Statistics are shared (plain Python).
        """
        device = torch.device(device)

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self,
            ui_edge_index=self.ui_edge_index.to(device),
            ui_adj=self.ui_adj.to(device),
            social_edge_index=move(self.social_edge_index),
            social_adj=move(self.social_adj),
            kg_edge_index=move(self.kg_edge_index),
            kg_edge_type=move(self.kg_edge_type),
            hetero=self.hetero.clone().to(device),
            user_features=move(self.user_features),
            item_features=move(self.item_features),
            ui_edge_age=move(self.ui_edge_age),
        )

    def user_item_csr(self) -> torch.Tensor:
        """The training interactions as a user -> items CSR matrix, for samplers and seen-item masks.

        ``crow_indices()[u]:crow_indices()[u + 1]`` slices ``col_indices()`` to the items user ``u`` has in
        training, in increasing order. Built on the graphs' device.

        Returns:
            Sparse CSR float32 ``[U, I]`` with value 1 at every training pair.
        """
        users, items = self.ui_edge_index[0], self.ui_edge_index[1]
        key = users * self.num_items + items
        if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
            # Graphs built by build_graphs are already sorted and unique; this covers hand-made ones.
            key = torch.unique(key)
            users, items = key // self.num_items, key % self.num_items
        return csr_from_sorted(
            users, items, torch.ones(items.numel(), device=items.device), (self.num_users, self.num_items)
        )


def csr_from_sorted(
    row: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """A sparse CSR tensor from entries already sorted by row (then column)."""
    crow = torch.zeros(size[0] + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=size[0]), 0)
    with warnings.catch_warnings():
        # Torch flags CSR as "beta" on first use; the operations used here (matmul, to()) are stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            col.to(torch.long),
            values.to(device=row.device, dtype=torch.float32),
            size=size,
            check_invariants=False,  # built sorted and in range above; checking costs a pass over the edges
        )


def transpose_csr(matrix: torch.Tensor) -> torch.Tensor:
    """The transpose of a sparse CSR matrix, as CSR (``[m, n]`` -> ``[n, m]``)."""
    coo = matrix.to_sparse_coo().t().coalesce()
    row, col = coo.indices()
    return csr_from_sorted(row, col, coo.values(), (matrix.shape[1], matrix.shape[0]))
