"""Full-ranking evaluation: every item is ranked for every evaluated user, never a sampled subset.

For each user with at least one truth item, all items are scored, the user's excluded items (those seen in
training, plus validation when the test part is scored) are set to ``-inf``, and the top ``max(ks)`` items
are compared with the user's relevant (truth) items. Users are scored in chunks (matmul, mask, top-k);
the top-k lists are then looked up in the truth at once and every metric for every ``K`` comes from one
pass over the hits.

Definitions, for one user with relevant set ``R`` (``|R| >= 1``) and top-``K`` list ``L`` (ranks 1..K):

* ``hits@K = |L ∩ R|``.
* ``recall@K = hits@K / |R|``.
* ``precision@K = hits@K / K`` (``K`` even when fewer than ``K`` items could be recommended).
* ``hit@K = 1`` if ``hits@K > 0`` else ``0``.
* ``ndcg@K = DCG@K / IDCG@K`` with ``DCG@K = Σ_{rank r ≤ K, item at r in R} 1 / log2(r + 1)`` and
  ``IDCG@K = Σ_{r=1}^{min(|R|, K)} 1 / log2(r + 1)`` (binary relevance).
* ``mrr@K = 1 / r`` for the rank ``r`` of the first relevant item within the top ``K``, ``0`` if none.

Each metric is averaged over the evaluated users. Users with no truth item are skipped and counted. An
excluded item is never recommended: when a user has fewer than ``K`` non-excluded items, the list is
shorter than ``K`` (the empty positions count as misses). A truth item that is also excluded (a pair in
both train and test) stays in ``R`` but can never be hit, as in the reference LightGCN evaluation.
The popularity floor ranks items by training count, ties broken by the lower item id.

**Long tail** (``long_tail=0.2``): only truth pairs whose item is outside the 20% most popular training items
(ranked by training count, ties to the lower id, as the popularity floor) count as relevant; the ranking is
still over every item, so a head item in the list is a miss. Users without a long-tail truth item are
skipped. This asks how well a model surfaces the catalogue's less-known items to those who like them.

**New users** (a ``cold-users`` split): a user with pairs in the split's ``history`` part has no trained row;
it is scored by ``model.score_history`` of that history (the model's own rule for new users: fold-in, its
network, item-item weights), never by ``score_users``, and its history items are masked like training
items. :attr:`Metrics.history_users` counts the users scored that way.

**New items** (a ``cold-items`` split): only the items without a training interaction are ranked (every
item seen in training is masked for every user), and only users with a training interaction are
evaluated. A model that cannot score items unseen in training (``inductive_items`` false) is refused with a
:class:`UnsupportedSplitError` instead of being given the scores of untrained item rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
import torch

from models.base import History
from tasks.split import Split

Part = Literal["valid", "test"]
METRIC_NAMES = ("recall", "ndcg", "hit", "precision", "mrr")
DEFAULT_CHUNK_SIZE = 1024


@dataclass(frozen=True)
class Metrics:
    """Ranking metrics of one evaluation.

    Attributes:
        values: ``"recall@K"``, ``"ndcg@K"``, ``"hit@K"``, ``"precision@K"``, ``"mrr@K"`` for every ``K``,
            averaged over the evaluated users (all 0.0 when no user was evaluated).
        users_evaluated: Users with at least one truth item.
        users_skipped: Users without truth items.
        seconds: Wall time of the evaluation.
        history_users: Evaluated users scored from their revealed history (new users of a cold-users
            split), not from a trained row.
    """

    values: dict[str, float]
    users_evaluated: int
    users_skipped: int
    seconds: float
    history_users: int = 0

    def __getitem__(self, key: str) -> float:
        """One metric, e.g. ``metrics["recall@20"]``."""
        return self.values[key]

    def to_dict(self) -> dict[str, float | int]:
        """A flat, JSON-serialisable copy: every metric plus the counts and seconds."""
        return {
            **self.values,
            "users_evaluated": self.users_evaluated,
            "users_skipped": self.users_skipped,
            "history_users": self.history_users,
            "seconds": self.seconds,
        }


class Scorer(Protocol):
    """What :func:`evaluate` needs from a recommender (``models.base.Recommender`` provides it)."""

    def inference(self) -> AbstractContextManager[None]:
        """Evaluation mode, no gradients, shared precomputation for the calls inside."""
        ...

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, I]`` of known users ``[B]`` against every item."""
        ...

    def score_history(self, history: History) -> torch.Tensor:
        """Scores ``[B, I]`` of new users described by their history."""
        ...


