"""Negative samplers for pairwise and sampled-softmax training, vectorised in torch.

Three samplers share one interface, :meth:`NegativeSampler.sample`, and are built by
:func:`make_negative_sampler`:

* ``uniform``: every item the user has not interacted with in training is equally likely. Rather than
  rejecting positives and redrawing, it draws the ``r``-th non-positive item directly (exact, no rejection
  rounds, no residual probability of a positive, a fixed number of random draws per call), which is the
  distribution that rejection sampling repeated until success converges to.
* ``popularity``: ``P(i) ∝ count(i) ** alpha`` over training counts (``alpha = 0.75`` as in word2vec;
  ``alpha = 0`` is uniform over all items), restricted to the user's non-positives by rejection: rejected
  draws are redrawn for at most ``max_rounds`` rounds. A draw still rejected after the last round, which
  happens with probability ``q_u ** (max_rounds + 1)`` where ``q_u`` is the popularity mass of the user's
  positives, is replaced by a uniform non-positive, so a positive is never returned (the distribution is
  off by at most that probability).
* ``hard``: for each requested negative, a pool of ``pool_size`` uniform non-positives is scored by the
  model (``score_fn``, under ``torch.no_grad``) and the highest-scored candidate is returned.

Positives are found with one ``torch.searchsorted`` over the sorted keys ``user * num_items + item`` of
the training pairs; nothing loops over users in Python. A user who has interacted with every item has
no non-positive; such a user gets uniformly random items (necessarily positives).

All random numbers come from the ``generator`` passed to :meth:`NegativeSampler.sample` (or torch's
global generator), so a seeded generator makes sampling reproducible. A generator must live on the
sampler's device (``torch.Generator(device="cuda")`` for a CUDA sampler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

SamplerName = Literal["uniform", "popularity", "hard"]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_pairs(pairs: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """Return ``pairs`` as a long ``[n, 2]`` tensor on ``device``."""
    out = torch.as_tensor(pairs, dtype=torch.long, device=device)
    if out.ndim != 2 or out.shape[1] != 2:
        raise ValueError(f"Expected (user, item) pairs of shape [n, 2], got {tuple(out.shape)}.")
    return out


class NegativeSampler:
    """Draws, for each user of a batch, items the user has not interacted with in training.

    Build one with :func:`make_negative_sampler`. The base class holds the training positives as sorted
    keys and implements exact uniform sampling over each user's non-positives; subclasses change
    :meth:`sample`.

    Args:
        train_pairs: Training (user, item) pairs; duplicates are allowed.
        num_users: Number of users ``U``.
        num_items: Number of items ``I``.
        device: Where the sampler's tensors live and samples are drawn.

    Shapes:
        train_pairs: ``[n, 2]`` long.
    """

    name: str = "uniform"

    def __init__(
        self,
        train_pairs: torch.Tensor | np.ndarray,
        num_users: int,
        num_items: int,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_users <= 0 or num_items <= 0:
            raise ValueError(f"num_users and num_items must be positive, got {num_users} and {num_items}.")
        self.device = torch.device(device)
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        pairs = _as_pairs(train_pairs, self.device)
        if len(pairs):
            bad_user = bool(((pairs[:, 0] < 0) | (pairs[:, 0] >= num_users)).any())
            bad_item = bool(((pairs[:, 1] < 0) | (pairs[:, 1] >= num_items)).any())
            if bad_user or bad_item:
                raise ValueError(
                    f"train_pairs hold ids outside users [0, {num_users}) or items [0, {num_items})."
                )
        users, items = pairs[:, 0], pairs[:, 1]
        # Sorted unique keys: a pair (u, i) is a positive iff u * I + i is among them.
        self._keys = torch.unique(users * self.num_items + items)
        key_users = self._keys // self.num_items
        key_items = self._keys % self.num_items
        self._degree = torch.bincount(key_users, minlength=self.num_users)
        self._indptr = torch.zeros(self.num_users + 1, dtype=torch.long, device=self.device)
        self._indptr[1:] = torch.cumsum(self._degree, 0)
        # Within a user's sorted positives p_0 < p_1 < ..., p_j - j counts the non-positives below p_j and
        # is non-decreasing, so u * I + (p_j - j) is globally sorted; searching it maps the r-th non-positive
        # of u to its item id in one searchsorted.
        rank_in_user = torch.arange(len(self._keys), device=self.device) - self._indptr[key_users]
        self._gap_keys = key_users * self.num_items + (key_items - rank_in_user)
        self._item_counts = torch.bincount(pairs[:, 1], minlength=self.num_items)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(users={self.num_users}, items={self.num_items}, "
            f"positives={len(self._keys)}, device={self.device})"
        )

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is a training positive.

        Args:
            users: User ids, broadcastable against ``items``.
            items: Item ids.

        Returns:
            A bool tensor of the broadcast shape.
        """
        if len(self._keys) == 0:
            return torch.zeros(
                torch.broadcast_shapes(users.shape, items.shape), dtype=torch.bool, device=items.device
            )
        query = users * self.num_items + items
        pos = torch.searchsorted(self._keys, query).clamp_(max=len(self._keys) - 1)
        return self._keys[pos] == query

    def _uniform_non_positive(
        self, users: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None
    ) -> torch.Tensor:
        """Draw items uniformly among each user's non-positives (exact, no rejection).

        Args:
            users: User ids ``[B]``.
            shape: Output shape, whose first dimension is ``B``.
            generator: Source of randomness.

        Returns:
            Item ids of ``shape``.
        """
        u = users.view(-1, *([1] * (len(shape) - 1)))
        free = (self.num_items - self._degree[u]).to(torch.float64)
        # float64 uniforms: 53 bits, so floor(x * free) is unbiased for any realistic item count.
        x = torch.rand(shape, generator=generator, device=self.device, dtype=torch.float64)
        r = (x * free).long()
        r = torch.minimum(r, (free.long() - 1).clamp(min=0))
        base = u * self.num_items
        below = torch.searchsorted(self._gap_keys, base + r, right=True) - self._indptr[u]
        items = r + below
        # A user with every item positive has no non-positive: give it any item.
        full = free == 0
        if len(self._keys) and bool(full.any()):
            anything = torch.randint(0, self.num_items, shape, generator=generator, device=self.device)
            items = torch.where(full, anything, items)
        return items

    def _check_users(self, users: torch.Tensor) -> torch.Tensor:
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        if users.ndim != 1:
            raise ValueError(f"users must be a 1-D tensor, got shape {tuple(users.shape)}.")
        return users

    def sample(
        self,
        users: torch.Tensor,
        num_negatives: int = 1,
        *,
        generator: torch.Generator | None = None,
        score_fn: ScoreFn | None = None,
    ) -> torch.Tensor:
        """Draw ``num_negatives`` non-positive items for each user.

        Args:
            users: User ids (repeats allowed, e.g. one per training pair).
            num_negatives: Negatives per user.
            generator: Source of randomness on the sampler's device; ``None`` uses torch's global one.
            score_fn: Ignored by this sampler; used by the hard sampler.

        Returns:
            Item ids, long, on the sampler's device.

        Shapes:
            users: ``[B]``; returns ``[B, num_negatives]``.
        """
        users = self._check_users(users)
        return self._uniform_non_positive(users, (len(users), num_negatives), generator)


