"""The served recommender: an MLflow pyfunc model that returns the top-K unseen items for raw user ids.

A trained :class:`models.base.Recommender` is exported with :meth:`~models.base.Recommender.export` as a
:class:`models.serving.Servable` (embedding tables, a sparse item-item matrix, or the network itself), beside
plain numpy arrays that every family shares:

* ``servable/``: the model's servable form (``servable.json`` says which);
* ``seen_items.npz``: every item each user has interacted with in the whole dataset (train, valid and test),
  as CSR ``indptr [U + 1]`` / ``indices [nnz]``; these are never recommended;
* ``id_maps.npz``: the raw user and item ids (``user_ids [U]``, ``item_ids [I]``);
* ``popularity.npy``: item indices by decreasing training popularity, for the fallback.

Input: a DataFrame with a ``user`` column of raw user ids and/or a ``history`` column of raw item ids
(comma-separated text, or a list when called in-process), and an optional ``k`` column (per-row K);
otherwise the ``k`` inference parameter (default 10). A row with a non-empty ``history`` is a **new user**:
it is scored from that history by the model's own rule (fold-in, its network, or item-item weights;
:attr:`models.base.Recommender.new_users`) without retraining, and the history's items are not
recommended. A missing history (``None``/null) means "no history"; a history given but empty (``""``, ``[]``)
or naming an item the model does not know is bad input: :class:`BadRecommendationInput`, one line naming the
row and the items, which the MLflow scoring server answers with HTTP 400. Output: one row per
recommendation with columns ``user`` (as given), ``rank`` (1..K), ``item`` (raw item id), ``score`` and
``fallback``.

**Explanations** (``explain`` parameter true, models that can explain, e.g. KGAT): an ``explanation``
column holds, for each recommendation of a known user, its strongest knowledge-graph paths from an item of
the user's training history, in raw ids and relation names with their attention weight, ``" | "``-joined
(``"50 -[film.film.genre]-> m.0hcr -[film.film.genre (inverse)]-> 181 (0.0123)"``); empty when no path
reaches the item, for new users and for the fallback. The exported ``explainer/`` folder (the model's
graph and attention, :class:`models.kgat.KGExplainer`) is what serves them.

**Fallback** for a row with neither a known user nor a history: the K most popular items of the training
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
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]
    MlflowException = Exception  # type: ignore[assignment,misc]
    INVALID_PARAMETER_VALUE = 0  # type: ignore[assignment]


class BadRecommendationInput(MlflowException, ValueError):
    """Input the served model cannot use (an empty history, an unknown history item); one line.

    An ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, so ``mlflow models serve`` answers HTTP 400 with
    this message instead of a 500-style "unexpected error"; a ``ValueError`` for in-process callers.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from models.base import Recommender
    from models.kgat import KGExplainer
    from models.serving import Servable
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


