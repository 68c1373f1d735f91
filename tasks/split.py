"""Train/validation/test splits: random per-user, temporal per-user, leave-one-out, fixed, and cold start.

Every method works per user and is vectorised: interactions are ordered within each user by a key (a
seeded random number, or the timestamp with a random tie-break), each gets its rank inside its user's
group, and ranks are compared with per-user counts. The same dataset, config and seed always give the same
split.

Per-user counts for ``random`` and ``temporal`` (user with ``n`` interactions, ratios ``(r_train, r_valid,
r_test)``; ``round`` rounds halves up):

* ``n_test = round(n * r_test)``, raised to 1 when ``r_test > 0`` and ``n >= 3``;
* ``n_valid = round(n * r_valid)``, raised to 1 when ``r_valid > 0`` and ``n >= 3``;
* then train keeps at least one: ``n_test`` is capped at ``n - 1`` and ``n_valid`` at ``n - 1 - n_test``.

So every user keeps at least one training interaction, users with three or more have at least one test
(and, when a validation ratio is set, one validation) interaction, and users with one or two interactions
may have no held-out one. ``random`` draws the held-out interactions at random; ``temporal`` trains on the
oldest and tests on the newest.

**Cold users** (``cold-users``): users unseen in training, served from a history they reveal.

* Eligible users have at least two interactions (one to reveal, one to predict). ``n_cold =
  round(cold_fraction * num_users)`` of them are drawn (seeded); fewer than two, or more than the eligible
  users, is a :class:`~tasks.ingest.errors.SplitError`.
* The first ``n_cold // 2`` drawn are **validation** users (model selection, early stopping), the others
  **test** users; every other user keeps all its interactions in ``train``.
* Each cold user reveals ``n_hist = round(n * fold_in)`` of its ``n`` interactions, clipped to ``[1, n - 1]``,
  as its ``history`` part: the oldest ones when the dataset has timestamps (ties broken at random), random
  ones otherwise. The rest are its ``valid`` or ``test`` pairs.

So a cold user keeps its id but has no training pair; its history and its held-out pairs are disjoint and
together are all its interactions. Evaluation scores it with ``Recommender.score_history`` of its history,
which is masked (:func:`tasks.evaluate.evaluate`).

**Cold items** (``cold-items``): ``n_cold = round(cold_fraction * I')`` of the ``I'`` items with
interactions are drawn (at least two); the first ``n_cold // 2`` are validation items, the rest test items.
Every interaction with a validation item is in ``valid``, with a test item in ``test``, the others in
``train``. Only models that score items from their features (``inductive_items``) can be evaluated on it;
evaluation ranks the items unseen in training (:func:`tasks.evaluate.evaluate`).
"""

from __future__ import annotations

import numpy as np

from data_checks.parts import PARTS, Split
from tasks.config import SplitConfig
from tasks.ingest.dataset import Dataset
from tasks.ingest.errors import SplitError

__all__ = ["PARTS", "Split", "SplitError", "split_dataset"]

_HISTORY = 3  # part code of a cold user's revealed history


def split_dataset(dataset: Dataset, config: SplitConfig) -> Split:
    """Split a dataset's interactions into train, validation and test parts.

    Args:
        dataset: The indexed dataset.
        config: Method, ratios, ``valid_from_train`` and seed (see :class:`tasks.config.SplitConfig`).

    Returns:
        The split. Parts are disjoint and together hold every interaction; within a part, pairs keep the
        dataset's interaction order.

    Raises:
        SplitError: ``temporal`` on a dataset without timestamps, ``fixed`` on a dataset without a split
            of its own, or a cold split with fewer than two cold users or items.
    """
    rng = np.random.default_rng(config.seed)
    if config.method == "random":
        part = _ratio_split(dataset.user, rng.random(dataset.num_interactions), config.ratios)
    elif config.method == "temporal":
        if dataset.timestamp is None:
            raise SplitError(
                f"split method 'temporal' needs timestamps, but dataset '{dataset.name}' has none; "
                "use method 'random' or 'loo'."
            )
        part = _ratio_split(dataset.user, _time_key(dataset.timestamp, rng), config.ratios)
    elif config.method == "loo":
        key = (
            rng.random(dataset.num_interactions)
            if dataset.timestamp is None
            else _time_key(dataset.timestamp, rng)
        )
        part = _leave_one_out(dataset.user, key)
    elif config.method == "fixed":
        if dataset.fixed_split is None:
            raise SplitError(
                f"split method 'fixed' needs the source's own split, but dataset '{dataset.name}' has none "
                "(its interactions carry no 'split' column); use method 'random', 'temporal' or 'loo'."
            )
        part = dataset.fixed_split.astype(np.int8)
        if config.valid_from_train > 0:
            part = _move_train_to_valid(dataset.user, part, config.valid_from_train, rng)
    elif config.method == "cold-users":
        part = _cold_users(dataset, config, rng)
    elif config.method == "cold-items":
        part = _cold_items(dataset, config.cold_fraction, rng)
    else:  # pragma: no cover - SplitConfig's Literal type rejects anything else
        raise ValueError(f"unknown split method {config.method!r}")

    pairs = np.stack([dataset.user, dataset.item], axis=1).astype(np.int64)
    return Split(
        method=config.method,
        seed=config.seed,
        num_users=dataset.num_users,
        num_items=dataset.num_items,
        train=pairs[part == 0],
        valid=pairs[part == 1],
        test=pairs[part == 2],
        history=pairs[part == _HISTORY],
    )


