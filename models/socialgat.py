"""SocialGAT: SocialLGN with an attention-weighted social step, so that a user weighs its friends.

SocialLGN (:mod:`models.sociallgn`, Liao et al., Information Sciences 2022) averages a user's friends with the
fixed weights of the normalised trust graph. Here the social step is a graph attention layer
(Velickovic et al., "Graph Attention Networks", ICLR 2018, https://arxiv.org/abs/1710.10903; PyG's
``GATConv``, one head, no self-loops) over the trust edges, in the spirit of the attentive social
aggregation of GraphRec (Fan et al., WWW 2019) and DiffNet++ (Wu et al., TKDE 2020):
``e_soc_u = sum_f alpha_uf W e_f`` with ``alpha_uf = softmax_f(LeakyReLU(a^T [W e_u || W e_f]))`` over the
friends ``f`` of ``u``. One attention layer is shared by every propagation step; the fusion with the
user-item propagation and the readout are SocialLGN's (``fusion="mix"`` by default:
``(1 - beta) e_ui + beta e_soc`` for users with friends).

:meth:`SocialGAT.friend_attention` returns which friends mattered for a user: the attention of each of its
friends, averaged over the propagation steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch_geometric.nn import GATConv

from models.base import Trial, register_model
from models.sociallgn import Fusion, SocialLGN

if TYPE_CHECKING:
    from models.graphs import Graphs


@register_model
class SocialGAT(SocialLGN):
    """SocialLGN whose social step is a one-head GAT layer on the trust edges (see the module docstring).

    Args:
        num_users: U.
        num_items: I.
        adj: ``D^-1/2 A D^-1/2`` of the joint user+item graph, sparse ``[U + I, U + I]`` (users first).
        social_adj: The normalised social adjacency ``[U, U]`` (only its pattern is used: who has friends).
        social_edge_index: Symmetrised user-user edges ``[2, 2S]``; messages flow ``[0] -> [1]``.
        embedding_dim: d.
        num_layers: L.
        reg_weight: Batch L2 on layer-0 embeddings.
        init_std: Standard deviation of the normal initialisation of the embedding tables.
        fusion: ``"mix"`` or ``"graph-comb"`` (:class:`SocialLGN`).
        social_weight: ``beta`` of the ``"mix"`` fusion.
        attention_dropout: Dropout on the attention coefficients during training.
    """

    name = "socialgat"
    social_edge_index: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        social_adj: Tensor,
        social_edge_index: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 3,
        reg_weight: float = 1e-4,
        init_std: float = 0.1,
        fusion: Fusion = "mix",
        social_weight: float = 0.5,
        attention_dropout: float = 0.0,
    ) -> None:
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must lie in [0, 1), got {attention_dropout}")
        edges = social_edge_index.long()
        if edges.dim() != 2 or edges.shape[0] != 2:
            raise ValueError(f"social_edge_index must be [2, E], got {list(edges.shape)}")
        if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= num_users):
            raise ValueError(f"social_edge_index holds user ids outside [0, {num_users})")
        super().__init__(
            num_users,
            num_items,
            adj,
            social_adj,
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            reg_weight=reg_weight,
            init_std=init_std,
            fusion=fusion,
            social_weight=social_weight,
        )
        # GATConv initialises itself (Glorot) on construction; reset_parameters() re-draws it.
        self.gat = GATConv(
            embedding_dim, embedding_dim, heads=1, add_self_loops=False, dropout=attention_dropout, bias=False
        )
        self.register_buffer("social_edge_index", edges, persistent=False)
        self.attention_dropout = attention_dropout
        self._record_hparams(**self.hparams, attention_dropout=attention_dropout)

    def reset_parameters(self) -> None:
        """SocialLGN's initialisation and a fresh (Glorot) attention layer."""
        super().reset_parameters()
        gat = getattr(self, "gat", None)  # absent while SocialLGN's constructor runs
        if gat is not None:
            gat.reset_parameters()

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> SocialGAT:
        """Build on the joint adjacency and the social graph, the defaults overridden by ``hparams``."""
        if graphs.social_adj is None or graphs.social_edge_index is None:
            raise ValueError(
                f"{cls.name} needs a social graph and the dataset has none (e.g. Last.fm user_friends.dat, "
                "FilmTrust trust.txt, a RecBole .net file)"
            )
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            adj=graphs.ui_adj,
            social_adj=graphs.social_adj,
            social_edge_index=graphs.social_edge_index,
            **cls.resolve_hparams(hparams),
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """SocialLGN's (d = 64, L = 3, L2 1e-4) with the ``mix`` fusion at beta 0.5, no attention dropout."""
        return {**super().default_hparams(), "fusion": "mix", "attention_dropout": 0.0}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """SocialLGN's space plus the attention dropout."""
        return {
            **SocialLGN.search_space(trial),
            "attention_dropout": trial.suggest_float("attention_dropout", 0.0, 0.3),
        }

    def social_propagate(self, users: Tensor) -> Tensor:
        """One attention step on the trust edges (a friendless user gets the zero vector).

        Shapes:
            users ``[U, d]`` -> ``[U, d]``.
        """
        out: Tensor = self.gat(users, self.social_edge_index)
        return out

    def friend_attention(self, user: int) -> tuple[Tensor, Tensor]:
        """Which friends mattered for ``user``: its friends and their attention, averaged over the layers.

        Computed in evaluation mode (no dropout) on the current embeddings; the weights of one layer sum
        to 1 over the user's friends, so their average does too.

        Args:
            user: Internal user id.

        Returns:
            ``(friends, weights)``, sorted by decreasing weight; both empty for a friendless user.

        Shapes:
            ``[F]`` long, ``[F]`` float.
        """
        if not 0 <= user < self.num_users:
            raise ValueError(f"user {user} is outside [0, {self.num_users})")
        mine = self.social_edge_index[1] == user
        friends = self.social_edge_index[0, mine]
        if friends.numel() == 0:
            return friends, torch.zeros(0)
        was_training = self.training
        self.eval()
        total = torch.zeros(friends.numel())
        try:
            with torch.no_grad():
                x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
                for _ in range(self.num_layers):
                    users = x[: self.num_users]
                    _, (edges, alpha) = self.gat(users, self.social_edge_index, return_attention_weights=True)
                    total += alpha.view(-1)[edges[1] == user].cpu()
                    joint = torch.sparse.mm(self.adj, x)
                    x = torch.cat(
                        [
                            self.fuse(joint[: self.num_users], self.social_propagate(users)),
                            joint[self.num_users :],
                        ]
                    )
        finally:
            self.train(was_training)
        weights = total / max(self.num_layers, 1)
        order = torch.argsort(weights, descending=True)
        return friends[order].cpu(), weights[order]
