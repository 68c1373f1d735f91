"""Score a registered recommender on another dataset's split: the champion measured on the challenger's data.

A registered model knows users and items by their raw ids (``user_ids``, ``item_ids`` of its pyfunc python
model) and scores every item it knows for a batch of raw users (``score_users_raw``). To compare it with a
challenger trained on other data, its scores are laid onto the challenger dataset's item indices (an item
it never saw gets ``-inf``: it could not recommend it either), and the challenger's split is evaluated with
the same full ranking and masks as :func:`tasks.evaluate.evaluate` (training items and revealed histories
masked; for ``test`` the validation items too; on a cold-items split, every item seen in training).

On a ``cold-users`` split the held-out users are scored as the challenger was: from the history they
reveal, by the model's own new-user rule (``score_histories_raw``), never from a trained row, even when the
champion, trained on another split, has a row for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tasks.evaluate import (
    HistoryIndex,
    Metrics,
    Part,
    cold_item_mask,
    full_ranking_metrics,
    truth_and_exclude,
)

if TYPE_CHECKING:
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split


class NotScorableError(ValueError):
    """The model cannot be scored on this data (users unknown to it, or no raw-id scoring)."""


def id_key(raw: Any) -> str:
    """One key per raw id whatever its transport: ``3``, ``np.int64(3)``, ``3.0`` and ``"3"`` -> ``"3"``."""
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
        return str(int(raw))
    if isinstance(raw, (float, np.floating)) and float(raw).is_integer():
        return str(int(raw))
    return str(raw)


def _keys(ids: Iterable[Any]) -> list[str]:
    return [id_key(raw) for raw in np.asarray(ids).tolist()]


def item_columns(model_item_ids: Sequence[Any] | np.ndarray, dataset_item_ids: np.ndarray) -> np.ndarray:
    """For each item of the dataset, its column in the model's scores, or -1 when the model lacks it.

    Shapes:
        model_item_ids ``[I_model]``, dataset_item_ids ``[I]`` -> ``[I]`` int64.
    """
    column = {key: i for i, key in enumerate(_keys(model_item_ids))}
    return np.array([column.get(key, -1) for key in _keys(dataset_item_ids)], dtype=np.int64)


def unknown_users(model: Any, dataset: Dataset, pairs: np.ndarray) -> list[Any]:
    """Raw ids of the users in ``pairs`` (``[n, 2]`` internal ids of ``dataset``) that ``model`` lacks."""
    known = set(_keys(model.user_ids))
    users = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2)[:, 0])
    raw = dataset.user_ids[users].tolist()
    return [u for u, key in zip(raw, _keys(raw), strict=True) if key not in known]


def rescore(
    model: Any, dataset: Dataset, split: Split, part: Part, ks: Sequence[int], *, chunk_size: int = 1024
) -> Metrics:
    """Full-ranking metrics of a raw-id recommender on one part of another dataset's split.

    Args:
        model: The pyfunc python model (``unwrap_python_model()``): ``score_users_raw``, ``user_ids``,
            ``item_ids``, and ``score_histories_raw`` for a split with new users.
        dataset: The dataset the split indexes (raw ids).
        split: The split; ``part`` is evaluated with :func:`tasks.evaluate.evaluate`'s truth and masks. Its
            new users (those with a revealed ``history``) are scored from that history.
        part: ``valid`` or ``test``.
        ks: Cut-offs.
        chunk_size: Users scored at once (memory ``chunk_size x I`` float64).

    Returns:
        The metrics, as :func:`tasks.evaluate.evaluate` defines them (``history_users`` counted).

    Raises:
        NotScorableError: When the model has no raw-id scoring, users of ``part`` without a history are
            unknown to it, or a new user's history holds no item it knows.
    """
    from dataclasses import replace

    if not all(hasattr(model, name) for name in ("score_users_raw", "user_ids", "item_ids")):
        raise NotScorableError(
            f"{type(model).__name__} has no score_users_raw/user_ids/item_ids, so it cannot be re-scored"
        )
    truth, exclude = truth_and_exclude(split, part)
    index = HistoryIndex.from_split(split)
    new_user = index.has_history.numpy()
    truth = np.asarray(truth, dtype=np.int64).reshape(-1, 2)
    truth_users = np.unique(truth[:, 0])
    missing = unknown_users(model, dataset, truth[~new_user[truth[:, 0]]])  # those scored from a row
    if missing:
        raise NotScorableError(
            f"{len(missing)} of the {len(truth_users)} {part} users are unknown to it (e.g. {missing[:3]})"
        )
    history_users = int(new_user[truth_users].sum())
    if history_users and not hasattr(model, "score_histories_raw"):
        raise NotScorableError(
            f"{type(model).__name__} cannot score the {history_users} new {part} users from their history"
        )
    columns = item_columns(model.item_ids, dataset.item_ids)
    known = columns >= 0
    warm = cold_item_mask(split)

    def histories_of(users: np.ndarray) -> list[list[Any]]:
        batch = index.of(torch.from_numpy(users))
        lists = []
        for row in range(len(users)):
            items = batch.items[int(batch.indptr[row]) : int(batch.indptr[row + 1])].numpy()
            items = items[known[items]]  # items the model never saw: it could not read them either
            if len(items) == 0:
                raw_user = dataset.user_ids[users[row]]
                raise NotScorableError(f"no item of new user {raw_user!r}'s history is known to it")
            lists.append(dataset.item_ids[items].tolist())
        return lists

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        batch = users.cpu().numpy()
        is_new = new_user[batch]
        out = np.full((len(batch), dataset.num_items), -np.inf)
        for rows, scores in (
            (np.nonzero(~is_new)[0], lambda b: model.score_users_raw(dataset.user_ids[b].tolist())),
            (np.nonzero(is_new)[0], lambda b: model.score_histories_raw(histories_of(b))),
        ):
            if len(rows):
                found = np.asarray(scores(batch[rows]), dtype=np.float64)
                out[np.ix_(rows, np.nonzero(known)[0])] = found[:, columns[known]]
        if warm is not None:
            out[:, warm.numpy()] = -np.inf
        return torch.from_numpy(out)

    try:
        metrics = full_ranking_metrics(
            score_fn, truth, exclude, split.num_users, split.num_items, ks, chunk_size=chunk_size
        )
    except KeyError as err:  # the model's own lookup disagrees with ours on an id
        raise NotScorableError(str(err).strip("'\"")) from err
    return replace(metrics, history_users=history_users)
