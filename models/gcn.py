"""GCN: Kipf & Welling's graph convolution on the joint user-item graph, ranked by dot product.

Kipf and Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017,
https://arxiv.org/abs/1609.02907. Layer ``l`` (PyG's ``GCNConv``), with the renormalisation trick
``Â = D̃^-1/2 (A + I) D̃^-1/2`` over the bipartite graph of users ``0..U-1`` and items ``U..U+I-1``::

    H^(l) = act( Â H^(l-1) W^(l) + b^(l) )        (no activation after the last layer)

with dropout on each layer's input during training, as in the paper. The input ``H^(0)`` is a learned id
embedding, plus a linear projection of the user or item features when the data has them (the id embedding
alone otherwise), so the model needs only the user-item graph (``requires = {"user_item"}``). The
collaborative-filtering use follows the GCN baselines of GC-MC (van den Berg et al., 2017,
https://arxiv.org/abs/1706.02263) and PinSage: the final user and item vectors are compared by dot
product and trained with BPR.

**Final representation.** ``combine="concat"`` (default) concatenates ``H^(0), ..., H^(L)`` as NGCF does:
each layer has its own weight matrix, so layer outputs live in different bases, and averaging them (as
LightGCN can, having no transform) would add incomparable coordinates; concatenation lets the dot product
weigh each hop separately. ``combine="mean"`` averages them (all layers have width ``d``) and is searched.

**Propagation.** ``Â`` is computed once (cached) and stored as a sparse CSR matrix; ``GCNConv`` receives it
as ``adj_t`` with ``normalize=False``. For a fixed graph on CPU, PyG's ``torch.sparse`` path is several
times faster than its edge-index scatter path (HetRec Last.fm, one thread: 0.12 s against 0.50-0.62 s for
one layer's forward and backward; ``benchmarks/RESULTS.md``), and since ``Â`` is symmetric the backward
pass reuses it (:func:`models.sparse.symmetric_spmm`) instead of transposing it on every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from models.base import Trial, register_model
from models.graphs import csr_from_sorted
from models.layered import Combine, FeatureInput, LayeredGNN, combine_layers
from models.sparse import symmetric_spmm

if TYPE_CHECKING:
    from models.graphs import Graphs

__all__ = ["GCN", "FeatureInput", "SymmetricGCNConv", "combine_layers", "renormalized_adjacency"]

Activation = Literal["relu", "leaky_relu", "tanh"]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "tanh": torch.tanh,
}


class SymmetricGCNConv(GCNConv):
    """PyG's ``GCNConv`` whose sparse aggregation reuses the (symmetric) adjacency in the backward pass.

    Only :meth:`message_and_aggregate` changes: ``torch.sparse.mm``'s gradient transposes the CSR matrix on
    every step; for the symmetric ``Â`` the transpose is ``Â`` itself. Weights, bias and the rest of the
    layer are ``GCNConv``'s own.
    """

    def message_and_aggregate(self, adj_t: Any, x: Tensor) -> Tensor:
        """``Â @ x`` for a torch CSR ``Â`` (symmetric), PyG's default otherwise."""
        if isinstance(adj_t, Tensor) and adj_t.layout == torch.sparse_csr:
            return symmetric_spmm(adj_t, x)
        out: Tensor = super().message_and_aggregate(adj_t, x)
        return out