class UnsupportedSplitError(ValueError):
    """A model that cannot be evaluated on a split; the message names the model and why.

    For example a cold-items split for a model that cannot score items unseen in training.
    """


def unsupported_split(model: object, method: str) -> str | None:
    """Why ``model`` (an instance or a class) cannot be evaluated on a split by ``method``, or ``None``.

    Reads only the model's capability flags and the split method, so it can run before any work starts.
    """
    if method == "cold-items" and not getattr(model, "inductive_items", False):
        name = getattr(model, "name", type(model).__name__)
        return (
            f"model '{name}' cannot score items unseen in training (it has no item features or side "
            "information to score them from: inductive_items is false), so it cannot be evaluated on a "
            "cold-items split; choose a model with inductive_items (gnnrec models) or another split."
        )
    return None


def _device_of(model: object) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for anything else)."""
    for source in ("parameters", "buffers"):
        tensors = getattr(model, source, None)
        if callable(tensors):
            for t in tensors():
                return torch.device(t.device)
    return torch.device("cpu")


def _pairs(pairs: torch.Tensor | np.ndarray, name: str, num_users: int, num_items: int) -> torch.Tensor:
    out = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    if len(out) and (
        bool(((out[:, 0] < 0) | (out[:, 0] >= num_users)).any())
        or bool(((out[:, 1] < 0) | (out[:, 1] >= num_items)).any())
    ):
        raise ValueError(f"{name} hold ids outside users [0, {num_users}) or items [0, {num_items}).")
    return out


def _ks(ks: Sequence[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}.")
    return out


def full_ranking_metrics(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    truth_pairs: torch.Tensor | np.ndarray,
    exclude_pairs: torch.Tensor | np.ndarray,
    num_users: int,
    num_items: int,
    ks: Sequence[int] = (10, 20),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str | None = None,
) -> Metrics:
    """Rank every item for every user with a truth item and compute all metrics for all ``K``.

    Args:
        score_fn: ``score_fn(users [B]) -> scores [B, I]`` for a chunk of user ids. The returned tensor is
            masked in place when it is contiguous, so return a fresh tensor (a matmul result, not a view of
            a cached matrix).
        truth_pairs: Relevant (user, item) pairs of the part being evaluated.
        exclude_pairs: (user, item) pairs never to recommend (seen items).
        num_users: Number of users ``U``.
        num_items: Number of items ``I``.
        ks: Cut-offs.
        chunk_size: Users scored at once; memory is about ``chunk_size * I * 4`` bytes for the scores, plus
            ``12 * max(ks)`` bytes per evaluated user for the top-k lists.
        device: Device of the user ids handed to ``score_fn``; ``None`` means CPU. The index structures
            follow the scores to their device.

    Returns:
        The averaged metrics, counts and wall time.

    Shapes:
        truth_pairs: ``[n, 2]`` long; exclude_pairs: ``[m, 2]`` long.
    """
    start = time.perf_counter()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    ks_sorted = _ks(ks)
    truth = _pairs(truth_pairs, "truth_pairs", num_users, num_items)
    exclude = _pairs(exclude_pairs, "exclude_pairs", num_users, num_items)
    dev = torch.device(device) if device is not None else torch.device("cpu")

    # Evaluated users get a dense position 0..n-1; truth pairs are re-keyed as position * I + item, sorted.
    eval_users = torch.unique(truth[:, 0])
    n_eval = len(eval_users)
    position = torch.full((num_users,), -1, dtype=torch.long)
    position[eval_users] = torch.arange(n_eval)
    truth_keys = torch.unique(position[truth[:, 0]] * num_items + truth[:, 1])
    num_relevant = torch.bincount(truth_keys // num_items, minlength=n_eval)
    ex_pos = position[exclude[:, 0]]
    keep = ex_pos >= 0
    # Sorted by position, the excluded pairs of a chunk of positions [s, e) are one contiguous slice.
    ex_keys = torch.sort(ex_pos[keep] * num_items + exclude[keep, 1]).values
    ex_rows, ex_cols = ex_keys // num_items, ex_keys % num_items
    bounds = torch.arange(0, n_eval + chunk_size, chunk_size).clamp(max=n_eval)
    ex_bounds = torch.searchsorted(ex_rows, bounds).tolist()
    bounds_list = bounds.tolist()
    ex_local = ex_rows % chunk_size  # row inside its chunk: chunks start at multiples of chunk_size
    del ex_keys, ex_rows

    # The chunk loop does only what the bare matmul + topk must do, plus one index_put for the mask; the
    # top-k lists (n_eval * K_max * 12 bytes) are scored against the truth afterwards in a few large ops,
    # which keeps per-chunk overhead (small ops, thread wake-ups, kernel launches) out of the hot loop.
    k_max = ks_sorted[-1]
    k_top = min(k_max, num_items)
    top_values: torch.Tensor | None = None
    top_items = torch.empty(0, k_top, dtype=torch.long)
    eval_users_dev = eval_users.to(dev)
    with torch.no_grad():
        for c in range(len(bounds_list) - 1):
            s, e = bounds_list[c], bounds_list[c + 1]
            if s == e:
                break
            scores = score_fn(eval_users_dev[s:e])
            if scores.shape != (e - s, num_items):
                raise ValueError(
                    f"score_fn returned shape {tuple(scores.shape)}, expected {(e - s, num_items)}."
                )
            if top_values is None or top_values.device != scores.device:
                top_values = torch.empty(n_eval, k_top, dtype=scores.dtype, device=scores.device)
                top_items = torch.empty(n_eval, k_top, dtype=torch.long, device=scores.device)
                ex_local, ex_cols = ex_local.to(scores.device), ex_cols.to(scores.device)
            if not scores.is_contiguous():
                scores = scores.contiguous()
            a, b = ex_bounds[c], ex_bounds[c + 1]
            if b > a:  # duplicates are harmless: they write -inf twice
                scores[ex_local[a:b], ex_cols[a:b]] = -torch.inf
            torch.topk(scores, k_top, dim=1, out=(top_values[s:e], top_items[s:e]))
            del scores

        sums = torch.zeros(len(METRIC_NAMES), len(ks_sorted), dtype=torch.float64, device=top_items.device)
        if top_values is not None:
            sums = _sum_metrics(top_values, top_items, truth_keys, num_relevant, num_items, ks_sorted)

    means = (sums / max(n_eval, 1)).cpu().tolist()
    values = {
        f"{name}@{k}": float(means[m][j])
        for j, k in enumerate(ks_sorted)
        for m, name in enumerate(METRIC_NAMES)
    }
    return Metrics(
        values=values,
        users_evaluated=n_eval,
        users_skipped=num_users - n_eval,
        seconds=time.perf_counter() - start,
    )


def _sum_metrics(
    top_values: torch.Tensor,
    top_items: torch.Tensor,
    truth_keys: torch.Tensor,
    num_relevant: torch.Tensor,
    num_items: int,
    ks: list[int],
    block: int = 65_536,
) -> torch.Tensor:
    """Per-metric, per-K sums over all evaluated users, from their top-k lists.

    Args:
        top_values: Scores of the top-k lists (``-inf`` marks an excluded item: no recommendation).
        top_items: Items of the top-k lists.
        truth_keys: Sorted ``position * I + item`` of the relevant pairs.
        num_relevant: ``|R|`` per evaluated user (>= 1).
        num_items: ``I``.
        ks: Sorted cut-offs.
        block: Users per block, which bounds the temporaries.

    Returns:
        Sums, rows in :data:`METRIC_NAMES` order, columns per ``K``.

    Shapes:
        top_values, top_items: ``[n, min(K_max, I)]``; num_relevant: ``[n]``; returns ``[5, len(ks)]``.
    """
    device = top_items.device
    truth_keys, num_relevant = truth_keys.to(device), num_relevant.to(device)
    k_max = ks[-1]
    discount = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64, device=device))
    ideal = torch.cumsum(discount, 0)
    k_index = torch.tensor(ks, device=device) - 1
    k_values = torch.tensor(ks, dtype=torch.float64, device=device)
    sums = torch.zeros(len(METRIC_NAMES), len(ks), dtype=torch.float64, device=device)
    last = max(len(truth_keys) - 1, 0)
    for s in range(0, len(top_items), block):
        items = top_items[s : s + block]
        query = torch.arange(s, s + len(items), device=device).unsqueeze(1) * num_items + items
        found = torch.searchsorted(truth_keys, query).clamp_(max=last)
        hits = (truth_keys[found] == query) & (top_values[s : s + block] != -torch.inf)
        if hits.shape[1] < k_max:
            hits = torch.nn.functional.pad(hits, (0, k_max - hits.shape[1]))
        sums += _block_sums(hits, num_relevant[s : s + block], discount, ideal, k_index, k_values)
    return sums


def _block_sums(
    hits: torch.Tensor,
    num_relevant: torch.Tensor,
    discount: torch.Tensor,
    ideal: torch.Tensor,
    k_index: torch.Tensor,
    k_values: torch.Tensor,
) -> torch.Tensor:
    """Per-metric, per-K sums over a block of users.

    Args:
        hits: Whether the item at each rank is relevant.
        num_relevant: ``|R|`` per user (>= 1).
        discount: ``1 / log2(rank + 1)`` for ranks ``1..K_max``.
        ideal: Cumulative ``discount`` (IDCG for ``min(|R|, K)`` relevant items).
        k_index: ``K - 1`` for each cut-off.
        k_values: Each cut-off as float.

    Returns:
        Sums, rows in :data:`METRIC_NAMES` order, columns per ``K``.

    Shapes:
        hits: ``[B, K_max]`` bool; num_relevant: ``[B]``; returns ``[5, len(ks)]`` float64.
    """
    hits_f = hits.to(torch.float64)
    hit_count = torch.cumsum(hits_f, 1)[:, k_index]  # [B, nK]
    dcg = torch.cumsum(hits_f * discount, 1)[:, k_index]
    n_rel = num_relevant.to(torch.float64).unsqueeze(1)
    idcg = ideal[torch.minimum(num_relevant.unsqueeze(1), k_index + 1) - 1]
    any_hit = hits.any(1, keepdim=True)
    first_rank = hits.to(torch.uint8).argmax(1, keepdim=True) + 1  # first True (argmax returns the first max)
    reciprocal = torch.where(any_hit, 1.0 / first_rank.to(torch.float64), torch.zeros_like(n_rel))
    mrr = reciprocal * (first_rank <= k_index + 1)
    per_user = torch.stack(
        [hit_count / n_rel, dcg / idcg, (hit_count > 0).to(torch.float64), hit_count / k_values, mrr]
    )
    return per_user.sum(1)


def truth_and_exclude(split: Split, part: Part) -> tuple[np.ndarray, np.ndarray]:
    """The part's pairs and the pairs never to recommend: train, the revealed history, and valid for test.

    On a cold-items split the truth keeps only users with a training pair (the others have nothing the
    model could rank new items for).
    """
    seen = [split.train.reshape(-1, 2), split.history.reshape(-1, 2)]
    if part == "valid":
        truth = split.valid
    elif part == "test":
        truth = split.test
        seen.append(split.valid.reshape(-1, 2))
    else:
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}.")
    if split.method == "cold-items":
        trained = np.zeros(split.num_users, dtype=bool)
        trained[split.train[:, 0]] = True
        truth = truth[trained[truth[:, 0]]]
    return truth, np.concatenate(seen)


def head_items(split: Split, share: float) -> np.ndarray:
    """The ``share`` most popular training items (a ``ceil(share * I)`` count), by training count.

    Ties are broken by the lower item id, as in :func:`popularity_metrics`; items without a training pair
    are never in the head unless ``share`` reaches them.

    Raises:
        ValueError: ``share`` is not in ``(0, 1)``.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the long-tail head share must lie in (0, 1), got {share}.")
    counts = np.bincount(split.train.reshape(-1, 2)[:, 1].astype(np.int64), minlength=split.num_items)
    order = np.lexsort((np.arange(split.num_items), -counts))  # count descending, then id ascending
    return np.sort(order[: int(np.ceil(share * split.num_items))])