def _cold_users(dataset: Dataset, config: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """Part codes of a cold-users split (the rule in the module docstring); 3 marks the history."""
    counts = np.bincount(dataset.user, minlength=dataset.num_users)
    eligible = np.flatnonzero(counts >= 2)
    n_cold = int(_round_half_up(np.array(config.cold_fraction * dataset.num_users)))
    if n_cold < 2 or n_cold > len(eligible):
        raise SplitError(
            f"a cold-users split of dataset '{dataset.name}' needs at least two new users (one to validate, "
            f"one to test), each with at least 2 interactions: --cold-fraction {config.cold_fraction} of "
            f"{dataset.num_users} users asks for {n_cold}, and {len(eligible)} users have 2 or more "
            "interactions; change --cold-fraction or use a larger dataset."
        )
    cold = rng.choice(eligible, size=n_cold, replace=False)
    role = np.zeros(dataset.num_users, dtype=np.int8)  # 0 warm, 1 validation user, 2 test user
    role[cold[: n_cold // 2]] = 1
    role[cold[n_cold // 2 :]] = 2
    key = (
        rng.random(dataset.num_interactions)
        if dataset.timestamp is None
        else _time_key(dataset.timestamp, rng)
    )
    rank, count = _ranks_within_user(dataset.user, key)
    n_hist = np.clip(_round_half_up(count * config.fold_in), 1, np.maximum(count - 1, 1))
    user_role = role[dataset.user]
    return np.where(user_role == 0, 0, np.where(rank < n_hist, _HISTORY, user_role)).astype(np.int8)


def _cold_items(dataset: Dataset, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Part codes of a cold-items split: every interaction of a held-out item is in valid or test."""
    counts = np.bincount(dataset.item, minlength=dataset.num_items)
    eligible = np.flatnonzero(counts >= 1)
    n_cold = int(_round_half_up(np.array(fraction * len(eligible))))
    if n_cold < 2:
        raise SplitError(
            f"a cold-items split of dataset '{dataset.name}' needs at least two held-out items (one to "
            f"validate, one to test): --cold-fraction {fraction} of {len(eligible)} items with interactions "
            f"gives {n_cold}; raise --cold-fraction or use a larger dataset."
        )
    cold = rng.choice(eligible, size=n_cold, replace=False)
    role = np.zeros(dataset.num_items, dtype=np.int8)
    role[cold[: n_cold // 2]] = 1
    role[cold[n_cold // 2 :]] = 2
    return role[dataset.item]


def _time_key(timestamp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sort key that orders by timestamp and breaks ties at random (dense time rank + jitter in [0, 1))."""
    _, rank = np.unique(timestamp, return_inverse=True)
    return rank.astype(np.float64) + rng.random(len(timestamp))


def _ranks_within_user(user: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each interaction's rank within its user by ascending ``key``, and each interaction's user count.

    Returns:
        ``rank`` (0 for the user's smallest key) and ``count`` (the user's number of interactions), both
        int64 ``[N]`` in the dataset's order.
    """
    order = np.lexsort((key, user))
    sorted_user = user[order]
    n = len(user)
    starts = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]]) if n else np.zeros(0, np.int64)
    run = np.diff(np.r_[starts, n])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64) - np.repeat(starts, run)
    count = np.empty(n, dtype=np.int64)
    count[order] = np.repeat(run, run)
    return rank, count


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def _held_out_counts(n: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (n_valid, n_test) under the rule in the module docstring."""
    _, r_valid, r_test = ratios
    n_test = _round_half_up(n * r_test)
    if r_test > 0:
        n_test = np.where(n >= 3, np.maximum(n_test, 1), n_test)
    n_valid = _round_half_up(n * r_valid)
    if r_valid > 0:
        n_valid = np.where(n >= 3, np.maximum(n_valid, 1), n_valid)
    n_test = np.minimum(n_test, n - 1)
    n_valid = np.minimum(n_valid, n - 1 - n_test)
    return n_valid, n_test


def _ratio_split(user: np.ndarray, key: np.ndarray, ratios: tuple[float, float, float]) -> np.ndarray:
    """Part code per interaction: the smallest keys of each user train, then valid, the largest test."""
    rank, count = _ranks_within_user(user, key)
    n_valid, n_test = _held_out_counts(count, ratios)
    n_train = count - n_valid - n_test
    return np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2)).astype(np.int8)


def _leave_one_out(user: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Largest key per user to test, second largest to valid; a user needs 2 for a test and 3 for a valid."""
    rank, count = _ranks_within_user(user, key)
    from_end = count - 1 - rank
    part = np.zeros(len(user), dtype=np.int8)
    part[(from_end == 0) & (count >= 2)] = 2
    part[(from_end == 1) & (count >= 3)] = 1
    return part


def _move_train_to_valid(
    user: np.ndarray, part: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Move a random ``round(fraction * n_train)`` of each user's training interactions to valid.

    Every user keeps at least one training interaction; moved ones join any validation part the source
    already has.
    """
    train = np.flatnonzero(part == 0)
    rank, count = _ranks_within_user(user[train], rng.random(len(train)))
    n_move = np.minimum(_round_half_up(count * fraction), count - 1)
    out = part.copy()
    out[train[rank < n_move]] = 1
    return out