def mask_and_top_k(scores: np.ndarray, masks: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` columns of each row of ``scores`` after setting the row's ``masks`` entries to ``-inf``.

    Args:
        scores: Score matrix (modified in place).
        masks: One array of column indices per row, never returned.
        k: How many per row (clipped to the number of columns).

    Returns:
        ``(items, scores)``; a slot that only a masked item could fill holds item ``-1`` and score ``-inf``.

    Shapes:
        scores ``[B, I]`` -> items ``[B, k]`` (int64), scores ``[B, k]`` (float64).
    """
    num_items = scores.shape[1]
    k = max(0, min(int(k), num_items))
    if k == 0 or len(scores) == 0:
        return np.full((len(scores), k), -1, np.int64), np.full((len(scores), k), -np.inf)
    scores = scores.astype(np.float64, copy=False)
    lengths = np.array([len(m) for m in masks], dtype=np.int64)
    if lengths.sum():
        scores[np.repeat(np.arange(len(masks)), lengths), np.concatenate(masks).astype(np.int64)] = -np.inf
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < num_items
        else np.tile(np.arange(num_items), (len(scores), 1))
    )
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    top[~np.isfinite(top_scores)] = -1
    return top.astype(np.int64), top_scores


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
        ``(items, scores)`` as :func:`mask_and_top_k` returns them.

    Shapes:
        user_emb ``[U, d]``, item_emb ``[I, d]``, users ``[B]`` -> items ``[B, k]``, scores ``[B, k]``.
    """
    return _chunked_top_k(lambda batch: user_emb[batch] @ item_emb.T, users, indptr, indices, k, chunk)


def _chunked_top_k(
    score_fn: Any, users: np.ndarray, indptr: np.ndarray, indices: np.ndarray, k: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    outs = [
        mask_and_top_k(
            np.asarray(score_fn(batch), dtype=np.float64),
            [indices[indptr[u] : indptr[u + 1]] for u in batch],
            k,
        )
        for batch in (users[s : s + chunk] for s in range(0, max(len(users), 1), chunk))
    ]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def _id_array(ids: np.ndarray) -> np.ndarray:
    """Raw ids as a numpy array that round-trips through ``np.save`` without pickling (int or unicode)."""
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return arr.astype(str)


def export_recommender(model: Recommender, dataset: Dataset, split: Split, out_dir: Path) -> dict[str, str]:
    """Write what the pyfunc model serves from: the model's servable form and the shared arrays.

    Args:
        model: The trained model (any device, any family).
        dataset: The dataset (raw ids; all its interactions count as seen).
        split: The split (training popularity for the fallback).
        out_dir: Folder to write into (created).

    Returns:
        MLflow ``artifacts`` mapping: artifact name -> file or folder path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "servable": out_dir / "servable",
        "seen_items": out_dir / "seen_items.npz",
        "id_maps": out_dir / "id_maps.npz",
        "popularity": out_dir / "popularity.npy",
    }
    model.export().save(paths["servable"])
    explainer = explainer_of(model, dataset)
    if explainer is not None:
        paths["explainer"] = explainer.save(out_dir / "explainer")
    indptr, indices = seen_csr(dataset.user, dataset.item, dataset.num_users)
    np.savez(paths["seen_items"], indptr=indptr, indices=indices)
    np.savez(paths["id_maps"], user_ids=_id_array(dataset.user_ids), item_ids=_id_array(dataset.item_ids))
    counts = np.bincount(split.train[:, 1], minlength=dataset.num_items)
    popularity = np.argsort(-counts, kind="stable").astype(np.int64)
    np.save(paths["popularity"], np.stack([popularity, counts[popularity]]))
    return {name: str(path) for name, path in paths.items()}


def explainer_of(model: Recommender, dataset: Dataset) -> KGExplainer | None:
    """The model's explainer with the dataset's raw entity ids and relation names, or ``None``."""
    make = getattr(model, "explainer", None)
    if make is None:
        return None
    import dataclasses

    explainer: KGExplainer = make()
    entity_ids = dataset.entity_ids if dataset.entity_ids is not None else dataset.item_ids
    item_names = [str(i) for i in dataset.item_ids]  # items by their raw item id, not their KG entity id
    names = item_names + [str(e) for e in np.asarray(entity_ids)[len(item_names) :]]
    return dataclasses.replace(
        explainer, entity_names=tuple(names), relation_names=tuple(dataset.relation_names)
    )


def sample_explanations(
    explainer: KGExplainer, servable: Servable, dataset: Dataset, *, users: int = 20, k: int = 5, top: int = 3
) -> list[dict[str, Any]]:
    """Explanations of the top-``k`` recommendations of the first ``users`` users, for an artifact.

    Returns:
        One record per (user, item): raw ``user``, ``rank``, raw ``item``, ``score`` and ``paths`` (the
        :meth:`~models.kgat.KGExplainer.describe` lines, strongest first).
    """
    indptr, indices = seen_csr(dataset.user, dataset.item, dataset.num_users)
    chosen = np.arange(min(users, dataset.num_users), dtype=np.int64)
    items, scores = _chunked_top_k(servable.score_users, chosen, indptr, indices, k)
    out = []
    for row, user in enumerate(chosen.tolist()):
        ranked = [int(i) for i in items[row] if i >= 0]
        for rank, (item, paths) in enumerate(zip(ranked, explainer.explain(user, ranked, top), strict=True)):
            out.append(
                {
                    "user": dataset.user_ids[user].item(),
                    "rank": rank + 1,
                    "item": dataset.item_ids[item].item(),
                    "score": float(scores[row, rank]),
                    "paths": [explainer.describe(p) for p in paths],
                }
            )
    return out


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
    """The pyfunc signature: optional ``user``, ``history``, ``k`` in; ``user, rank, item, score,...`` out.

    A frame may mix rows with a ``user`` and rows with only a ``history`` (or a ``k`` on some rows only): the
    missing cells arrive as NaN, which pandas stores in a float column, and MLflow refuses a float column
    with NaN where the signature says ``long``. So integer user ids and ``k`` are declared ``Any``, and
    :meth:`ServedRecommender.predict` checks them itself (a bad ``k`` is still an HTTP 400).
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    user_type, item_type = _mlflow_type(user_ids), _mlflow_type(item_ids)
    inputs = Schema(
        [
            ColSpec(AnyType() if user_type == "long" else user_type, "user", required=False),
            ColSpec("string", "history", required=False),
            ColSpec(AnyType(), "k", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(user_type, "user"),
            ColSpec("long", "rank"),
            ColSpec(item_type, "item"),
            ColSpec("double", "score"),
            ColSpec("boolean", "fallback"),
        ]
    )
    params = ParamSchema([ParamSpec("k", "long", DEFAULT_K), ParamSpec("explain", "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "numpy", "pandas", "torch", "torch-geometric")]


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
    if "explainer" in artifacts:  # a sample of explained recommendations, readable in the run's artifacts
        from models.kgat import KGExplainer
        from models.serving import load_servable

        sample = sample_explanations(
            KGExplainer.load(artifacts["explainer"]), load_servable(artifacts["servable"]), dataset
        )
        mlflow.log_dict({"explanations": sample}, "explanations/sample_users.json")
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
                python_model=ServedRecommender(),
                artifacts=artifacts,
                signature=recommender_signature(dataset.user_ids, dataset.item_ids),
                pip_requirements=_pip_requirements(),
                registered_model_name=registered_model_name,
                tags=dict(tags or {}),
            )
    finally:
        pyfunc_logger.setLevel(level)


class ServedRecommender(PythonModel):
    """MLflow pyfunc model: top-K unseen items per raw user id or per history, with a popularity fallback.

    See the module docstring for the input and output columns, new users and the fallback.
    """

    def load_context(self, context: Any) -> None:
        """Load the exported arrays (``context.artifacts`` maps names to local paths)."""
        self._load(context.artifacts)

    def _load(self, artifacts: Mapping[str, str]) -> None:
        from models.serving import EmbeddingServable, load_servable

        self.servable: Servable
        if "servable" in artifacts:
            self.servable = load_servable(artifacts["servable"])
        else:  # versions registered before servables: two embedding tables
            import torch

            emb = np.load(artifacts["embeddings"])
            self.servable = EmbeddingServable(
                torch.from_numpy(emb["user_emb"]), torch.from_numpy(emb["item_emb"])
            )
        seen = np.load(artifacts["seen_items"])
        self.indptr, self.indices = seen["indptr"], seen["indices"]
        ids = np.load(artifacts["id_maps"])
        self.user_ids, self.item_ids = ids["user_ids"], ids["item_ids"]
        pop = np.load(artifacts["popularity"])
        self.popular, self.popular_counts = pop[0], pop[1]
        self._index = {_id_key(u, self.user_ids): i for i, u in enumerate(self.user_ids.tolist())}
        self._item_index = {_id_key(i, self.item_ids): n for n, i in enumerate(self.item_ids.tolist())}
        self.explainer: KGExplainer | None = None
        if "explainer" in artifacts:
            from models.kgat import KGExplainer

            self.explainer = KGExplainer.load(artifacts["explainer"])

    def _key(self, raw: Any) -> str:
        return _id_key(raw, self.user_ids)

    def _as_given(self, raw: Any) -> Any:
        """A raw user id as the caller meant it (a missing one, NaN in a mixed frame, is ``None``).

        An integer id that a float column turned into ``3.0`` is ``3`` again.
        """
        if raw is None or (np.ndim(raw) == 0 and pd.isna(raw)):
            return None
        if (
            self.user_ids.dtype.kind in "iu"
            and isinstance(raw, (float, np.floating))
            and float(raw).is_integer()
        ):
            return int(raw)
        return raw

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
        return self.servable.score_users(internal).astype(np.float64)

    def score_histories_raw(self, histories: Any) -> np.ndarray:
        """Scores of every item of this model for new users given as raw item ids, seen items not masked.

        The promotion gate uses this to re-evaluate a champion on a challenger's cold-users split: a held-out
        user is scored from its revealed history by the model's own new-user rule, as the challenger was.

        Args:
            histories: One sequence of raw item ids per user (or comma-separated text).

        Returns:
            float64 ``[B, I]`` with ``I = len(self.item_ids)``.

        Raises:
            BadRecommendationInput: an empty history, or items this model does not know.
        """
        lists = [self.history_items(history, row) for row, history in enumerate(histories)]
        lengths = np.array([len(items) for items in lists], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
        return np.asarray(self.servable.score_history(indptr, items), dtype=np.float64)

    def history_items(self, history: Any, row: int | None = None) -> np.ndarray:
        """Internal item ids of a raw history (comma-separated text or a list); duplicates dropped.

        ``None`` (or a float NaN, how a JSON null arrives) is "no history" and gives an empty array.

        Args:
            history: The raw history.
            row: Its row in the input, named in messages.

        Raises:
            BadRecommendationInput: a history given but empty, or naming items this model does not know.
        """
        if history is None or (isinstance(history, float) and np.isnan(history)):
            return np.zeros(0, dtype=np.int64)
        where = "" if row is None else f" (row {row})"
        tokens = (
            [t.strip() for t in history.split(",") if t.strip()]
            if isinstance(history, str)
            else list(history)
        )
        if not tokens:
            raise BadRecommendationInput(
                f"the history{where} is empty: give at least one raw item id (comma-separated), or no "
                "history at all for the popularity fallback"
            )
        keys = [_id_key(t, self.item_ids) for t in tokens]
        unknown = [t for t, key in zip(tokens, keys, strict=True) if key not in self._item_index]
        if unknown:
            shown = ", ".join(str(t) for t in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise BadRecommendationInput(
                f"history item(s) {shown}{where} are not in this model's catalogue of {len(self.item_ids)} "
                "items; pass raw item ids the model was trained on"
            )
        return np.unique(np.array([self._item_index[k] for k in keys], dtype=np.int64))

    # A DataFrame hint is one MLflow does not derive a signature from: the explicit signature applies.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Recommend for every row of ``model_input``.

        Args:
            context: MLflow context (unused; arrays are loaded in :meth:`load_context`).
            model_input: DataFrame with column ``user`` (raw ids) and/or ``history`` (raw item ids), and
                optional ``k``; a list or a dict of lists is turned into one.
            params: Optional ``{"k": K}`` (default 10), used where a row has no ``k``, and
                ``{"explain": True}`` for an ``explanation`` column (see the module docstring).

        Returns:
            Columns ``user, rank, item, score, fallback``, ``k`` rows per input row in rank order (fewer
            when fewer unseen items remain).

        Raises:
            ValueError: on a frame with neither column or ``k < 1``.
            BadRecommendationInput: an empty history or an unknown history item (a ``ValueError`` too).
            MlflowException: ``explain`` asked of a model that cannot explain.
        """
        explain = bool((params or {}).get("explain", False))
        if explain and getattr(self, "explainer", None) is None:
            raise MlflowException(
                "this model cannot explain its recommendations (only knowledge-graph models such as kgat "
                "export an explainer); ask without explain",
                error_code=INVALID_PARAMETER_VALUE,
            )
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "user" not in frame.columns and "history" not in frame.columns:
            raise ValueError(
                "the input needs a 'user' column of raw user ids or a 'history' column of raw item ids, "
                f"got columns {list(frame.columns)}"
            )
        given_k = (params or {}).get("k")
        default_k = check_k(DEFAULT_K if given_k is None else given_k, len(self.item_ids))
        n = len(frame)
        ks = np.full(n, default_k, dtype=np.int64)
        if "k" in frame.columns:
            given = frame["k"].notna().to_numpy()
            for value in frame["k"][given]:
                check_k(value, len(self.item_ids))
            column = pd.to_numeric(frame["k"], errors="coerce").to_numpy(dtype=np.float64)
            ks = np.where(given, column, default_k).astype(np.int64)
        raw_users = (
            [self._as_given(u) for u in frame["user"].tolist()] if "user" in frame.columns else [None] * n
        )
        histories = (
            [self.history_items(h, row) for row, h in enumerate(frame["history"].tolist())]
            if "history" in frame.columns
            else [np.zeros(0, np.int64)] * n
        )
        internal = np.array(
            [-1 if u is None else self._index.get(self._key(u), -1) for u in raw_users], dtype=np.int64
        )
        has_history = np.array([len(h) > 0 for h in histories], dtype=bool)
        known = (internal >= 0) & ~has_history
        fallback = ~known & ~has_history
        max_k = int(ks.max()) if n else 0
        items = np.full((n, max_k), -1, dtype=np.int64)
        scores = np.full((n, max_k), -np.inf)
        if known.any():
            items[known], scores[known] = _chunked_top_k(
                self.servable.score_users, internal[known], self.indptr, self.indices, max_k
            )
        if has_history.any():
            rows = np.nonzero(has_history)[0]
            lists = [histories[r] for r in rows]
            lengths = np.array([len(h) for h in lists], dtype=np.int64)
            hist_indptr = np.concatenate([[0], np.cumsum(lengths)])
            masks = []
            for r, h in zip(rows, lists, strict=True):
                u = internal[r]
                masks.append(h if u < 0 else np.union1d(h, self.indices[self.indptr[u] : self.indptr[u + 1]]))
            hist_scores = self.servable.score_history(hist_indptr, np.concatenate(lists))
            items[rows], scores[rows] = mask_and_top_k(hist_scores, masks, max_k)
        if fallback.any():
            total = max(int(self.popular_counts.sum()), 1)
            items[fallback] = self.popular[:max_k]
            scores[fallback] = self.popular_counts[:max_k] / total
        rank = np.tile(np.arange(1, max_k + 1), (n, 1))
        keep = (rank <= ks[:, None]) & (items >= 0)
        rows_out = np.nonzero(keep)[0]
        users_out = [raw_users[r] for r in rows_out]
        out = pd.DataFrame(
            {
                # object where history rows give None: integer ids beside it must not turn into floats
                "user": pd.Series(users_out, dtype=object if None in users_out else None),
                "rank": rank[keep].astype(np.int64),
                "item": self.item_ids[items[keep]],
                "score": scores[keep].astype(np.float64),
                "fallback": fallback[rows_out],
            },
            columns=list(OUTPUT_COLUMNS),
        )
        if explain:
            out["explanation"] = self._explanations(internal, known, items, keep)
        return out

    def _explanations(
        self, internal: np.ndarray, known: np.ndarray, items: np.ndarray, keep: np.ndarray
    ) -> list[str]:
        """The ``explanation`` of every output row: known users' paths, ``""`` for the others."""
        assert self.explainer is not None
        out: list[str] = []
        for row in range(len(internal)):
            ranked = [int(i) for i in items[row][keep[row]]]
            if not known[row]:
                out.extend([""] * len(ranked))
                continue
            for paths in self.explainer.explain(int(internal[row]), ranked):
                out.append(" | ".join(self.explainer.describe(p) for p in paths))
        return out


EmbeddingRecommender = ServedRecommender
"""The name versions registered before servables were pickled under (they load through the same class)."""


def _id_key(raw: Any, ids: np.ndarray) -> str:
    """Normalise a raw id from any transport (JSON float 3.0, string "3", numpy int) to one key."""
    if ids.dtype.kind in "iu":
        try:
            as_float = float(raw)
        except (TypeError, ValueError):
            return str(raw)
        if as_float.is_integer():
            return str(int(as_float))
    return str(raw)