class PopularityNegativeSampler(NegativeSampler):
    """``P(i) ∝ count(i) ** alpha`` over each user's non-positives, by bounded rejection.

    Items never seen in training have weight 0 when ``alpha > 0`` and are only reached through the
    uniform fallback. See the module docstring for the residual of the rejection.

    Args:
        train_pairs: Training (user, item) pairs.
        num_users: Number of users.
        num_items: Number of items.
        alpha: Smoothing exponent (0 gives uniform, 1 raw popularity).
        max_rounds: Redraw rounds for rejected draws before the uniform fallback.
        device: Where to sample.
    """

    name = "popularity"

    def __init__(
        self,
        train_pairs: torch.Tensor | np.ndarray,
        num_users: int,
        num_items: int,
        *,
        alpha: float = 0.75,
        max_rounds: int = 16,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(train_pairs, num_users, num_items, device=device)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        self.alpha = float(alpha)
        self.max_rounds = int(max_rounds)
        weights = self._item_counts.to(torch.float64).pow(self.alpha)  # 0 ** 0 == 1: alpha 0 is uniform
        if float(weights.sum()) <= 0:
            weights = torch.ones_like(weights)
        self.probabilities = weights / weights.sum()
        cdf = torch.cumsum(self.probabilities, 0)
        self._cdf = cdf / cdf[-1]

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, alpha={self.alpha}, max_rounds={self.max_rounds})"

    def _draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        x = torch.rand(shape, generator=generator, device=self.device, dtype=torch.float64)
        return torch.searchsorted(self._cdf, x, right=True).clamp_(max=self.num_items - 1)

    def sample(
        self,
        users: torch.Tensor,
        num_negatives: int = 1,
        *,
        generator: torch.Generator | None = None,
        score_fn: ScoreFn | None = None,
    ) -> torch.Tensor:
        """Draw popularity-weighted non-positive items for each user.

        Args:
            users: User ids.
            num_negatives: Negatives per user.
            generator: Source of randomness on the sampler's device.
            score_fn: Ignored.

        Returns:
            Item ids, long.

        Shapes:
            users: ``[B]``; returns ``[B, num_negatives]``.
        """
        users = self._check_users(users)
        shape = (len(users), num_negatives)
        items = self._draw(shape, generator)
        u = users.unsqueeze(1).expand(shape)
        bad = self.is_positive(u, items).nonzero()
        for _ in range(self.max_rounds):
            if len(bad) == 0:
                break
            rows, cols = bad[:, 0], bad[:, 1]
            redraw = self._draw((len(bad),), generator)
            items[rows, cols] = redraw
            bad = bad[self.is_positive(users[rows], redraw)]
        if len(bad):
            rows, cols = bad[:, 0], bad[:, 1]
            items[rows, cols] = self._uniform_non_positive(users[rows], (len(bad),), generator)
        return items


