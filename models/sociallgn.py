"""SocialLGN: LightGCN propagation on the user-item graph and on the social graph, fused at every layer.

Liao et al., "SocialLGN: Light graph convolution network for social recommendation", Information Sciences
589 (2022), https://doi.org/10.1016/j.ins.2022.01.001 (authors' code: https://github.com/leo0481/SocialLGN).

Layer ``k + 1`` propagates, with no feature transform and no non-linearity, as LightGCN does
(He et al., SIGIR 2020, :mod:`models.lightgcn`):

* items and the user-item part of users on the joint graph: ``[e_ui; e_i]^(k+1) = A [e_u; e_i]^(k)`` with
  ``A = D^-1/2 R D^-1/2`` (:attr:`Graphs.ui_adj`);
* users on the social graph: ``e_soc^(k+1) = S e_u^(k)`` with ``S = D^-1/2 T D^-1/2`` the symmetric-normalised
  trust graph (:attr:`Graphs.social_adj`);
* the two user representations are fused into ``e_u^(k+1)`` by ``fusion``:

  - ``"graph-comb"``, the paper's graph-fusion operation as in the authors' code (``Graph_Comb``):
    ``normalize(W3 [tanh(W1 e_ui) || tanh(W2 e_soc)] + b3)``, each row scaled to unit L2 norm;
  - ``"mix"``: ``(1 - beta) e_ui + beta e_soc`` for users with at least one friend (``beta`` =
    ``social_weight``), ``e_ui`` for users without one. It adds no weights, keeps the propagation linear,
    and is LightGCN's propagation exactly at ``beta = 0`` or on an empty social graph.

The readout averages the layers ``0..L`` (LightGCN's ``1 / (L + 1)``), the score is the dot product, and the
loss is BPR with L2 on the batch's layer-0 embeddings (:class:`EmbeddingRecommender`). A new user (no
trained row, so no place in the social graph) is folded in from its history like every embedding model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import EmbeddingRecommender, Trial, register_model
from models.sparse import as_csr, symmetric_spmm

if TYPE_CHECKING:
    from models.graphs import Graphs

Fusion = Literal["graph-comb", "mix"]
FUSIONS: tuple[str, ...] = ("graph-comb", "mix")


@register_model
class SocialLGN(EmbeddingRecommender):
    """SocialLGN over the joint user-item adjacency and the social adjacency (see the module docstring).

    Args:
        num_users: U.
        num_items: I.
        adj: ``D^-1/2 A D^-1/2`` of the joint user+item graph, sparse ``[U + I, U + I]`` (users first).
        social_adj: ``D^-1/2 T D^-1/2`` of the symmetric user-user graph, sparse ``[U, U]``.
        embedding_dim: d.
        num_layers: L, the number of propagation steps.
        reg_weight: Coefficient of the batch L2 term on layer-0 embeddings.
        init_std: Standard deviation of the normal initialisation of the embedding tables.
        fusion: ``"graph-comb"`` (the paper's learned fusion) or ``"mix"`` (a fixed convex mix).
        social_weight: ``beta`` of the ``"mix"`` fusion, in ``[0, 1]`` (unused by ``"graph-comb"``).
    """

    name = "sociallgn"
    family = "graph"
    requires: ClassVar[frozenset[str]] = frozenset({"user_item", "social"})
    adj: Tensor
    social_adj: Tensor
    has_friends: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        social_adj: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 3,
        reg_weight: float = 1e-4,
        init_std: float = 0.1,
        fusion: Fusion = "graph-comb",
        social_weight: float = 0.5,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if not 0.0 <= social_weight <= 1.0:
            raise ValueError(f"social_weight must lie in [0, 1], got {social_weight}")
        self.num_layers = num_layers
        self.init_std = init_std
        self.fusion = fusion
        self.social_weight = social_weight
        # The graphs are data, not state: they move with .to(device) but stay out of checkpoints.
        self.register_buffer("adj", as_csr(adj, num_users + num_items), persistent=False)
        social = _as_user_csr(social_adj, num_users)
        self.register_buffer("social_adj", social, persistent=False)
        degree = social.crow_indices()[1:] - social.crow_indices()[:-1]
        self.register_buffer("has_friends", (degree > 0).unsqueeze(1), persistent=False)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        # The paper's graph-fusion weights (W1, W2 without bias, W3 with), one set shared by every layer as
        # in the authors' code; built for both fusions so that a checkpoint's keys do not depend on it.
        self.fuse_ui = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.fuse_social = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.fuse_out = nn.Linear(2 * embedding_dim, embedding_dim)
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            reg_weight=reg_weight,
            init_std=init_std,
            fusion=fusion,
            social_weight=social_weight,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal embedding tables (as LightGCN), Xavier fusion weights, zero fusion bias."""
        nn.init.normal_(self.user_embedding.weight, std=self.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.init_std)
        for layer in (self.fuse_ui, self.fuse_social, self.fuse_out):
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.fuse_out.bias)

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> SocialLGN:
        """Build on ``graphs.ui_adj`` and ``graphs.social_adj``, the paper's defaults overridden."""
        if graphs.social_adj is None:
            raise ValueError(
                f"{cls.name} needs a social graph and the dataset has none (e.g. Last.fm user_friends.dat, "
                "FilmTrust trust.txt, a RecBole .net file)"
            )
        merged = cls.resolve_hparams(hparams)
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            adj=graphs.ui_adj,
            social_adj=graphs.social_adj,
            **merged,
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The paper's setting: d = 64, L = 3, L2 1e-4, graph-comb fusion (``social_weight`` for ``mix``)."""
        return {
            "embedding_dim": 64,
            "num_layers": 3,
            "reg_weight": 1e-4,
            "init_std": 0.1,
            "fusion": "graph-comb",
            "social_weight": 0.5,
        }

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """LightGCN's space (initial scale down to 1e-3) plus the fusion and the social share."""
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 1, 4),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
            "fusion": trial.suggest_categorical("fusion", list(FUSIONS)),
            "social_weight": trial.suggest_float("social_weight", 0.0, 0.9),
        }

    def fuse(self, user_ui: Tensor, user_social: Tensor) -> Tensor:
        """The next layer's user embeddings from their user-item and social propagations.

        Shapes:
            user_ui ``[U, d]``, user_social ``[U, d]`` -> ``[U, d]``.
        """
        if self.fusion == "mix":
            beta = self.social_weight * self.has_friends.to(user_ui.dtype)  # [U, 1]: friendless keep e_ui
            return (1.0 - beta) * user_ui + beta * user_social
        hidden = torch.cat([torch.tanh(self.fuse_ui(user_ui)), torch.tanh(self.fuse_social(user_social))], 1)
        return F.normalize(self.fuse_out(hidden), dim=1)

    def social_propagate(self, users: Tensor) -> Tensor:
        """One step on the social graph, ``S e_u`` (a friendless user gets the zero vector).

        Shapes:
            users ``[U, d]`` -> ``[U, d]``.
        """
        return symmetric_spmm(self.social_adj, users)

    def layers(self) -> list[Tensor]:
        """The joint embeddings ``[e_u; e_i]`` of layers ``0..L``.

        Shapes:
            ``L + 1`` tensors ``[U + I, d]``.
        """
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        out = [x]
        for _ in range(self.num_layers):
            joint = symmetric_spmm(self.adj, x)
            user_ui, items = joint[: self.num_users], joint[self.num_users :]
            users = self.fuse(user_ui, self.social_propagate(x[: self.num_users]))
            x = torch.cat([users, items])
            out.append(x)
        return out

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Layer-mean user and item embeddings.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        out = torch.stack(self.layers()).mean(0)
        return out[: self.num_users], out[self.num_users :]

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The ego tables.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.item_embedding.weight


def _as_user_csr(adj: Tensor, num_users: int) -> Tensor:
    """Check that the social adjacency is ``[U, U]`` and return it as float CSR.

    Raises:
        ValueError: naming the expected and the given shape.
    """
    if tuple(adj.shape) != (num_users, num_users):
        raise ValueError(
            f"the social adjacency must be [U, U] = [{num_users}, {num_users}], got {list(adj.shape)}"
        )
    if adj.layout == torch.sparse_csr:
        return adj if adj.dtype.is_floating_point else adj.float()
    if adj.layout == torch.strided:
        adj = adj.to_sparse()
    return adj.coalesce().float().to_sparse_csr()