def _long_tail(truth: np.ndarray, split: Split, share: float | None) -> np.ndarray:
    """``truth`` without pairs whose item is in the head :func:`head_items` (all of it when ``None``)."""
    if share is None:
        return truth
    head = np.zeros(split.num_items, dtype=bool)
    head[head_items(split, share)] = True
    truth = truth.reshape(-1, 2)
    return truth[~head[truth[:, 1]]]


def _only_users(truth: np.ndarray, users: Sequence[int] | np.ndarray, num_users: int) -> np.ndarray:
    """``truth`` restricted to pairs of the given users.

    Raises:
        ValueError: when a user id lies outside ``[0, num_users)``.
    """
    chosen = np.asarray(users, dtype=np.int64).reshape(-1)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= num_users):
        raise ValueError(f"users hold ids outside [0, {num_users})")
    keep = np.zeros(num_users, dtype=bool)
    keep[chosen] = True
    truth = truth.reshape(-1, 2)
    return truth[keep[truth[:, 0]]]


def sparse_users(split: Split, max_interactions: int) -> np.ndarray:
    """Internal ids of users with 1 to ``max_interactions`` training pairs, sorted.

    These sparse users are the ones that social or side information is meant to help; pass them as
    :func:`evaluate`'s ``users`` for their subgroup metrics.
    """
    counts = np.bincount(np.asarray(split.train[:, 0], dtype=np.int64), minlength=split.num_users)
    return np.flatnonzero((counts >= 1) & (counts <= max_interactions))


