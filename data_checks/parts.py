"""The parts of a split: the typed value that splitting produces and the contract checks.

It lives beside the contract (``data_checks.validate.validate_split``), so that ``data_checks/`` imports
nothing from ``tasks/``; :mod:`tasks.split` makes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

PARTS = ("train", "valid", "test")
HISTORY = "history"
"""The part of a cold-users split that new users reveal at inference time (never trained on)."""
ALL_PARTS = (*PARTS, HISTORY)


def _no_pairs() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Split:
    """A split of a dataset's interactions into disjoint parts.

    A **cold-users** split holds some users out of training whole: each such user's interactions are divided
    into ``history`` (what the new user reveals at inference time; scored through
    ``Recommender.score_history``, never trained on) and its ``valid`` or ``test`` pairs. Such a user keeps
    its id (``num_users`` is unchanged) but has no training pair. Every other method leaves ``history``
    empty.

    Attributes:
        method: How it was made (``random``, ``temporal``, ``loo``, ``fixed``, ``cold-users``,
            ``cold-items``).
        seed: The seed used.
        num_users: Users in the dataset (ids ``0..num_users-1``).
        num_items: Items in the dataset.
        train: (user, item) pairs, int64 ``[n_train, 2]``; the only part graphs and training may see.
        valid: (user, item) pairs, int64 ``[n_valid, 2]``, for tuning and early stopping (may be empty).
        test: (user, item) pairs, int64 ``[n_test, 2]``, touched only for the final report.
        history: (user, item) pairs, int64 ``[n_history, 2]``, revealed by users unseen in training as
            their history at inference time; never trained on, masked when their other pairs are ranked.
    """

    method: str
    seed: int
    num_users: int
    num_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    history: np.ndarray = field(default_factory=_no_pairs)

    def part(self, name: str) -> np.ndarray:
        """The (user, item) pairs of one part, int64 ``[n, 2]``.

        Args:
            name: ``train``, ``valid``, ``test`` or ``history``.

        Raises:
            KeyError: For any other name.
        """
        if name not in ALL_PARTS:
            raise KeyError(f"unknown split part {name!r}; expected one of {', '.join(ALL_PARTS)}")
        pairs: np.ndarray = getattr(self, name)
        return pairs

    def describe(self) -> dict[str, int | str]:
        """Counts for reports and run tags: interactions and distinct users per part, method, seed."""
        out: dict[str, int | str] = {
            "method": self.method,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "num_users": self.num_users,
            "num_items": self.num_items,
        }
        for name in ALL_PARTS:
            pairs = self.part(name)
            out[name] = len(pairs)
            out[f"{name}_users"] = len(np.unique(pairs[:, 0])) if len(pairs) else 0
        return out

    @cached_property
    def fingerprint(self) -> str:
        """A content hash (sha256, hex, first 16 chars) of the method, seed, sizes and every part.

        An empty ``history`` is left out of the hash, so splits without new users keep the fingerprints they
        had before the part existed (registered versions carry them as tags).
        """
        h = hashlib.sha256()
        h.update(f"{self.method}|{self.seed}|{self.num_users}|{self.num_items}".encode())
        names = ALL_PARTS if len(self.history) else PARTS
        for name in names:
            pairs = self.part(name)
            h.update(f"|{name}:{len(pairs)}|".encode())
            h.update(np.ascontiguousarray(pairs, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]
