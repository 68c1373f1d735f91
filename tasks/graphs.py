"""Graph construction from the training part only: bipartite, social and knowledge graphs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch_geometric.data import HeteroData


@dataclass(frozen=True, eq=False)
class Graphs:
    """Every graph a model may need, built from the training interactions only.

    Node numbering: users ``0..U-1``, items ``0..I-1``. In the joint bipartite adjacency items sit at
    offset ``U`` (node ``U + i`` is item ``i``). KG entities ``0..num_entities-1`` with entity ``i < I`` being
    item ``i``.

    Attributes:
        num_users: U.
        num_items: I.
        ui_edge_index: Training (user, item) pairs, long ``[2, E]`` (item ids not offset).
        ui_adj: Symmetric-normalised ``D^-1/2 A D^-1/2`` of the joint user+item graph, sparse CSR float
            ``[U + I, U + I]``.
        social_edge_index: Symmetrised user-user edges, long ``[2, 2S]``, or ``None``.
        social_adj: Symmetric-normalised social adjacency, sparse CSR float ``[U, U]``, or ``None``.
        kg_edge_index: Entity-entity edges with inverses, long ``[2, 2T]``, or ``None``.
        kg_edge_type: Relation of each KG edge; relation ``r`` has inverse ``r + R``, long ``[2T]``, or None.
        num_entities: Number of KG entities (``I`` when there is no KG).
        num_relations: Number of KG relation types including inverses (``2R``).
        hetero: All graphs in one PyG ``HeteroData``.
        stats: Per-graph statistics (nodes, edges, density, degree quantiles, isolated, components).
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
