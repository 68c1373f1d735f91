"""Train/validation/test splits: random per-user, temporal per-user, leave-one-out and fixed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Split:
    """A split of a dataset's interactions into disjoint parts.

    Attributes:
        method: How it was made (``random``, ``temporal``, ``loo``, ``fixed``).
        seed: The seed used.
        num_users: Users in the dataset (ids ``0..num_users-1``).
        num_items: Items in the dataset.
        train: (user, item) pairs, int64 ``[n_train, 2]``; the only part graphs and training may see.
        valid: (user, item) pairs, int64 ``[n_valid, 2]``, for tuning and early stopping (may be empty).
        test: (user, item) pairs, int64 ``[n_test, 2]``, touched only for the final report.
    """

    method: str
    seed: int
    num_users: int
    num_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
