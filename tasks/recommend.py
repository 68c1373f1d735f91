"""The served recommender: an MLflow pyfunc model that returns the top-K unseen items for raw user ids.

A trained :class:`models.base.Recommender` is exported as plain numpy arrays, so serving needs neither torch
nor the training code's graphs:

* ``embeddings.npz``: final user and item embeddings (``user_emb [U, d]``, ``item_emb [I, d]``);
* ``seen_items.npz``: every item each user has interacted with in the whole dataset (train, valid and test),
  as CSR ``indptr [U + 1]`` / ``indices [nnz]``; these are never recommended;
* ``id_maps.npz``: the raw user and item ids (``user_ids [U]``, ``item_ids [I]``);
* ``popularity.npy``: item indices by decreasing training popularity, for the fallback.

Scores are the dot product of user and item embeddings, which is :meth:`Recommender.score` for every model
that does not override it; exporting a model that overrides ``score`` raises ``NotImplementedError``.

Input: a DataFrame with a ``user`` column of raw user ids and an optional ``k`` column (per-row K); otherwise
the ``k`` inference parameter (default 10). Output: one row per recommendation with columns ``user`` (as
given), ``rank`` (1..K), ``item`` (raw item id), ``score`` and ``fallback``.

**Fallback for unknown users** (ids absent from the training data): the K most popular items of the training
part, in order of popularity, with ``fallback = True`` and the item's share of training interactions as
``score``. Known users with fewer than K unseen items get only those.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

try:  # mlflow is a dependency, but keep the pure functions importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from models.base import Recommender
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split

DEFAULT_K = 10
OUTPUT_COLUMNS = ("user", "rank", "item", "score", "fallback")


def seen_csr(user: np.ndarray, item: np.ndarray, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (``indptr``, ``indices``) of the unique items of each user.

    Shapes:
        user, item ``[N]`` -> indptr ``[num_users + 1]``, indices ``[nnz]`` (sorted within each user).
    """
    pairs = np.unique(np.stack([user.astype(np.int64), item.astype(np.int64)], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=num_users) if len(pairs) else np.zeros(num_users, np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, pairs[:, 1].astype(np.int64)


def top_k_unseen(
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    users: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    k: int,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items by dot-product score for each user, excluding the user's seen items.

    Args:
        user_emb: User embeddings.
        item_emb: Item embeddings.
        users: Internal ids of the users to recommend for.
        indptr: Seen-items CSR row pointer.
        indices: Seen-items CSR column indices.
        k: How many items per user (clipped to the number of items).
        chunk: Users scored at once (bounds memory at ``chunk x I`` floats).

    Returns:
        ``(items, scores)``; a slot whose item would be seen (the user has fewer than ``k`` unseen items)
            holds
        item ``-1`` and score ``-inf``.

    Shapes:
        user_emb ``[U, d]``, item_emb ``[I, d]``, users ``[B]`` -> items ``[B, k]`` (int64),
        scores ``[B, k]``.
    """
    num_items = item_emb.shape[0]
    k = max(0, min(int(k), num_items))
    out_items = np.full((len(users), k), -1, dtype=np.int64)
    out_scores = np.full((len(users), k), -np.inf, dtype=np.float64)
    if k == 0 or len(users) == 0:
        return out_items, out_scores
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = (user_emb[batch] @ item_emb.T).astype(np.float64)
        # Mask seen items: row r gets the indices of user batch[r], all at once.
        lengths = indptr[batch + 1] - indptr[batch]
        rows = np.repeat(np.arange(len(batch)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cols = indices[np.repeat(indptr[batch], lengths) + offsets]
        scores[rows, cols] = -np.inf
        part = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < num_items
            else np.tile(np.arange(num_items), (len(batch), 1))
        )
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        top_scores = np.take_along_axis(part_scores, order, axis=1)
        top[~np.isfinite(top_scores)] = -1
        out_items[start : start + len(batch)] = top
        out_scores[start : start + len(batch)] = top_scores
    return out_items, out_scores


def _id_array(ids: np.ndarray) -> np.ndarray:
    """Raw ids as a numpy array that round-trips through ``np.save`` without pickling (int or unicode)."""
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return arr.astype(str)


def export_recommender(model: Recommender, dataset: Dataset, split: Split, out_dir: Path) -> dict[str, str]:
    """Write the arrays the pyfunc model serves from.

    Args:
        model: The trained model (any device).
        dataset: The dataset (raw ids; all its interactions count as seen).
        split: The split (training popularity for the fallback).
        out_dir: Folder to write into (created).

    Returns:
        MLflow ``artifacts`` mapping: artifact name -> file path.

    Raises:
        NotImplementedError: When the model overrides ``score`` (serving ranks by dot product).
    """
    from models.base import Recommender as Base

    if type(model).score is not Base.score:
        raise NotImplementedError(
            f"{type(model).__name__} overrides score(); the served recommender ranks by dot product only."
        )
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model.embeddings()
    model.train(was_training)
    paths = {
        "embeddings": out_dir / "embeddings.npz",
        "seen_items": out_dir / "seen_items.npz",
        "id_maps": out_dir / "id_maps.npz",
        "popularity": out_dir / "popularity.npy",
    }
    np.savez(
        paths["embeddings"],
        user_emb=user_emb.detach().float().cpu().numpy(),
        item_emb=item_emb.detach().float().cpu().numpy(),
    )
    indptr, indices = seen_csr(dataset.user, dataset.item, dataset.num_users)
    np.savez(paths["seen_items"], indptr=indptr, indices=indices)
    np.savez(paths["id_maps"], user_ids=_id_array(dataset.user_ids), item_ids=_id_array(dataset.item_ids))
    counts = np.bincount(split.train[:, 1], minlength=dataset.num_items)
    popularity = np.argsort(-counts, kind="stable").astype(np.int64)
    np.save(paths["popularity"], np.stack([popularity, counts[popularity]]))
    return {name: str(path) for name, path in paths.items()}


def _mlflow_type(ids: np.ndarray) -> str:
    return "long" if np.asarray(ids).dtype.kind in "iu" else "string"


def check_k(k: Any, num_items: int) -> int:
    """``k`` as an int when it is a whole number from 1 to the catalogue's size.

    Raises:
        mlflow.exceptions.MlflowException: ``INVALID_PARAMETER_VALUE`` (HTTP 400 from the scoring server)
            with a one-line message, for ``k <= 0``, ``k`` above ``num_items`` or a ``k`` that is not a whole
            number.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    try:
        value = float(k)
    except (TypeError, ValueError):
        value = float("nan")
    if not (value == value and value.is_integer() and 1 <= value <= num_items):
        raise MlflowException(
            f"k must be a whole number from 1 to {num_items} (the catalogue's size), got {k!r}",
            error_code=INVALID_PARAMETER_VALUE,
        )
    return int(value)


def recommender_signature(user_ids: np.ndarray, item_ids: np.ndarray) -> Any:
    """The pyfunc signature: ``user`` (+ optional ``k``) in; ``user, rank, item, score, fallback`` out."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    user_type, item_type = _mlflow_type(user_ids), _mlflow_type(item_ids)
    inputs = Schema([ColSpec(user_type, "user"), ColSpec("long", "k", required=False)])
    outputs = Schema(
        [
            ColSpec(user_type, "user"),
            ColSpec("long", "rank"),
            ColSpec(item_type, "item"),
            ColSpec("double", "score"),
            ColSpec("boolean", "fallback"),
        ]
    )
    return ModelSignature(
        inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)])
    )


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "numpy", "pandas")]


def log_recommender(
    model: Recommender,
    dataset: Dataset,
    split: Split,
    *,
    registered_model_name: str | None,
    workdir: Path,
    tags: Mapping[str, str] | None = None,
) -> ModelInfo:
    """Export ``model`` and log it as a pyfunc recommender in the active MLflow run (and register it).

    Args:
        model: The trained model.
        dataset: Its dataset.
        split: Its split.
        registered_model_name: Register a new version of this model; ``None`` only logs.
        workdir: Scratch folder for the exported arrays.
        tags: Tags of the logged model.

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version`` set when registered).
    """
    import logging
    import warnings

    import mlflow

    artifacts = export_recommender(model, dataset, split, workdir / "recommender")
    # The model object is pickled by reference to this module (installed with the project), which is what
    # MLflow's cloudpickle warning is about; the signature is given explicitly, so its type-hint and
    # input-example advice does not apply either.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return mlflow.pyfunc.log_model(
                name="recommender",
                python_model=EmbeddingRecommender(),
                artifacts=artifacts,
                signature=recommender_signature(dataset.user_ids, dataset.item_ids),
                pip_requirements=_pip_requirements(),
                registered_model_name=registered_model_name,
                tags=dict(tags or {}),
            )
    finally:
        pyfunc_logger.setLevel(level)


class EmbeddingRecommender(PythonModel):
    """MLflow pyfunc model: top-K unseen items per raw user id, with a popularity fallback.

    See the module docstring for the input and output columns and the fallback.
    """

    def load_context(self, context: Any) -> None:
        """Load the exported arrays (``context.artifacts`` maps names to local paths)."""
        self._load(context.artifacts)

    def _load(self, artifacts: Mapping[str, str]) -> None:
        emb = np.load(artifacts["embeddings"])
        self.user_emb = emb["user_emb"]
        self.item_emb = emb["item_emb"]
        seen = np.load(artifacts["seen_items"])
        self.indptr, self.indices = seen["indptr"], seen["indices"]
        ids = np.load(artifacts["id_maps"])
        self.user_ids, self.item_ids = ids["user_ids"], ids["item_ids"]
        pop = np.load(artifacts["popularity"])
        self.popular, self.popular_counts = pop[0], pop[1]
        self._numeric_users = self.user_ids.dtype.kind in "iu"
        self._index = {self._key(u): i for i, u in enumerate(self.user_ids.tolist())}

    def _key(self, raw: Any) -> str:
        """Normalise a raw id from any transport (JSON float 3.0, string "3", numpy int) to one key."""
        if self._numeric_users:
            try:
                as_float = float(raw)
            except (TypeError, ValueError):
                return str(raw)
            if as_float.is_integer():
                return str(int(as_float))
        return str(raw)

    def score_users_raw(self, raw_users: Any) -> np.ndarray:
        """Scores of every item of this model for known raw user ids, seen items not masked.

        The promotion gate uses this to re-evaluate a champion on a challenger's split: the caller maps
        :attr:`item_ids` to its own item indices and applies its own masks.

        Args:
            raw_users: Raw user ids (any transport: ints, strings, floats like ``3.0``).

        Returns:
            float64 ``[B, I]`` with ``I = len(self.item_ids)``.

        Raises:
            KeyError: naming the raw ids this model does not know.
        """
        raw = list(raw_users)
        internal = np.array([self._index.get(self._key(u), -1) for u in raw], dtype=np.int64)
        unknown = [raw[i] for i in np.nonzero(internal < 0)[0][:5]]
        if unknown:
            raise KeyError(f"users unknown to this model: {unknown}")
        return (self.user_emb[internal] @ self.item_emb.T).astype(np.float64)

    # A DataFrame hint is one MLflow does not derive a signature from: the explicit signature applies.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Recommend for every row of ``model_input``.

        Args:
            context: MLflow context (unused; arrays are loaded in :meth:`load_context`).
            model_input: DataFrame with column ``user`` (raw ids) and optional ``k``; a list or a dict of
                lists is turned into one.
            params: Optional ``{"k": K}`` (default 10), used where a row has no ``k``.

        Returns:
            Columns ``user, rank, item, score, fallback``, ``k`` rows per user in rank order (fewer when a
            user
            has fewer unseen items).
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "user" not in frame.columns:
            raise ValueError(
                f"the input needs a 'user' column of raw user ids, got columns {list(frame.columns)}"
            )
        given_k = (params or {}).get("k")
        default_k = check_k(DEFAULT_K if given_k is None else given_k, len(self.item_ids))
        ks = np.full(len(frame), default_k, dtype=np.int64)
        if "k" in frame.columns:
            column = pd.to_numeric(frame["k"], errors="coerce").to_numpy(dtype=np.float64)
            for value in column[np.isfinite(column)]:
                check_k(value, len(self.item_ids))
            ks = np.where(np.isfinite(column), column, default_k).astype(np.int64)
        raw_users = frame["user"].tolist()
        internal = np.array([self._index.get(self._key(u), -1) for u in raw_users], dtype=np.int64)
        known = internal >= 0
        max_k = int(ks.max()) if len(ks) else 0
        items = np.full((len(frame), max_k), -1, dtype=np.int64)
        scores = np.full((len(frame), max_k), -np.inf)
        if known.any():
            items[known], scores[known] = top_k_unseen(
                self.user_emb, self.item_emb, internal[known], self.indptr, self.indices, max_k
            )
        if (~known).any():
            total = max(int(self.popular_counts.sum()), 1)
            items[~known] = self.popular[:max_k]
            scores[~known] = self.popular_counts[:max_k] / total
        rank = np.tile(np.arange(1, max_k + 1), (len(frame), 1))
        keep = (rank <= ks[:, None]) & (items >= 0)
        rows = np.nonzero(keep)[0]
        return pd.DataFrame(
            {
                "user": [raw_users[r] for r in rows],
                "rank": rank[keep].astype(np.int64),
                "item": self.item_ids[items[keep]],
                "score": scores[keep].astype(np.float64),
                "fallback": ~known[rows],
            },
            columns=list(OUTPUT_COLUMNS),
        )
