"""GAT: multi-head graph attention on the joint user-item graph, ranked by dot product.

Veličković et al., "Graph Attention Networks", ICLR 2018, https://arxiv.org/abs/1710.10903 (``GATConv``),
or Brody et al., "How Attentive are Graph Attention Networks?", ICLR 2022, https://arxiv.org/abs/2105.14491
(``GATv2Conv``, ``version="v2"``). Layer ``l``, over users ``0..U-1`` and items ``U..U+I-1`` with every
training pair as an edge in both directions plus self-loops::

    h_v^(l) = act( ||_{k=1..K} sum_{u in N(v) + v} a_vu^k W^k h_u^(l-1) )     (no activation after the last)

with ``K`` heads of width ``d / K`` concatenated back to ``d``, dropout on the attention coefficients and
on each layer's input (the paper's two dropouts), ELU between layers as in the paper. The input is a learned
id embedding plus a linear projection of features when the data has them (as in :mod:`models.gcn`), the
final representation concatenates the input and every layer's output (see :mod:`models.gcn` for why), and
scoring is the dot product, trained with BPR.

**Cost.** Attention is computed per edge, so GAT cannot use the fixed CSR product of GCN and LightGCN: one
full-graph forward and backward pass runs PyG's edge-index message passing over ``2E + N`` edges and ``K``
heads (on HetRec Last.fm 168k edges; ``benchmarks/RESULTS.md`` has the seconds per epoch measured). The
defaults keep that affordable on a CPU: 2 heads (the paper's 8 are for 8-dimensional heads on citation
graphs), 2 layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv

from models.base import ScoreFn, Trial, gather_rows, pair_score_fn, register_model
from models.layered import Combine, LayeredGNN

if TYPE_CHECKING:
    from models.graphs import Graphs

Version = Literal["v1", "v2"]


def joint_edge_index(ui_edge_index: Tensor, num_users: int) -> Tensor:
    """Both directions of every (user, item) pair on the joint node numbering (items offset by U).

    Shapes:
        ui_edge_index long ``[2, E]`` -> long ``[2, 2E]`` (user -> item edges first).
    """
    users, items = ui_edge_index[0].long(), ui_edge_index[1].long() + num_users
    return torch.cat([torch.stack([users, items]), torch.stack([items, users])], dim=1)


@register_model
class GAT(LayeredGNN):
    """GAT (``GATConv`` or ``GATv2Conv`` layers, multi-head) over the joint user-item graph, BPR.

    Args:
        num_users: U.
        num_items: I.
        edge_index: Directed edges of the joint graph, both directions (:func:`joint_edge_index`).
        embedding_dim: d, the width of the input and of every layer (``heads`` must divide it).
        num_layers: L >= 1.
        heads: K attention heads per layer, each ``d / K`` wide, concatenated.
        attention_dropout: Dropout on the normalised attention coefficients during training.
        dropout: Dropout on each layer's input during training.
        version: ``"v1"`` (``GATConv``) or ``"v2"`` (``GATv2Conv``, dynamic attention).
        combine: ``"concat"`` or ``"mean"`` of the input and the layer outputs.
        reg_weight: Coefficient of the batch L2 term on the layer-0 id embeddings.
        init_std: Standard deviation of the id embeddings' (and feature projections') normal init.
        use_features: Add the projected features to the id embeddings when the data has them (``False``
            ignores them: the id-only model, for ablations and the search).
        user_features: Encoded user features ``[U, F_u]``, or ``None``.
        item_features: Encoded item features ``[I, F_i]``, or ``None``.
    """

    name = "gat"
    edge_index: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        edge_index: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 2,
        heads: int = 2,
        attention_dropout: float = 0.1,
        dropout: float = 0.1,
        version: Version = "v1",
        combine: Combine = "concat",
        reg_weight: float = 1e-4,
        init_std: float = 0.1,
        use_features: bool = True,
        user_features: Tensor | None = None,
        item_features: Tensor | None = None,
    ) -> None:
        super().__init__(
            num_users,
            num_items,
            embedding_dim,
            num_layers,
            dropout,
            combine,
            reg_weight,
            init_std,
            use_features,
            user_features,
            item_features,
        )
        if heads < 1 or embedding_dim % heads != 0:
            raise ValueError(
                f"heads must be a positive divisor of embedding_dim={embedding_dim}, got {heads}"
            )
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {attention_dropout}")
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        n = num_users + num_items
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {list(edge_index.shape)}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise ValueError(f"edge_index node ids must lie in [0, U + I) = [0, {n})")
        self.heads = heads
        self.register_buffer("edge_index", edge_index.long(), persistent=False)
        conv_cls = GATConv if version == "v1" else GATv2Conv
        self.convs = nn.ModuleList(
            conv_cls(
                embedding_dim,
                embedding_dim // heads,
                heads=heads,
                concat=True,
                dropout=attention_dropout,
                add_self_loops=True,
            )
            for _ in range(num_layers)
        )
        self._last_embeddings: tuple[Tensor, Tensor] | None = None
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            heads=heads,
            attention_dropout=attention_dropout,
            dropout=dropout,
            version=version,
            combine=combine,
            reg_weight=reg_weight,
            init_std=init_std,
            use_features=use_features,
        )
        self.reset_parameters()

    def apply_conv(self, conv: nn.Module, h: Tensor) -> Tensor:
        """Multi-head attention over the joint edges (self-loops added by the layer)."""
        out: Tensor = conv(h, self.edge_index)
        return out

    def activate(self, h: Tensor) -> Tensor:
        """ELU, as in the paper."""
        return F.elu(h)

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> GAT:
        """Build on the training pairs (both directions) and the graphs' features, if any."""
        merged = cls.resolve_hparams(hparams)
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            edge_index=joint_edge_index(graphs.ui_edge_index, graphs.num_users),
            user_features=graphs.user_features,
            item_features=graphs.item_features,
            **merged,
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """Width 64, 2 layers (the paper's depth), 2 heads of 32 (CPU cost), both dropouts 0.1."""
        return {**LayeredGNN.shared_defaults(), "heads": 2, "attention_dropout": 0.1, "version": "v1"}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """The shared space (depth 1..3), heads, attention dropout and GAT or GATv2.

        Heads 1..8 divide every width searched.
        """
        return {
            **LayeredGNN.shared_search_space(trial, max_layers=3),
            "heads": trial.suggest_categorical("heads", [1, 2, 4, 8]),
            "attention_dropout": trial.suggest_float("attention_dropout", 0.0, 0.5, step=0.1),
            "version": trial.suggest_categorical("version", ["v1", "v2"]),
        }

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """The shared final vectors; in training also kept (detached) for :meth:`candidate_scorer`."""
        users, items = super().embeddings()
        if self.training:
            self._last_embeddings = (users.detach(), items.detach())
        return users, items

    def candidate_scorer(self) -> ScoreFn:
        """Hard-negative scorer over the embeddings of the previous training step, when there is one.

        A full-graph GAT pass is the whole cost of a step; scoring candidates with the embeddings that the
        previous step's :meth:`loss` computed (one step stale, dropout included) saves a third pass per
        step. The first step of a run, and any call outside training, computes them afresh.
        """
        cached = self._last_embeddings if self.training else None
        if cached is None:
            return pair_score_fn(self)
        user_emb, item_emb = cached

        def score_fn(users: Tensor, items: Tensor) -> Tensor:
            return self.pair_score(gather_rows(user_emb, users), gather_rows(item_emb, items))

        return score_fn

    def train(self, mode: bool = True) -> GAT:
        """Switch mode; leaving training drops the previous step's embeddings."""
        if not mode:
            self._last_embeddings = None
        super().train(mode)
        return self

    def attention(self, layer: int = 0) -> tuple[Tensor, Tensor]:
        """The attention coefficients of one layer (eval mode), for inspection and tests.

        Returns:
            ``(edge_index [2, E'], alpha [E', K])`` with self-loops added by the layer.
        """
        h = self.input()
        for index, conv in enumerate(self.convs):
            if index == layer:
                out = conv(h, self.edge_index, return_attention_weights=True)
                edges, alpha = out[1]
                return torch.as_tensor(edges), alpha
            h = conv(h, self.edge_index)
            if index < self.num_layers - 1:
                h = F.elu(h)
        raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer}")
