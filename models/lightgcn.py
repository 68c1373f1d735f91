"""LightGCN: linear propagation on the user-item graph, layer outputs averaged.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR 2020,
https://arxiv.org/abs/2002.02126. No feature transform, no non-linearity, no self-loop:
``E^(l+1) = D^-1/2 A D^-1/2 E^(l)`` (PyG's ``LGConv``), final ``E = sum_l alpha_l E^(l)`` with
``alpha_l = 1 / (L + 1)``; L2 only on the batch's layer-0 embeddings. Initialisation ``N(0, 0.1^2)`` as in the
authors' PyTorch code (https://github.com/gusye1234/LightGCN-PyTorch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from models.base import SGD_PRIOR_TRAIN, EmbeddingRecommender, SearchPrior, Trial, register_model
from models.sparse import as_csr, symmetric_spmm

if TYPE_CHECKING:
    from models.graphs import Graphs


@register_model
class LightGCN(EmbeddingRecommender):
    """LightGCN over a fixed symmetric-normalised joint adjacency (users ``0..U-1``, items at ``U..U+I-1``).

    Args:
        num_users: U.
        num_items: I.
        adj: ``D^-1/2 A D^-1/2`` of the joint user+item graph, sparse ``[U + I, U + I]`` (CSR is used).
        embedding_dim: d.
        num_layers: L, the number of propagation steps.
        reg_weight: Coefficient of the batch L2 term on layer-0 embeddings.
        alpha: Layer weights ``alpha_0..alpha_L``; ``None`` means ``1 / (L + 1)`` each.
        init_std: Standard deviation of the normal initialisation.
    """

    name = "lightgcn"
    family = "graph"
    adj: Tensor
    alpha: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 3,
        reg_weight: float = 1e-4,
        alpha: Sequence[float] | None = None,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if alpha is not None and len(alpha) != num_layers + 1:
            raise ValueError(f"alpha needs num_layers + 1 = {num_layers + 1} weights, got {len(alpha)}")
        self.num_layers = num_layers
        self.init_std = init_std
        weights = [1.0 / (num_layers + 1)] * (num_layers + 1) if alpha is None else [float(a) for a in alpha]
        self.register_buffer("alpha", torch.tensor(weights), persistent=False)
        # The graph is data, not state: it moves with .to(device) but stays out of checkpoints.
        self.register_buffer("adj", as_csr(adj, num_users + num_items), persistent=False)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            reg_weight=reg_weight,
            alpha=None if alpha is None else weights,
            init_std=init_std,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw both tables from ``N(0, init_std^2)`` (the reference code's choice for a linear model)."""
        nn.init.normal_(self.user_embedding.weight, std=self.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.init_std)

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> LightGCN:
        """Build on ``graphs.ui_adj``, the paper's defaults overridden by ``hparams``."""
        merged = cls.resolve_hparams(hparams)
        return cls(num_users=graphs.num_users, num_items=graphs.num_items, adj=graphs.ui_adj, **merged)

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The paper's setting: d = 64, L = 3, L2 1e-4, uniform layer weights."""
        return {"embedding_dim": 64, "num_layers": 3, "reg_weight": 1e-4, "alpha": None, "init_std": 0.1}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Dimension, depth, L2 weight and initial scale (the paper's grid, widened).

        The initial scale is searched as for MF-BPR: the authors' code draws ``N(0, 0.1^2)``, RecBole uses
        Xavier (a standard deviation near 0.01 for tables of thousands of rows); with hard negatives on
        Last.fm, scales of 0.01 and below did best (benchmarks/RESULTS.md), so the range reaches 1e-3.
        """
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 1, 4),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
        }

    @classmethod
    def search_prior(cls) -> SearchPrior:
        """The recipe found by hand on HetRec Last.fm (benchmarks/RESULTS.md, fourth round).

        Hard negatives (pool 32), ``init_std`` 0.003, L2 1e-5, user-first sampling, lr 1e-3 at batch 2048:
        test Recall@10 / NDCG@10 0.2172 / 0.2127, mean of three seeds.
        """
        return SearchPrior(
            hparams={"init_std": 0.003, "reg_weight": 1e-5},
            train={**SGD_PRIOR_TRAIN, "sampling": "users"},
        )

    def propagate(self, x: Tensor) -> Tensor:
        """Weighted sum of ``x, A x, ..., A^L x``.

        Shapes:
            x ``[U + I, d]`` -> ``[U + I, d]``.
        """
        out = x * self.alpha[0]
        for layer in range(1, self.num_layers + 1):
            x = symmetric_spmm(self.adj, x)
            out = out + x * self.alpha[layer]
        return out

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Propagated user and item embeddings.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        out = self.propagate(x)
        return out[: self.num_users], out[self.num_users :]

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The ego tables.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.item_embedding.weight
