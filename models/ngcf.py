"""NGCF: graph collaborative filtering with feature transforms and an element-wise interaction term.

Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019, https://arxiv.org/abs/1905.08108.
Layer ``l`` (matrix form, Eq. 7 of the paper, ``L = D^-1/2 A D^-1/2``)::

    E^(l) = LeakyReLU_0.2( (L + I) E^(l-1) W1 + (L E^(l-1) * E^(l-1)) W2 )

followed by message dropout; the final representation concatenates ``E^(0)`` with every layer's
L2-row-normalised output, as the authors' code does. Node dropout drops every message a sampled node sends
(its column of ``L``) and rescales the rest by ``1 / (1 - p)``.

``aggregation="authors"`` swaps Eq. 7 for the layer of the authors' TensorFlow code (``adj_type='norm'``):
with ``S = D^-1 (A + I) E^(l-1)`` (row-normalised, self-loops),
``E^(l) = LeakyReLU(S W1 + b1) + LeakyReLU((S * E^(l-1)) W2 + b2)``, one activation per term.

``normalize_propagation`` picks what layer ``l + 1`` receives: ``False`` (default) feeds it the raw output
of layer ``l``, as the authors' TensorFlow code does; ``True`` feeds it the L2-row-normalised output, as
RecBole's NGCF (the code behind RecBole-GNN's published tables) does. Both variants concatenate the same
normalised outputs; validation decides between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import EmbeddingRecommender, Trial, register_model
from models.sparse import as_csr, symmetric_spmm

if TYPE_CHECKING:
    from models.graphs import Graphs


@register_model
class NGCF(EmbeddingRecommender):
    """NGCF over a fixed symmetric-normalised joint adjacency (users ``0..U-1``, items at ``U..U+I-1``).

    Args:
        num_users: U.
        num_items: I.
        adj: ``D^-1/2 A D^-1/2`` of the joint user+item graph, sparse ``[U + I, U + I]``.
        embedding_dim: d, the width of the ego embeddings and of every layer.
        num_layers: L.
        message_dropout: Dropout on each layer's output during training.
        node_dropout: Probability that a node sends no message in a training forward pass.
        reg_weight: Coefficient of the batch L2 term on layer-0 embeddings.
        normalize_propagation: Feed each layer the L2-normalised output of the previous one (RecBole)
            instead of the raw one (the authors' code).
        aggregation: ``"paper"`` (Eq. 7, also RecBole's layer) or ``"authors"`` (the authors' code: row-
            normalised ``A + I``, a LeakyReLU on each of the two terms).
    """

    name = "ngcf"
    family = "graph"
    adj: Tensor
    inv_degree: Tensor
    w1: nn.ModuleList
    w2: nn.ModuleList

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 3,
        message_dropout: float = 0.1,
        node_dropout: float = 0.0,
        reg_weight: float = 1e-5,
        normalize_propagation: bool = False,
        aggregation: Literal["paper", "authors"] = "paper",
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        for label, p in (("message_dropout", message_dropout), ("node_dropout", node_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {p}")
        if aggregation not in ("paper", "authors"):
            raise ValueError(f"aggregation must be 'paper' or 'authors', got {aggregation!r}")
        self.num_layers = num_layers
        self.node_dropout = node_dropout
        self.normalize_propagation = normalize_propagation
        self.aggregation = aggregation
        csr = as_csr(adj, num_users + num_items)
        if aggregation == "authors":
            # D^-1 (A + I) E = (A E + E) / (deg + 1): keep A's pattern with unit weights (still symmetric).
            degree = (csr.crow_indices()[1:] - csr.crow_indices()[:-1]).to(csr.dtype)
            csr = torch.sparse_csr_tensor(
                csr.crow_indices(),
                csr.col_indices(),
                torch.ones_like(csr.values()),
                csr.shape,
                check_invariants=False,
            )
            self.register_buffer("inv_degree", (1.0 / (degree + 1.0)).unsqueeze(1), persistent=False)
        self.register_buffer("adj", csr, persistent=False)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self.w1 = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.w2 = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(num_layers))
        self.message_dropout = nn.Dropout(message_dropout)
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            message_dropout=message_dropout,
            node_dropout=node_dropout,
            reg_weight=reg_weight,
            normalize_propagation=normalize_propagation,
            aggregation=aggregation,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform embeddings and transforms, zero biases (the authors' initialiser)."""
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        for linear in (*self.w1, *self.w2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> NGCF:
        """Build on ``graphs.ui_adj``, the paper's defaults overridden by ``hparams``."""
        merged = cls.resolve_hparams(hparams)
        return cls(num_users=graphs.num_users, num_items=graphs.num_items, adj=graphs.ui_adj, **merged)

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The paper's setting: d = 64, 3 layers, message dropout 0.1, L2 1e-5, the Eq. 7 layer."""
        return {
            "embedding_dim": 64,
            "num_layers": 3,
            "message_dropout": 0.1,
            "node_dropout": 0.0,
            "reg_weight": 1e-5,
            "normalize_propagation": False,
            "aggregation": "paper",
        }

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """The paper's grid (dropouts in steps of 0.1, L2), depth 1..4, both propagations and layer forms.

        L2 reaches 1e-1: on HetRec Last.fm the best validation NDCG@10 came at 5e-3 to 1e-2 (2e-2 and 3e-2
        were worse), far above the paper's 1e-5, and the authors' layer beat Eq. 7 at L2 1e-2 (valid
        NDCG@10 0.176 vs 0.170; benchmarks/RESULTS.md).
        """
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 1, 4),
            "message_dropout": trial.suggest_float("message_dropout", 0.0, 0.5, step=0.1),
            "node_dropout": trial.suggest_float("node_dropout", 0.0, 0.5, step=0.1),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-1, log=True),
            "normalize_propagation": trial.suggest_categorical("normalize_propagation", [False, True]),
            "aggregation": trial.suggest_categorical("aggregation", ["paper", "authors"]),
        }

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Concatenation of the ego embeddings and the normalised output of every layer.

        Shapes:
            ``[U, d (L + 1)]``, ``[I, d (L + 1)]``.
        """
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        keep: Tensor | None = None
        if self.training and self.node_dropout > 0:
            # Dropping node j's messages is L @ diag(m) with m_j in {0, 1/(1-p)}: apply m to the features.
            keep = (torch.rand(ego.shape[0], 1, device=ego.device) >= self.node_dropout).to(ego.dtype)
            keep = keep / (1.0 - self.node_dropout)
        outputs = [ego]
        for w1, w2 in zip(self.w1, self.w2, strict=True):
            side = symmetric_spmm(self.adj, ego if keep is None else ego * keep)
            if self.aggregation == "authors":
                side = (side + ego) * self.inv_degree
                ego = F.leaky_relu(w1(side), 0.2) + F.leaky_relu(w2(side * ego), 0.2)
            else:
                ego = F.leaky_relu(w1(side + ego) + w2(side * ego), negative_slope=0.2)
            ego = self.message_dropout(ego)
            normalized = F.normalize(ego, p=2, dim=1)
            outputs.append(normalized)
            if self.normalize_propagation:
                ego = normalized
        out = torch.cat(outputs, dim=1)
        return out[: self.num_users], out[self.num_users :]

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The ego tables.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.item_embedding.weight
