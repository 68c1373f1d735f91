"""What every item-item model shares: ``scores = history @ W`` with ``W`` an ``[I, I]`` item-item matrix.

ItemKNN (``models/itemknn.py``) and EASE (``models/ease.py``) differ only in how :meth:`fit` computes ``W``.
Row ``j`` of ``W`` holds the items that item ``j`` recommends, so a user's score for item ``i`` is
``sum_{j in history} W[j, i]``. Known users are scored from their training history (kept as a CSR buffer
by :meth:`ItemItemRecommender.fit`), new users from the history they bring: the same formula, no fold-in and
no training. The export is :class:`models.serving.ItemItemServable`: sparse ``W`` (at most ``N`` entries per
row) plus the known users' training history.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from models.base import History, Recommender
from models.graphs import csr_from_sorted

if TYPE_CHECKING:
    from models.graphs import Graphs
    from models.serving import Servable


class ItemItemRecommender(Recommender):
    """A closed-form recommender scoring ``history @ W`` (see the module docstring).

    Subclasses implement :meth:`_fit_weights` (compute ``W`` from the training matrix) and
    :meth:`_score_rows` (dense history rows times ``W``), and :meth:`sparse_weights` for the export. Buffers
    whose size is only known after :meth:`fit` are listed in :attr:`fitted_buffers`; loading a state dict
    resizes them, so a fitted model's state loads into a fresh one.

    Attributes:
        user_indptr: Training items of known users, CSR row pointer, long ``[U + 1]``.
        user_items: Their item ids, long ``[nnz]``.
    """

    family: ClassVar[str] = "item-item"
    closed_form: ClassVar[bool] = True
    data_parallel: ClassVar[bool] = False  # one fit() over the whole training graph: nothing to shard
    new_users: ClassVar[str] = "scored directly from the history (history @ W): no fold-in, no training"
    fitted_buffers: ClassVar[tuple[str, ...]] = ("user_indptr", "user_items")
    user_indptr: Tensor
    user_items: Tensor

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__(num_users, num_items)
        self.register_buffer("user_indptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))
        self.fitted = False

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The fitted arrays have data-dependent sizes: take the stored ones instead of refusing a mismatch.
        for name in self.fitted_buffers:
            stored = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(stored, Tensor) and stored.shape != current.shape:
                setattr(self, name, torch.empty(stored.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self.fitted = True

    # -- fitting ----------------------------------------------------------------------------------------

    def fit(self, graphs: Graphs) -> None:
        """Keep the training history of every user and compute ``W`` from the user-item matrix.

        Args:
            graphs: The training graphs (only the user-item interactions are read).

        Raises:
            ValueError: when the graphs' sizes differ from the model's, or there is no interaction.
        """
        if (graphs.num_users, graphs.num_items) != (self.num_users, self.num_items):
            raise ValueError(
                f"{self.name} was built for {self.num_users} users x {self.num_items} items, "
                f"the graphs have {graphs.num_users} x {graphs.num_items}"
            )
        x = graphs.user_item_csr().cpu()
        if x.values().numel() == 0:
            raise ValueError(f"{self.name} needs training interactions to fit, the graph has none")
        device = self.user_indptr.device
        self.user_indptr = x.crow_indices().clone().to(device)
        self.user_items = x.col_indices().clone().to(device)
        self._fit_weights(x)
        self.fitted = True

    @abstractmethod
    def _fit_weights(self, x: Tensor) -> None:
        """Compute and store ``W`` from the binary training matrix ``x`` (sparse CSR float ``[U, I]``)."""

    # -- scoring ----------------------------------------------------------------------------------------

    @abstractmethod
    def _score_rows(self, rows: Tensor) -> Tensor:
        """``rows @ W`` for dense binary history rows ``[B, I]`` -> ``[B, I]``."""

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{self.name} is closed-form: call fit(graphs) before scoring")

    def user_rows(self, users: Tensor) -> Tensor:
        """The known users' training histories as dense binary rows.

        Shapes:
            users ``[B]`` -> float ``[B, I]``.
        """
        users = users.to(self.user_indptr.device).long()
        starts, ends = self.user_indptr[users], self.user_indptr[users + 1]
        lengths = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=users.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        out = torch.zeros(len(users), self.num_items, device=users.device)
        out[rows, self.user_items[torch.repeat_interleave(starts, lengths) + offsets]] = 1.0
        return out

    def score_users(self, users: Tensor) -> Tensor:
        """Scores of known users: their training history times ``W``.

        Shapes:
            users ``[B]`` -> ``[B, I]``.
        """
        self._check_fitted()
        return self._score_rows(self.user_rows(users))

    def score_history(self, history: History) -> Tensor:
        """Scores of new users straight from the given history: ``history @ W`` (the :attr:`new_users` rule).

        Shapes:
            ``len(history) = B`` -> ``[B, I]``.
        """
        self._check_fitted()
        return self._score_rows(history.to(self.user_indptr.device).to_dense(self.num_items))

    # -- export -----------------------------------------------------------------------------------------

    @abstractmethod
    def sparse_weights(self) -> Tensor:
        """The served ``W``: sparse CSR float ``[I, I]`` with at most ``N`` entries per row."""

    def export(self) -> Servable:
        """Sparse ``W`` and the known users' training history (:class:`models.serving.ItemItemServable`)."""
        from models.serving import ItemItemServable

        self._check_fitted()
        return ItemItemServable(self.sparse_weights().cpu(), self.user_indptr.cpu(), self.user_items.cpu())


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, num_items: int) -> Tensor:
    """The sparse CSR ``[I, I]`` of these arrays (built by this module, so invariants are not re-checked)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, (num_items, num_items), check_invariants=False)


def top_n_csr(rows: list[Tensor], cols: list[Tensor], values: list[Tensor], num_items: int) -> Tensor:
    """A CSR ``[I, I]`` from per-block (row, column, value) triples, rows ascending across blocks.

    Each block's triples must already be sorted by row then column (see :func:`top_n_block`).
    """
    if rows:
        row, col, val = torch.cat(rows), torch.cat(cols), torch.cat(values)
    else:
        row = col = torch.zeros(0, dtype=torch.long)
        val = torch.zeros(0)
    return csr_from_sorted(row, col, val, (num_items, num_items))


def top_n_block(
    block: Tensor, first_row: int, n: int, *, by_magnitude: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``n`` largest entries of each row of a dense block, zeros dropped, as sorted COO triples.

    Args:
        block: Rows ``first_row .. first_row + b - 1`` of a dense ``[*, I]`` matrix.
        first_row: Global index of the block's first row.
        n: Entries kept per row (at most ``I``).
        by_magnitude: Rank by ``|value|`` (signed weights such as EASE's) instead of by value.

    Returns:
        ``(rows, cols, values)``, sorted by row then column.

    Shapes:
        block ``[b, I]`` -> three ``[nnz]`` with ``nnz <= b * n``.
    """
    k = min(n, block.shape[1])
    key = block.abs() if by_magnitude else block
    top = torch.topk(key, k, dim=1, sorted=False).indices
    cols, _ = torch.sort(top, dim=1)
    vals = block.gather(1, cols)
    rows = (
        torch.arange(first_row, first_row + block.shape[0], device=block.device).unsqueeze(1).expand_as(cols)
    )
    keep = vals != 0
    return rows[keep], cols[keep], vals[keep].float()
