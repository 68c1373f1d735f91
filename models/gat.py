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
from torch_geometric.nn import GATConv, GATv2Conv, MessagePassing

from models.base import EmbeddingRecommender, ScoreFn, Trial, gather_rows, pair_score_fn, register_model
from models.gcn import FeatureInput, combine_layers

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
class GAT(EmbeddingRecommender):
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
    family = "graph"
    edge_index: Tensor
    convs: nn.ModuleList

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
        combine: Literal["concat", "mean"] = "concat",
        reg_weight: float = 1e-4,
        init_std: float = 0.1,
        use_features: bool = True,
        user_features: Tensor | None = None,
        item_features: Tensor | None = None,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if heads < 1 or embedding_dim % heads != 0:
            raise ValueError(
                f"heads must be a positive divisor of embedding_dim={embedding_dim}, got {heads}"
            )
        for label, p in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {p}")
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        if combine not in ("concat", "mean"):
            raise ValueError(f"combine must be 'concat' or 'mean', got {combine!r}")
        n = num_users + num_items
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {list(edge_index.shape)}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise ValueError(f"edge_index node ids must lie in [0, U + I) = [0, {n})")
        self.num_layers = num_layers
        self.heads = heads
        self.combine = combine
        self.init_std = init_std
        self.register_buffer("edge_index", edge_index.long(), persistent=False)
        if not use_features:
            user_features = item_features = None
        self.input = FeatureInput(num_users, num_items, embedding_dim, user_features, item_features)
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
        self.dropout = nn.Dropout(dropout)
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

    def reset_parameters(self) -> None:
        """Normal id embeddings (``init_std``); Glorot weights and attention vectors in every layer."""
        self.input.reset_parameters(self.init_std)
        for conv in self.convs:
            assert isinstance(conv, MessagePassing)
            conv.reset_parameters()

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
        return {
            "embedding_dim": 64,
            "num_layers": 2,
            "heads": 2,
            "attention_dropout": 0.1,
            "dropout": 0.1,
            "version": "v1",
            "combine": "concat",
            "reg_weight": 1e-4,
            "init_std": 0.1,
            "use_features": True,
        }

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Width, depth, heads, both dropouts, GAT or GATv2, layer combination, L2 and the initial scale.

        Heads 1..8 divide every width searched; the initial scale reaches 1e-3, as for LightGCN.
        """
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 1, 3),
            "heads": trial.suggest_categorical("heads", [1, 2, 4, 8]),
            "attention_dropout": trial.suggest_float("attention_dropout", 0.0, 0.5, step=0.1),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5, step=0.1),
            "version": trial.suggest_categorical("version", ["v1", "v2"]),
            "combine": trial.suggest_categorical("combine", ["concat", "mean"]),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-1, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
            "use_features": trial.suggest_categorical("use_features", [True, False]),
        }

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user and item vectors: concatenation (or mean) of the input and every layer's output.

        Shapes:
            ``[U, d (L + 1)]``, ``[I, d (L + 1)]`` with ``concat``; ``[U, d]``, ``[I, d]`` with ``mean``.
        """
        h = self.input()
        outputs = [h]
        for layer, conv in enumerate(self.convs):
            h = conv(self.dropout(h), self.edge_index)
            if layer < self.num_layers - 1:
                h = F.elu(h)
            outputs.append(h)
        out = combine_layers(outputs, self.combine)
        users, items = out[: self.num_users], out[self.num_users :]
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

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The id tables (the part of the input that the batch L2 term penalises).

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.input.user_embedding.weight, self.input.item_embedding.weight

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
