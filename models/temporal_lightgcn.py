"""Time-decayed LightGCN: LightGCN on a user-item graph whose edges weigh less the older they are.

LightGCN (He et al., SIGIR 2020, https://arxiv.org/abs/2002.02126) propagates over a binary graph, so a
rating given a year before a user's latest one counts as much as yesterday's. Here each training edge
``(u, i)`` has weight ``w = floor + (1 - floor) * 2^(-age / half_life)``, where ``age`` is the number of
days between it and user ``u``'s latest training interaction: a user's most recent behaviour keeps weight
1 and older behaviour decays exponentially with the given half-life, never below ``floor``. The weighted
graph is symmetric-normalised as LightGCN's is, ``D_w^-1/2 A_w D_w^-1/2`` with weighted degrees, so both a
user's embedding (the sum of its items) and an item's (the sum of its users) lean towards recent edges.
This is the exponential time-decay weighting of time-aware collaborative filtering (Ding and Li,
"Time weight collaborative filtering", CIKM 2005, https://doi.org/10.1145/1099554.1099689) applied to
LightGCN's propagation. The decay is a tuned hyperparameter (:meth:`TemporalLightGCN.search_space`); with
``half_life_days=None`` every weight is 1 and the model is LightGCN exactly (the non-temporal twin).

Ages come from :attr:`models.graphs.Graphs.ui_edge_age` (training pairs only), so the model requires
``timestamps``; data without them is refused before training (:func:`tasks.compat.check_requirements`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from models.base import Trial, register_model
from models.graphs import csr_from_sorted
from models.lightgcn import LightGCN

if TYPE_CHECKING:
    from models.graphs import Graphs


def recency_weights(
    edge_index: Tensor, age_days: Tensor, num_users: int, half_life_days: float | None, floor: float
) -> Tensor:
    """Weight of each user-item edge from its age relative to its user's latest training interaction.

    Args:
        edge_index: Training pairs ``(user, item)``.
        age_days: Each pair's age at the training cut in days (:attr:`Graphs.ui_edge_age`).
        num_users: U.
        half_life_days: Days after which a weight halves (above ``floor``); ``None`` turns decay off.
        floor: The weight of infinitely old edges, in ``[0, 1)``.

    Returns:
        float32 weights in ``(floor, 1]``, 1 for each user's latest edge (all 1 without decay).

    Shapes:
        edge_index ``[2, E]``, age_days ``[E]`` -> ``[E]``.
    """
    if half_life_days is None:
        return torch.ones(edge_index.shape[1], dtype=torch.float32, device=edge_index.device)
    users = edge_index[0]
    age = age_days.to(torch.float32)
    newest = torch.full((num_users,), float("inf"), device=age.device).scatter_reduce(
        0, users, age, reduce="amin"
    )
    relative = (age - newest[users]).clamp(min=0)
    return floor + (1.0 - floor) * torch.exp2(-relative / half_life_days)


def weighted_bipartite_adjacency(
    edge_index: Tensor, weight: Tensor, num_users: int, num_items: int
) -> Tensor:
    """``D_w^-1/2 A_w D_w^-1/2`` of the joint user+item graph with weighted edges (items at offset U).

    With all weights 1 this is :func:`tasks.graphs.symmetric_normalized_adjacency` of the same pairs.

    Args:
        edge_index: Unique training pairs ``(user, item)``, item ids not offset.
        weight: Positive weight of each pair.
        num_users: U.
        num_items: I.

    Returns:
        Sparse CSR float32 ``[U + I, U + I]``, symmetric.

    Shapes:
        edge_index ``[2, E]``, weight ``[E]``.
    """
    n = num_users + num_items
    users, items = edge_index[0].to(torch.long), edge_index[1].to(torch.long) + num_users
    row, col = torch.cat([users, items]), torch.cat([items, users])
    w = torch.cat([weight, weight]).to(torch.float32)
    order = torch.argsort(row * n + col)
    row, col, w = row[order], col[order], w[order]
    deg = torch.zeros(n, dtype=torch.float32, device=w.device).index_add_(0, row, w)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros_like(deg))
    return csr_from_sorted(row, col, inv_sqrt[row] * w * inv_sqrt[col], (n, n))


@register_model
class TemporalLightGCN(LightGCN):
    """LightGCN over a recency-weighted adjacency (see the module docstring); decay off is LightGCN.

    Args:
        num_users: U.
        num_items: I.
        adj: The recency-weighted, normalised joint adjacency (:func:`weighted_bipartite_adjacency`).
        half_life_days: The decay's half-life in days (``None``: no decay). Recorded; the weights are in
            ``adj``.
        floor: The weight of very old edges. Recorded.
        embedding_dim, num_layers, reg_weight, alpha, init_std: As :class:`models.lightgcn.LightGCN`.
    """

    name = "temporal_lightgcn"
    family = "graph"
    requires = frozenset({"user_item", "timestamps"})

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        half_life_days: float | None = 30.0,
        floor: float = 0.1,
        embedding_dim: int = 64,
        num_layers: int = 3,
        reg_weight: float = 1e-4,
        alpha: Sequence[float] | None = None,
        init_std: float = 0.1,
    ) -> None:
        if half_life_days is not None and half_life_days <= 0:
            raise ValueError(f"half_life_days must be positive or None, got {half_life_days}")
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"floor must lie in [0, 1), got {floor}")
        super().__init__(num_users, num_items, adj, embedding_dim, num_layers, reg_weight, alpha, init_std)
        self.half_life_days = half_life_days
        self.floor = floor
        self._hparams = {"half_life_days": half_life_days, "floor": floor, **self._hparams}

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> TemporalLightGCN:
        """Weight ``graphs``' training edges by recency (:attr:`Graphs.ui_edge_age`) and build on them.

        Raises:
            ValueError: when the graphs carry no edge ages (data without timestamps).
        """
        merged = cls.resolve_hparams(hparams)
        if graphs.ui_edge_age is None:
            raise ValueError(
                "temporal_lightgcn needs interaction timestamps (Graphs.ui_edge_age); this data has none"
            )
        weight = recency_weights(
            graphs.ui_edge_index,
            graphs.ui_edge_age,
            graphs.num_users,
            merged["half_life_days"],
            merged["floor"],
        )
        adj = weighted_bipartite_adjacency(graphs.ui_edge_index, weight, graphs.num_users, graphs.num_items)
        return cls(num_users=graphs.num_users, num_items=graphs.num_items, adj=adj, **merged)

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """LightGCN's paper setting plus a 30-day half-life and a 0.1 floor.

        A month is the scale of the "short-term" drift of time-aware CF (Ding and Li 2005 tune half-lives
        of weeks to months on MovieLens); the floor keeps a user's old taste from vanishing entirely. On a
        temporal ML-100K split (benchmarks/RESULTS.md, issue 12) 30 days had the best validation NDCG@10 of
        1 / 7 / 30 / 180 days for one training seed, and 2.4 hours (floor 0) beat 30 days for another: most
        ML-100K users rate everything within an hour, so the search space reaches down to 0.05 days.
        """
        return {"half_life_days": 30.0, "floor": 0.1, **LightGCN.default_hparams()}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """LightGCN's space plus the half-life (hours to years, log scale) and the floor."""
        return {
            "half_life_days": trial.suggest_float("half_life_days", 0.05, 1000.0, log=True),
            "floor": trial.suggest_float("floor", 0.0, 0.5),
            **LightGCN.search_space(trial),
        }
