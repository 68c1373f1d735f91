"""Hybrid content + graph recommender that scores items unseen in training from their features.

An item's vector is the sum of a collaborative part, LightGCN propagation of its id embedding over the
training graph (He et al., SIGIR 2020, https://arxiv.org/abs/2002.02126), and a content part, a small
encoder of its features (genres, year, tags...); a user's vector likewise adds an encoder of its features
(age, gender, occupation) when the data has them. An item without a training interaction has no trained id
embedding, so its collaborative part is zero and it is scored by its content part alone.

For that to rank well the content part must work on its own, so the loss adds, beside the ranking loss of
the full vectors, the ranking loss of the same batch with the items reduced to their content part
(``content_weight``): the idea of DropoutNet (Volkovs et al., "DropoutNet: Addressing Cold Start in
Recommender Systems", NeurIPS 2017, https://papers.nips.cc/paper/7081), which drops the preference input
during training so that the content input learns to stand in for it, taken to its deterministic form.

:class:`ContentRecommender` (``content``) is the feature-only baseline: the same encoders, items scored from
their features only (users still have an id embedding plus their own features), no graph.

Serving: the encoders run over the item feature table of the whole catalogue
(:attr:`models.graphs.Graphs.item_features`, built from the dataset's item table, training or not), so the
export (:class:`models.serving.EmbeddingServable`) carries a final vector for every catalogue item, the
items cold at training time included. An item added to the catalogue after export needs a new export (its
features are encoded at export time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from models.base import EmbeddingRecommender, Trial, gather_rows, register_model
from models.losses import LossName, batch_l2, ranking_loss
from models.sparse import as_csr, symmetric_spmm

if TYPE_CHECKING:
    from models.graphs import Graphs


def content_encoder(in_features: int, embedding_dim: int, hidden_dim: int) -> nn.Module:
    """A linear map of the features, or one hidden ReLU layer of ``hidden_dim`` when it is positive."""
    if hidden_dim <= 0:
        return nn.Linear(in_features, embedding_dim)
    return nn.Sequential(nn.Linear(in_features, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embedding_dim))


@register_model
class HybridRecommender(EmbeddingRecommender):
    """LightGCN id embeddings plus content encoders of item (and user) features (module docstring).

    Args:
        num_users: U.
        num_items: I.
        adj: ``D^-1/2 A D^-1/2`` of the training graph, sparse ``[U + I, U + I]``.
        item_features: Encoded features of every catalogue item ``[I, F_i]``.
        user_features: Encoded user features ``[U, F_u]``, or ``None``.
        embedding_dim: d.
        num_layers: LightGCN propagation steps of the id embeddings (0: plain MF ids).
        hidden_dim: Hidden width of the encoders; 0 makes them linear.
        content_weight: Weight of the content-only ranking loss.
        reg_weight: L2 on the batch's id embeddings and content vectors.
        init_std: Standard deviation of the id embeddings' normal initialisation.
    """

    name = "hybrid"
    family = "hybrid"
    requires = frozenset({"user_item", "item_features"})
    inductive_items = True
    use_ids: ClassVar[bool] = True
    adj: Tensor
    item_features: Tensor
    user_features: Tensor | None
    warm: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        item_features: Tensor,
        user_features: Tensor | None = None,
        embedding_dim: int = 64,
        num_layers: int = 2,
        hidden_dim: int = 0,
        content_weight: float = 1.0,
        reg_weight: float = 1e-4,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if item_features.shape[0] != num_items:
            raise ValueError(f"item_features has {item_features.shape[0]} rows for {num_items} items")
        if user_features is not None and user_features.shape[0] != num_users:
            raise ValueError(f"user_features has {user_features.shape[0]} rows for {num_users} users")
        if num_layers < 0 or content_weight < 0:
            raise ValueError(
                f"num_layers and content_weight must be >= 0, got {num_layers}, {content_weight}"
            )
        self.num_layers = num_layers
        self.content_weight = content_weight
        self.init_std = init_std
        adj = as_csr(adj, num_users + num_items)
        self.register_buffer("adj", adj, persistent=False)
        self.register_buffer("item_features", item_features.to(torch.float32), persistent=False)
        self.register_buffer(
            "user_features",
            None if user_features is None else user_features.to(torch.float32),
            persistent=False,
        )
        # Items with a training edge: only they have a trained id embedding.
        degree = adj.crow_indices()[1:] - adj.crow_indices()[:-1]
        self.register_buffer(
            "warm", (degree[num_users:] > 0).to(torch.float32).unsqueeze(1), persistent=False
        )
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self.item_encoder = content_encoder(item_features.shape[1], embedding_dim, hidden_dim)
        self.user_encoder = (
            None
            if user_features is None
            else content_encoder(user_features.shape[1], embedding_dim, hidden_dim)
        )
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            content_weight=content_weight,
            reg_weight=reg_weight,
            init_std=init_std,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Ids from ``N(0, init_std^2)`` (LightGCN's code); encoders with PyTorch's default init."""
        nn.init.normal_(self.user_embedding.weight, std=self.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> HybridRecommender:
        """Build on the training adjacency and the feature tables of ``graphs``.

        Raises:
            ValueError: when the graphs have no item features.
        """
        merged = cls.resolve_hparams(hparams)
        if graphs.item_features is None or graphs.item_features.shape[1] == 0:
            raise ValueError(f"{cls.name} needs item features; these graphs have none")
        user_features = graphs.user_features
        if user_features is not None and user_features.shape[1] == 0:
            user_features = None
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            adj=graphs.ui_adj,
            item_features=graphs.item_features,
            user_features=user_features,
            **merged,
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """Width 64 and L2 1e-4 as LightGCN; 2 layers; linear encoders; content loss weighted as the main one.

        Linear encoders suit the few dozen coarse features of MovieLens (genres, year, demographics); a
        hidden layer is in the search space for richer tables.
        """
        return {
            "embedding_dim": 64,
            "num_layers": 2,
            "hidden_dim": 0,
            "content_weight": 1.0,
            "reg_weight": 1e-4,
            "init_std": 0.1,
        }

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Dimension, depth, encoder width, content-loss weight, L2 and initial scale."""
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 0, 3),
            "hidden_dim": trial.suggest_categorical("hidden_dim", [0, 64, 128]),
            "content_weight": trial.suggest_float("content_weight", 0.1, 4.0, log=True),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
        }

    # -- the two parts ----------------------------------------------------------------------------------

    def content(self) -> tuple[Tensor, Tensor]:
        """Content vectors of every user (zeros without user features) and every catalogue item.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        item = self.item_encoder(self.item_features)
        if self.user_encoder is None or self.user_features is None:
            user = item.new_zeros(self.num_users, self.embedding_dim)
        else:
            user = self.user_encoder(self.user_features)
        return user, item

    def collaborative(self) -> tuple[Tensor, Tensor]:
        """LightGCN-propagated id embeddings, zero for items without a training edge.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        out = x / (self.num_layers + 1)
        for _ in range(self.num_layers):
            x = symmetric_spmm(self.adj, x)
            out = out + x / (self.num_layers + 1)
        return out[: self.num_users], out[self.num_users :] * self.warm

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final vectors: collaborative + content (items unseen in training: content only).

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        user_c, item_c = self.content()
        if not self.use_ids:
            return self.user_embedding.weight + user_c, item_c
        user_g, item_g = self.collaborative()
        return user_g + user_c, item_g + item_c

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The id tables.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.item_embedding.weight

    def loss(
        self,
        users: Tensor,
        pos: Tensor,
        neg: Tensor,
        *,
        loss: LossName = "bpr",
        temperature: float = 0.2,
    ) -> Tensor:
        """Ranking loss of the full vectors + ``content_weight`` x that of content-only items + L2.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]`` -> scalar.
        """
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)
        user_c, item_c = self.content()
        if self.use_ids:
            user_g, item_g = self.collaborative()
            user_vec = gather_rows(user_g + user_c, users)
            content_items = gather_rows(item_c, items)
            scores = self.pair_score(user_vec, gather_rows(item_g, items) + content_items)
            out = ranking_loss(scores[:, 0], scores[:, 1:], loss=loss, temperature=temperature)
        else:
            user_vec = gather_rows(self.user_embedding.weight + user_c, users)
            content_items = gather_rows(item_c, items)
            out = torch.zeros((), device=user_vec.device)
        if self.content_weight > 0 or not self.use_ids:
            cold = self.pair_score(user_vec, content_items)
            weight = self.content_weight if self.use_ids else 1.0
            out = out + weight * ranking_loss(cold[:, 0], cold[:, 1:], loss=loss, temperature=temperature)
        if self.reg_weight > 0:
            user0, item0 = self.layer0_embeddings()
            out = out + self.reg_weight * batch_l2(
                gather_rows(user0, users), gather_rows(item0, items), content_items, batch_size=users.numel()
            )
        return out


@register_model
class ContentRecommender(HybridRecommender):
    """Feature-only baseline: items are their content vectors, users an id embedding plus their features.

    The hybrid model without its collaborative item part (and without a graph): it shows what item
    features alone give on items unseen in training.
    """

    name = "content"
    family = "content"
    use_ids = False

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The hybrid's defaults; ``num_layers`` and ``content_weight`` are unused."""
        return {**HybridRecommender.default_hparams(), "num_layers": 0}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Dimension, encoder width, L2 and initial scale."""
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "hidden_dim": trial.suggest_categorical("hidden_dim", [0, 64, 128]),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
        }