def cold_item_mask(split: Split) -> torch.Tensor | None:
    """On a cold-items split, the items seen in training (masked for every user); ``None`` otherwise."""
    if split.method != "cold-items":
        return None
    warm = torch.zeros(split.num_items, dtype=torch.bool)
    warm[torch.as_tensor(split.train[:, 1], dtype=torch.long)] = True
    return warm


def _masking(
    score_fn: Callable[[torch.Tensor], torch.Tensor], warm: torch.Tensor | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    if warm is None:
        return score_fn

    def masked(users: torch.Tensor) -> torch.Tensor:
        scores = score_fn(users)
        return scores.masked_fill(warm.to(scores.device), -torch.inf)

    return masked


@dataclass(frozen=True)
class HistoryIndex:
    """The split's revealed history as CSR over all user ids, to build :class:`History` batches from.

    Attributes:
        indptr: ``items[indptr[u]:indptr[u + 1]]`` are user ``u``'s history items, long ``[U + 1]``.
        items: Internal item ids, long ``[nnz]``.
    """

    indptr: torch.Tensor
    items: torch.Tensor

    @classmethod
    def from_split(cls, split: Split) -> HistoryIndex:
        """The CSR of ``split.history`` (empty rows for users without one)."""
        pairs = np.unique(split.history.reshape(-1, 2).astype(np.int64), axis=0)
        counts = np.bincount(pairs[:, 0], minlength=split.num_users) if len(pairs) else None
        indptr = np.zeros(split.num_users + 1, dtype=np.int64)
        if counts is not None:
            indptr[1:] = np.cumsum(counts)
        return cls(torch.from_numpy(indptr), torch.from_numpy(pairs[:, 1].copy()))

    @property
    def has_history(self) -> torch.Tensor:
        """Whether each user has a revealed history (is a new user), bool ``[U]``."""
        return self.indptr[1:] > self.indptr[:-1]

    def of(self, users: torch.Tensor) -> History:
        """The histories of ``users`` ``[B]`` (internal ids, CPU) as one :class:`History` batch."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        indptr = torch.zeros(len(users) + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(lengths, 0)
        offsets = torch.arange(int(indptr[-1])) - torch.repeat_interleave(indptr[:-1], lengths)
        return History(indptr, self.items[torch.repeat_interleave(starts, lengths) + offsets])


def routed_score_fn(model: Scorer, index: HistoryIndex) -> Callable[[torch.Tensor], torch.Tensor]:
    """``score_fn(users)``: ``score_history`` for users with a revealed history, ``score_users`` for others.

    A new user has no trained row (its id exists but it never trained), so its scores must come from its
    history; a chunk with both kinds is assembled row by row.
    """
    new_user = index.has_history

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        is_new = new_user[users.cpu()]
        if not bool(is_new.any()):
            return model.score_users(users)
        history = index.of(users.cpu()[is_new])
        new_scores = model.score_history(history.to(users.device))
        if bool(is_new.all()):
            return new_scores
        known_scores = model.score_users(users[~is_new.to(users.device)])
        out = torch.empty(len(users), new_scores.shape[1], dtype=new_scores.dtype, device=new_scores.device)
        out[is_new.to(out.device)] = new_scores
        out[~is_new.to(out.device)] = known_scores.to(out.dtype)
        return out

    return score_fn


def evaluate(
    model: Scorer,
    split: Split,
    part: Part,
    ks: Sequence[int] = (10, 20),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str | None = None,
    long_tail: float | None = None,
    users: Sequence[int] | np.ndarray | None = None,
) -> Metrics:
    """Full-ranking metrics of a recommender on the validation or test part.

    Training items are masked; for ``test`` the validation items are masked too. Inside
    ``model.inference()`` the model's precomputation (propagation, for graph models) is done once, then users
    are scored chunk by chunk with ``model.score_users``, or, for new users of a cold-users split, with
    ``model.score_history`` of their revealed history (masked too). On a cold-items split only items unseen
    in training are ranked. The model's training mode is restored afterwards.

    Args:
        model: A recommender (``inference()``, ``score_users(users) -> [B, I]`` and
            ``score_history(history) -> [B, I]``).
        split: The split whose ``part`` is evaluated.
        part: ``valid`` or ``test``.
        ks: Cut-offs.
        chunk_size: Users scored at once.
        device: Where to rank; ``None`` uses the device of the model's scores.
        long_tail: When given (e.g. ``0.2``), only truth items outside that share of most popular
            training items are relevant (the long-tail metrics, see the module docstring).
        users: When given, only these internal user ids are evaluated (a subgroup such as the users with
            few training interactions, :func:`sparse_users`); the others count as skipped.

    Returns:
        The metrics; ``seconds`` includes the precomputation.

    Raises:
        UnsupportedSplitError: The model cannot be evaluated on this split (:func:`unsupported_split`).
    """
    start = time.perf_counter()
    reason = unsupported_split(model, split.method)
    if reason is not None:
        raise UnsupportedSplitError(reason)
    truth, exclude = truth_and_exclude(split, part)
    truth = _long_tail(truth, split, long_tail)
    if users is not None:
        truth = _only_users(truth, users, split.num_users)
    index = HistoryIndex.from_split(split)
    with model.inference():
        if device is None:
            device = _device_of(model)
        metrics = full_ranking_metrics(
            _masking(routed_score_fn(model, index), cold_item_mask(split)),
            truth,
            exclude,
            split.num_users,
            split.num_items,
            ks,
            chunk_size=chunk_size,
            device=device,
        )
    truth_users = torch.unique(torch.as_tensor(truth, dtype=torch.long).reshape(-1, 2)[:, 0])
    history_users = int(index.has_history[truth_users].sum())
    return replace(metrics, seconds=time.perf_counter() - start, history_users=history_users)


def popularity_metrics(
    split: Split,
    part: Part,
    ks: Sequence[int] = (10, 20),
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str | None = None,
    long_tail: float | None = None,
) -> Metrics:
    """The popularity floor: every user gets the most-interacted training items, with the same masking.

    Items are ranked by training count, ties broken by the lower item id. New users' histories are masked as
    in :func:`evaluate`; on a cold-items split every ranked item has count 0, so the floor is the id order.

    Args:
        split: The split whose ``part`` is evaluated.
        part: ``valid`` or ``test``.
        ks: Cut-offs.
        chunk_size: Users scored at once.
        device: Where to score; ``None`` means CPU.
        long_tail: As in :func:`evaluate`.

    Returns:
        The metrics.
    """
    truth, exclude = truth_and_exclude(split, part)
    truth = _long_tail(truth, split, long_tail)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    train_items = torch.as_tensor(split.train.reshape(-1, 2)[:, 1], dtype=torch.long)
    counts = torch.bincount(train_items, minlength=split.num_items).to(torch.float64)
    # count - item / I keeps counts apart (they differ by >= 1) and orders equal counts by item id; float64
    # represents it exactly enough for any realistic catalogue.
    popularity = (counts - torch.arange(split.num_items, dtype=torch.float64) / split.num_items).to(dev)
    return full_ranking_metrics(
        _masking(lambda users: popularity.expand(len(users), -1).clone(), cold_item_mask(split)),
        truth,
        exclude,
        split.num_users,
        split.num_items,
        ks,
        chunk_size=chunk_size,
        device=dev,
    )
