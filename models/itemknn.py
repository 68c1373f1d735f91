"""ItemKNN: cosine similarity between the item columns of the user-item matrix, top-N neighbours per item.

Sarwar et al., "Item-Based Collaborative Filtering Recommendation Algorithms", WWW 2001,
https://doi.org/10.1145/371920.372071, and Deshpande & Karypis, "Item-Based Top-N Recommendation
Algorithms", TOIS 2004, https://doi.org/10.1145/963770.963776 (keep the ``N`` most similar items of each
item; a user's score for an item is the sum of the similarities from the items in their history). The
shrunk cosine ``dot(a, b) / (|a| |b| + shrink)`` and the defaults follow RecBole's ``ItemKNN``
(https://recbole.io/docs/user_guide/model/general/itemknn.html: ``k = 100``, ``shrink = 0``); the search space
follows Dacrema et al., "Are We Really Making Much Progress? A Worrying Analysis of Recent Neural
Recommendation Approaches", RecSys 2019, https://arxiv.org/abs/1907.06902 (``topK`` 5-1000, ``shrink``
0-1000, ``normalize`` on or off), where a tuned ItemKNN beat most neural models it was compared with.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from models.base import Trial, register_model
from models.graphs import transpose_csr
from models.itemitem import ItemItemRecommender, csr_tensor, top_n_block, top_n_csr


@register_model
class ItemKNN(ItemItemRecommender):
    """Item-based nearest neighbours with a shrunk cosine similarity, closed form.

    ``fit`` computes, for every item ``j``, its ``topk`` most similar other items ``i`` under
    ``sim(j, i) = x_j . x_i / (|x_j| |x_i| + shrink)`` (``x_j`` the binary column of item ``j``; with
    ``normalize=False`` the raw co-occurrence count ``x_j . x_i``, and ``shrink`` does not apply) and keeps
    them as row ``j`` of a sparse ``W``. The item-item matrix is never materialised whole: items are processed
    in blocks of :attr:`block_size`, each block's ``[b, I]`` similarities computed as a sparse-dense product,
    reduced to its top ``topk`` per row, and kept sparse (peak memory ``O(b (U + I))``, so it runs at
    Gowalla's 41k items). Self-similarity is excluded. Shrinkage lowers the similarity of pairs with few
    co-occurrences (their ``|x_j| |x_i|`` is small against ``shrink``).

    Args:
        num_users: U.
        num_items: I.
        topk: Neighbours kept per item (``N``).
        shrink: Added to the cosine denominator.
        normalize: Cosine (``True``) or raw co-occurrence counts (``False``).

    Attributes:
        block_size: Items per block in :meth:`fit` (memory knob, not a hyperparameter).
    """

    name = "itemknn"
    fitted_buffers: ClassVar[tuple[str, ...]] = (
        "user_indptr",
        "user_items",
        "sim_crow",
        "sim_col",
        "sim_values",
    )
    block_size: int = 1024
    sim_crow: Tensor
    sim_col: Tensor
    sim_values: Tensor

    def __init__(
        self, num_users: int, num_items: int, topk: int = 100, shrink: float = 0.0, normalize: bool = True
    ) -> None:
        super().__init__(num_users, num_items)
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        if shrink < 0:
            raise ValueError(f"shrink must be non-negative, got {shrink}")
        self.topk = int(topk)
        self.shrink = float(shrink)
        self.normalize = bool(normalize)
        self.register_buffer("sim_crow", torch.zeros(num_items + 1, dtype=torch.long))
        self.register_buffer("sim_col", torch.zeros(0, dtype=torch.long))
        self.register_buffer("sim_values", torch.zeros(0))
        self._record_hparams(topk=self.topk, shrink=self.shrink, normalize=self.normalize)

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """RecBole's ItemKNN defaults: 100 neighbours, no shrinkage, cosine."""
        return {"topk": 100, "shrink": 0.0, "normalize": True}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Dacrema et al.'s ItemKNN space: neighbours 5-1000 (log), shrink 0-1000, cosine or raw counts."""
        return {
            "topk": trial.suggest_int("topk", 5, 1000, log=True),
            "shrink": trial.suggest_float("shrink", 0.0, 1000.0),
            "normalize": trial.suggest_categorical("normalize", [True, False]),
        }

    def _fit_weights(self, x: Tensor) -> None:
        """Blocked top-N shrunk cosine; see the class docstring.

        Args:
            x: Binary training matrix, sparse CSR float ``[U, I]`` on the CPU.
        """
        num_items = self.num_items
        xt = x.t().to_sparse_csr()  # [I, U]: row j is item j's users
        crow, col, val = xt.crow_indices(), xt.col_indices(), xt.values()
        norms = (
            torch.zeros(num_items)
            .index_add_(0, torch.repeat_interleave(torch.arange(num_items), crow[1:] - crow[:-1]), val * val)
            .sqrt()
        )
        rows, cols, values = [], [], []
        for start in range(0, num_items, self.block_size):
            end = min(num_items, start + self.block_size)
            lo, hi = int(crow[start]), int(crow[end])
            block_rows = torch.repeat_interleave(
                torch.arange(end - start), crow[start + 1 : end + 1] - crow[start:end]
            )
            dense = torch.zeros(end - start, self.num_users)
            dense[block_rows, col[lo:hi]] = val[lo:hi]
            dots = torch.sparse.mm(xt, dense.T).T  # [b, I] = X_block^T X
            if self.normalize:
                denom = norms[start:end, None] * norms[None, :] + self.shrink
                dots = dots / denom.clamp_min(1e-12)
            local = torch.arange(end - start)
            dots[local, local + start] = 0.0  # no item is its own neighbour
            r, c, v = top_n_block(dots, start, self.topk, by_magnitude=False)
            rows.append(r)
            cols.append(c)
            values.append(v)
        w = top_n_csr(rows, cols, values, num_items)
        device = self.sim_crow.device
        self.sim_crow = w.crow_indices().to(device)
        self.sim_col = w.col_indices().to(device)
        self.sim_values = w.values().to(device)

    def sparse_weights(self) -> Tensor:
        """``W``: sparse CSR ``[I, I]``, at most ``topk`` similarities per row."""
        return csr_tensor(self.sim_crow, self.sim_col, self.sim_values, self.num_items)

    def precompute(self) -> Tensor:
        """``W^T`` in CSR, built once per :meth:`inference` block (the sparse operand goes on the left)."""
        return self._transposed()

    def _transposed(self) -> Tensor:
        return transpose_csr(self.sparse_weights())

    def _score_rows(self, rows: Tensor) -> Tensor:
        """``rows @ W`` as ``(W^T rows^T)^T``.

        Shapes:
            rows ``[B, I]`` -> ``[B, I]``.
        """
        w_t = self.cached if self.cached is not None else self._transposed()
        return torch.sparse.mm(w_t, rows.T).T.contiguous()