def renormalized_adjacency(ui_edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    """GCN's ``D̃^-1/2 (A + I) D̃^-1/2`` of the joint user+item graph, as sparse CSR.

    Args:
        ui_edge_index: Unique (user, item) training pairs, item ids not offset.
        num_users: U.
        num_items: I.

    Returns:
        Sparse CSR float32 ``[U + I, U + I]``, symmetric; a node without edges keeps its self-loop (weight 1).

    Shapes:
        ui_edge_index: long ``[2, E]``.
    """
    n = num_users + num_items
    users, items = ui_edge_index[0].long(), ui_edge_index[1].long() + num_users
    nodes = torch.arange(n, device=users.device)
    row = torch.cat([users, items, nodes])
    col = torch.cat([items, users, nodes])
    key = torch.unique(row * n + col)  # sorted row-major, duplicates merged
    row, col = key // n, key % n
    inv_sqrt = torch.bincount(row, minlength=n).to(torch.float32).rsqrt()  # every degree >= 1 (self-loop)
    return csr_from_sorted(row, col, inv_sqrt[row] * inv_sqrt[col], (n, n))


@register_model
class GCN(LayeredGNN):
    """GCN (``GCNConv`` layers) over the joint user-item graph, dot-product scores, BPR.

    Args:
        num_users: U.
        num_items: I.
        adj: GCN's renormalised adjacency ``D̃^-1/2 (A + I) D̃^-1/2``, sparse ``[U + I, U + I]``
            (:func:`renormalized_adjacency`).
        embedding_dim: d, the width of the input and of every layer.
        num_layers: L >= 1.
        dropout: Dropout on each layer's input during training.
        combine: ``"concat"`` or ``"mean"`` of ``H^(0)..H^(L)`` (see the module docstring).
        activation: Non-linearity between layers (none after the last).
        reg_weight: Coefficient of the batch L2 term on the layer-0 id embeddings.
        init_std: Standard deviation of the id embeddings' (and feature projections') normal init.
        use_features: Add the projected features to the id embeddings when the data has them (``False``
            ignores them: the id-only model, for ablations and the search).
        user_features: Encoded user features ``[U, F_u]``, or ``None``.
        item_features: Encoded item features ``[I, F_i]``, or ``None``.
    """

    name = "gcn"
    adj: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        adj: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 2,
        dropout: float = 0.1,
        combine: Combine = "concat",
        activation: Activation = "relu",
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
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        n = num_users + num_items
        if tuple(adj.shape) != (n, n) or adj.layout != torch.sparse_csr:
            raise ValueError(
                f"adj must be a sparse CSR [U + I, U + I] = [{n}, {n}] matrix (users first, items at offset "
                f"U), got {adj.layout} {list(adj.shape)}"
            )
        self.activation = activation
        self.register_buffer("adj", adj.float(), persistent=False)
        # Â is precomputed, so the layer must not normalise again; its bias is GCN's b^(l).
        self.convs = nn.ModuleList(
            SymmetricGCNConv(embedding_dim, embedding_dim, normalize=False, add_self_loops=False)
            for _ in range(num_layers)
        )
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            dropout=dropout,
            combine=combine,
            activation=activation,
            reg_weight=reg_weight,
            init_std=init_std,
            use_features=use_features,
        )
        self.reset_parameters()

    def apply_conv(self, conv: nn.Module, h: Tensor) -> Tensor:
        """``Â h W + b`` (``GCNConv`` on the cached sparse ``Â``)."""
        out: Tensor = conv(h, self.adj)
        return out

    def activate(self, h: Tensor) -> Tensor:
        """The configured activation."""
        return _ACTIVATIONS[self.activation](h)

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> GCN:
        """Build on the training graph (``Â`` computed here, once) and the graphs' features, if any."""
        merged = cls.resolve_hparams(hparams)
        adj = renormalized_adjacency(graphs.ui_edge_index, graphs.num_users, graphs.num_items)
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            adj=adj,
            user_features=graphs.user_features,
            item_features=graphs.item_features,
            **merged,
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """Width 64; the paper's 2 layers and ReLU; dropout 0.1 (its 0.5 was for node classification)."""
        return {**LayeredGNN.shared_defaults(), "activation": "relu"}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """The shared space (width, depth 1..4, dropout, combination, L2, init scale) and the activation."""
        return {
            **LayeredGNN.shared_search_space(trial, max_layers=4),
            "activation": trial.suggest_categorical("activation", ["relu", "leaky_relu", "tanh"]),
        }