class HardNegativeSampler(NegativeSampler):
    """The highest-scored of ``pool_size`` uniform non-positive candidates, per negative.

    Args:
        train_pairs: Training (user, item) pairs.
        num_users: Number of users.
        num_items: Number of items.
        pool_size: Candidates scored per returned negative.
        device: Where to sample.
    """

    name = "hard"

    def __init__(
        self,
        train_pairs: torch.Tensor | np.ndarray,
        num_users: int,
        num_items: int,
        *,
        pool_size: int = 10,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(train_pairs, num_users, num_items, device=device)
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}.")
        self.pool_size = int(pool_size)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, pool_size={self.pool_size})"

    def sample(
        self,
        users: torch.Tensor,
        num_negatives: int = 1,
        *,
        generator: torch.Generator | None = None,
        score_fn: ScoreFn | None = None,
    ) -> torch.Tensor:
        """Draw a candidate pool per negative and keep the candidate the model scores highest.

        Args:
            users: User ids.
            num_negatives: Negatives per user.
            generator: Source of randomness on the sampler's device.
            score_fn: ``score_fn(users [B], items [B, P]) -> scores [B, P]``, the model's current scores;
                called once per call with ``P = num_negatives * pool_size``, without gradients.

        Returns:
            Item ids, long.

        Raises:
            ValueError: When ``score_fn`` is missing.

        Shapes:
            users: ``[B]``; returns ``[B, num_negatives]``.
        """
        if score_fn is None:
            raise ValueError("The hard negative sampler needs score_fn(users [B], items [B, P]) -> [B, P].")
        users = self._check_users(users)
        b = len(users)
        pool = self._uniform_non_positive(users, (b, num_negatives * self.pool_size), generator)
        with torch.no_grad():
            scores = score_fn(users, pool)
        if scores.shape != pool.shape:
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {tuple(pool.shape)}.")
        pool = pool.view(b, num_negatives, self.pool_size)
        best = scores.reshape(b, num_negatives, self.pool_size).argmax(dim=2, keepdim=True)
        return pool.gather(2, best.to(pool.device)).squeeze(2)


def make_negative_sampler(
    name: SamplerName,
    train_pairs: torch.Tensor | np.ndarray,
    num_users: int,
    num_items: int,
    *,
    alpha: float = 0.75,
    pool_size: int = 10,
    device: torch.device | str = "cpu",
) -> NegativeSampler:
    """Build a negative sampler by name.

    Args:
        name: ``uniform``, ``popularity`` or ``hard``.
        train_pairs: Training (user, item) pairs (the positives never returned).
        num_users: Number of users.
        num_items: Number of items.
        alpha: Popularity smoothing exponent (``popularity`` only).
        pool_size: Candidates per negative (``hard`` only).
        device: Where the sampler draws.

    Returns:
        The sampler.

    Raises:
        ValueError: For an unknown name or invalid arguments.

    Shapes:
        train_pairs: ``[n, 2]`` long.
    """
    if name == "uniform":
        return NegativeSampler(train_pairs, num_users, num_items, device=device)
    if name == "popularity":
        return PopularityNegativeSampler(train_pairs, num_users, num_items, alpha=alpha, device=device)
    if name == "hard":
        return HardNegativeSampler(train_pairs, num_users, num_items, pool_size=pool_size, device=device)
    raise ValueError(f"Unknown negative sampler {name!r}; choose one of 'uniform', 'popularity', 'hard'.")
