"""Servable forms of trained recommenders: what the MLflow pyfunc loads and scores with in a fresh process.

:meth:`models.base.Recommender.export` returns one of these; :func:`load_servable` reads one back from a
folder. Three families cover every model:

* :class:`EmbeddingServable`: final user and item embeddings (two float32 tables); new users are folded in
  (:func:`models.base.fold_in`).
* :class:`ItemItemServable`: a sparse item-item weight matrix with at most ``N`` neighbours per item (never a
  dense ``I x I``) and the training interactions of known users; ``scores = history @ W``.
* :class:`ModuleServable`: the network itself (GraphSAGE, PinSage, GAT...), saved with ``torch.save`` and
  scored by the model's own :meth:`~models.base.Recommender.score_users` /
  :meth:`~models.base.Recommender.score_history`.

Every servable takes and returns numpy arrays; torch is a dependency of the served model.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from models.base import History, fold_in, item_gram

if TYPE_CHECKING:
    from models.base import Recommender

_MANIFEST = "servable.json"


def _history(indptr: np.ndarray, items: np.ndarray) -> History:
    return History(torch.as_tensor(indptr, dtype=torch.long), torch.as_tensor(items, dtype=torch.long))


class Servable(ABC):
    """Scores of known users and of new users described by a history, over the model's items.

    Attributes:
        kind: The manifest key :func:`load_servable` dispatches on.
        num_items: I, the width of every score matrix.
    """

    kind: ClassVar[str]
    num_items: int

    @abstractmethod
    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores ``[B, I]`` (float32) of known internal user ids ``[B]``; seen items are not masked."""

    @abstractmethod
    def score_history(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores ``[B, I]`` (float32) of new users given as a CSR history over internal item ids."""

    @abstractmethod
    def _save(self, folder: Path) -> dict[str, Any]:
        """Write the arrays into ``folder``; return extra manifest entries."""

    @classmethod
    @abstractmethod
    def _load(cls, folder: Path, manifest: dict[str, Any]) -> Servable:
        """Read what :meth:`_save` wrote."""

    def save(self, folder: Path) -> Path:
        """Write this servable into ``folder`` (created) with its manifest; return the folder."""
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"kind": self.kind, "num_items": self.num_items, **self._save(folder)}
        (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        return folder


class EmbeddingServable(Servable):
    """Two embedding tables; scores are dot products, new users are folded in.

    Args:
        user_emb: ``[U, d]``.
        item_emb: ``[I, d]``.
    """

    kind = "embedding"

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> None:
        self.user_emb = user_emb.float()
        self.item_emb = item_emb.float()
        self.num_items = int(item_emb.shape[0])
        self._gram: torch.Tensor | None = None  # V^T V, computed at the first new user and kept

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Dot products of the users' rows with every item."""
        rows = self.user_emb[torch.as_tensor(users, dtype=torch.long)]
        return (rows @ self.item_emb.T).numpy()

    def score_history(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Fold-in vectors (:func:`models.base.fold_in`) dotted with every item."""
        if self._gram is None:
            self._gram = item_gram(self.item_emb)
        users = fold_in(self.item_emb, _history(indptr, items), gram=self._gram)
        return (users @ self.item_emb.T).numpy()

    def _save(self, folder: Path) -> dict[str, Any]:
        np.savez(folder / "embeddings.npz", user_emb=self.user_emb.numpy(), item_emb=self.item_emb.numpy())
        return {"dim": int(self.item_emb.shape[1])}

    @classmethod
    def _load(cls, folder: Path, manifest: dict[str, Any]) -> EmbeddingServable:
        arrays = np.load(folder / "embeddings.npz")
        return cls(torch.from_numpy(arrays["user_emb"]), torch.from_numpy(arrays["item_emb"]))


class ItemItemServable(Servable):
    """A sparse item-item model: ``score(user) = history(user) @ W`` with ``W`` CSR ``[I, I]``.

    Args:
        weights: Sparse CSR ``[I, I]`` (row ``j`` holds the items that item ``j`` recommends).
        user_indptr: Training history of known users, CSR row pointer ``[U + 1]``.
        user_items: Its column indices ``[nnz]``.
    """

    kind = "item-item"

    def __init__(self, weights: torch.Tensor, user_indptr: torch.Tensor, user_items: torch.Tensor) -> None:
        self.weights = weights.to_sparse_csr().float()
        self.user_indptr = user_indptr.long()
        self.user_items = user_items.long()
        self.num_items = int(weights.shape[0])

    def _scores(self, history: History) -> np.ndarray:
        dense = history.to_dense(self.num_items)
        # (W^T H^T)^T = H W with the sparse operand on the left, as torch.sparse.mm requires.
        return torch.sparse.mm(self.weights.t().to_sparse_csr(), dense.T).T.contiguous().numpy()

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores from the known users' training histories."""
        idx = torch.as_tensor(users, dtype=torch.long)
        starts, ends = self.user_indptr[idx], self.user_indptr[idx + 1]
        lengths = ends - starts
        indptr = torch.zeros(len(idx) + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(lengths, 0)
        offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(indptr[:-1], lengths)
        items = self.user_items[torch.repeat_interleave(starts, lengths) + offsets]
        return self._scores(History(indptr, items))

    def score_history(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores straight from the given history (no fold-in needed)."""
        return self._scores(_history(indptr, items))

    def _save(self, folder: Path) -> dict[str, Any]:
        w = self.weights
        np.savez(
            folder / "item_item.npz",
            crow=w.crow_indices().numpy(),
            col=w.col_indices().numpy(),
            values=w.values().numpy(),
            user_indptr=self.user_indptr.numpy(),
            user_items=self.user_items.numpy(),
        )
        return {"nnz": int(w.values().numel())}

    @classmethod
    def _load(cls, folder: Path, manifest: dict[str, Any]) -> ItemItemServable:
        a = np.load(folder / "item_item.npz")
        n = int(manifest["num_items"])
        with warnings.catch_warnings():  # written by _save from a valid CSR: no need to re-check it
            warnings.filterwarnings("ignore", message="Sparse")
            weights = torch.sparse_csr_tensor(
                torch.from_numpy(a["crow"]),
                torch.from_numpy(a["col"]),
                torch.from_numpy(a["values"]),
                (n, n),
                check_invariants=False,
            )
        return cls(weights, torch.from_numpy(a["user_indptr"]), torch.from_numpy(a["user_items"]))


class ModuleServable(Servable):
    """The trained network itself, scored by its own ``score_users`` / ``score_history`` on the CPU.

    Args:
        model: The trained recommender (moved to the CPU; graph buffers travel with it).
    """

    kind = "module"

    def __init__(self, model: Recommender) -> None:
        self.model = model.cpu().eval()
        self.num_items = int(model.num_items)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """The model's :meth:`~models.base.Recommender.score_users`."""
        with self.model.inference():
            return self.model.score_users(torch.as_tensor(users, dtype=torch.long)).float().numpy()

    def score_history(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The model's :meth:`~models.base.Recommender.score_history`."""
        with self.model.inference():
            return self.model.score_history(_history(indptr, items)).float().numpy()

    def _save(self, folder: Path) -> dict[str, Any]:
        torch.save(self.model, folder / "model.pt")
        return {"model": self.model.name, "hparams": self.model.hparams}

    @classmethod
    def _load(cls, folder: Path, manifest: dict[str, Any]) -> ModuleServable:
        import models.registry  # noqa: F401  (the pickled module's class must be importable)

        # Our own file written by _save; the pickled model needs a full unpickle.
        model = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
        return cls(model)


_KINDS: dict[str, type[Servable]] = {
    cls.kind: cls for cls in (EmbeddingServable, ItemItemServable, ModuleServable)
}


def load_servable(folder: str | Path) -> Servable:
    """Read a servable written by :meth:`Servable.save`.

    Raises:
        FileNotFoundError: when the folder has no manifest.
        ValueError: for an unknown kind.
    """
    folder = Path(folder)
    manifest = json.loads((folder / _MANIFEST).read_text())
    kind = manifest.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{folder} holds a servable of unknown kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind]._load(folder, manifest)
