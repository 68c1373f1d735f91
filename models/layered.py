"""The skeleton GCN and GAT share: id (+ feature) input, stacked PyG layers, a layer combination, dot product.

Both models compute::

    H^(0) = E_id (+ X W_x)                                   (FeatureInput)
    H^(l) = act( conv_l( dropout(H^(l-1)) ) )                 (no activation after the last layer)
    final = concat or mean of H^(0), ..., H^(L)               (combine_layers)

and differ only in the layer (``GCNConv`` on a fixed normalised adjacency, ``GATConv`` on an edge index),
its activation, and their own hyperparameters. :class:`LayeredGNN` holds the rest once: checks, the
input, dropout, initialisation, the forward loop, the L2 term's tables and the shared part of the search
space. State-dict keys (``input.*``, ``convs.*``) are those the models had before this base existed, so
registered versions load unchanged.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from models.base import EmbeddingRecommender, Trial

Combine = Literal["concat", "mean"]


class FeatureInput(nn.Module):
    """Layer-0 node vectors: a learned id embedding plus a linear projection of features when given.

    Args:
        num_users: U.
        num_items: I.
        embedding_dim: d.
        user_features: Encoded user features ``[U, F_u]`` or ``None``.
        item_features: Encoded item features ``[I, F_i]`` or ``None``.
    """

    user_features: Tensor | None
    item_features: Tensor | None

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int,
        user_features: Tensor | None = None,
        item_features: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_users = num_users
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        for side, feats, rows in (("user", user_features, num_users), ("item", item_features, num_items)):
            # Features are data: they move with the model but stay out of checkpoints.
            self.register_buffer(f"{side}_features", feature_matrix(feats, rows, side), persistent=False)
        self.user_projection = (
            None
            if self.user_features is None
            else nn.Linear(self.user_features.shape[1], embedding_dim, bias=False)
        )
        self.item_projection = (
            None
            if self.item_features is None
            else nn.Linear(self.item_features.shape[1], embedding_dim, bias=False)
        )

    def reset_parameters(self, init_std: float) -> None:
        """Ids and feature projections from ``N(0, init_std^2)``."""
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        for projection in (self.user_projection, self.item_projection):
            if projection is not None:
                nn.init.normal_(projection.weight, std=init_std)

    def forward(self) -> Tensor:
        """Users then items.

        Shapes:
            -> ``[U + I, d]``.
        """
        users = self.user_embedding.weight
        items = self.item_embedding.weight
        if self.user_projection is not None and self.user_features is not None:
            users = users + self.user_projection(self.user_features)
        if self.item_projection is not None and self.item_features is not None:
            items = items + self.item_projection(self.item_features)
        return torch.cat([users, items])

    def nodes(self, nodes: Tensor) -> Tensor:
        """The rows of :meth:`forward` for some joint ids, computing only those (mini-batch models).

        Args:
            nodes: Joint ids (users ``< U``, items ``U + i``).

        Shapes:
            nodes ``[n]`` -> ``[n, d]``.
        """
        # Users and items are looked up (and projected) apart: each row is computed once, not on both sides
        # of a ``where`` (the item projection over every row was a third of a GraphSAGE batch on Last.fm).
        is_user = nodes < self.num_users
        at_users, at_items = is_user.nonzero().squeeze(1), (~is_user).nonzero().squeeze(1)
        users, items = nodes[at_users], nodes[at_items] - self.num_users
        user_x, item_x = self.user_embedding(users), self.item_embedding(items)
        if self.user_projection is not None and self.user_features is not None:
            user_x = user_x + self.user_projection(self.user_features[users])
        if self.item_projection is not None and self.item_features is not None:
            item_x = item_x + self.item_projection(self.item_features[items])
        x = user_x.new_empty(nodes.numel(), user_x.shape[1])
        return x.index_copy(0, at_users, user_x).index_copy(0, at_items, item_x)


def feature_matrix(features: Tensor | None, rows: int, side: str) -> Tensor | None:
    """Float features with one row per node, or ``None`` when there are none (or zero columns).

    Raises:
        ValueError: when the row count is not ``rows``.
    """
    if features is None or features.ndim != 2 or features.shape[1] == 0:
        return None
    if features.shape[0] != rows:
        raise ValueError(f"{side}_features has {features.shape[0]} rows, expected {rows} ({side}s)")
    return features.float()


def combine_layers(outputs: list[Tensor], combine: str) -> Tensor:
    """Concatenate (``[N, d (L + 1)]``) or average (``[N, d]``) the per-layer node vectors."""
    if combine == "concat":
        return torch.cat(outputs, dim=1)
    return torch.stack(outputs).mean(0)


class LayeredGNN(EmbeddingRecommender):
    """``L`` message-passing layers over the joint user-item graph on a :class:`FeatureInput`, dot product.

    Subclasses build ``self.convs`` (``L`` PyG layers, each ``d -> d``) after calling this constructor, then
    call :meth:`reset_parameters`, and say how one layer is applied (:meth:`apply_conv`) and what comes
    between layers (:meth:`activate`).

    Args:
        num_users: U.
        num_items: I.
        embedding_dim: d, the width of the input and of every layer.
        num_layers: L >= 1.
        dropout: Dropout on each layer's input during training.
        combine: ``"concat"`` or ``"mean"`` of ``H^(0)..H^(L)``.
        reg_weight: Coefficient of the batch L2 term on the layer-0 id embeddings.
        init_std: Standard deviation of the id embeddings' (and feature projections') normal init.
        use_features: Add the projected features to the id embeddings when the data has them (``False``
            ignores them: the id-only model, for ablations and the search).
        user_features: Encoded user features ``[U, F_u]``, or ``None``.
        item_features: Encoded item features ``[I, F_i]``, or ``None``.
    """

    family = "graph"
    convs: nn.ModuleList

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int,
        num_layers: int,
        dropout: float,
        combine: Combine,
        reg_weight: float,
        init_std: float,
        use_features: bool,
        user_features: Tensor | None,
        item_features: Tensor | None,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if combine not in ("concat", "mean"):
            raise ValueError(f"combine must be 'concat' or 'mean', got {combine!r}")
        self.num_layers = num_layers
        self.combine = combine
        self.init_std = init_std
        if not use_features:
            user_features = item_features = None
        self.input = FeatureInput(num_users, num_items, embedding_dim, user_features, item_features)
        self.dropout = nn.Dropout(dropout)

    @abstractmethod
    def apply_conv(self, conv: nn.Module, h: Tensor) -> Tensor:
        """One layer on the joint node matrix ``h`` ``[U + I, d]`` (its graph is the subclass's buffer)."""

    @abstractmethod
    def activate(self, h: Tensor) -> Tensor:
        """The non-linearity between layers (none after the last)."""

    def reset_parameters(self) -> None:
        """Normal id embeddings (``init_std``), each layer's own initialisation (Glorot weights, ...)."""
        self.input.reset_parameters(self.init_std)
        for conv in self.convs:
            assert isinstance(conv, MessagePassing)
            conv.reset_parameters()

    def layer_outputs(self) -> list[Tensor]:
        """``[H^(0), ..., H^(L)]``, each ``[U + I, d]``."""
        h = self.input()
        outputs = [h]
        for layer, conv in enumerate(self.convs):
            h = self.apply_conv(conv, self.dropout(h))
            if layer < self.num_layers - 1:
                h = self.activate(h)
            outputs.append(h)
        return outputs

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user and item vectors: concatenation (or mean) of the input and every layer's output.

        Shapes:
            ``[U, d (L + 1)]``, ``[I, d (L + 1)]`` with ``concat``; ``[U, d]``, ``[I, d]`` with ``mean``.
        """
        out = combine_layers(self.layer_outputs(), self.combine)
        return out[: self.num_users], out[self.num_users :]

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The id tables (the part of ``H^(0)`` that the batch L2 term penalises).

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.input.user_embedding.weight, self.input.item_embedding.weight

    @staticmethod
    def shared_defaults() -> dict[str, Any]:
        """Width 64, 2 layers, input dropout 0.1, concatenated layers, L2 1e-4, init 0.1, features on."""
        return {
            "embedding_dim": 64,
            "num_layers": 2,
            "dropout": 0.1,
            "combine": "concat",
            "reg_weight": 1e-4,
            "init_std": 0.1,
            "use_features": True,
        }

    @staticmethod
    def shared_search_space(trial: Trial, max_layers: int) -> dict[str, Any]:
        """Width, depth ``1..max_layers``, dropout, layer combination, L2 and the initial scale.

        The initial scale reaches 1e-3 as for LightGCN and MF-BPR, whose best Last.fm runs used 0.003
        with hard negatives (benchmarks/RESULTS.md).
        """
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 1, max_layers),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5, step=0.1),
            "combine": trial.suggest_categorical("combine", ["concat", "mean"]),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-1, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
            "use_features": trial.suggest_categorical("use_features", [True, False]),
        }
