"""The one interface every recommender implements, and the name -> class registry.

Training, evaluation, tuning and serving only ever talk to :class:`Recommender`: they build a model with
:meth:`Recommender.from_graphs`, ask it for :meth:`~Recommender.embeddings` and :meth:`~Recommender.score`,
and train it with :meth:`~Recommender.loss`. None of them branches on a model's name; a new model is one new
file with a ``@register_model`` class and one import line in ``models/registry.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor, nn

from models.losses import LossName, batch_l2, ranking_loss

if TYPE_CHECKING:
    from models.graphs import Graphs


class Trial(Protocol):
    """The part of ``optuna.trial.Trial`` a search space uses (so ``models/`` never imports Optuna)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """Suggest a float in ``[low, high]``."""
        ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        """Suggest an int in ``[low, high]``."""
        ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """Suggest one of ``choices``."""
        ...


class Recommender(nn.Module, ABC):
    """A recommender over ``num_users`` users and ``num_items`` items that ranks by embedding scores.

    Subclasses set ``name``, build their parameters in ``__init__`` (plain values only, ending with
    :meth:`reset_parameters`), call :meth:`_record_hparams` with their hyperparameters, and implement
    :meth:`embeddings` and :meth:`layer0_embeddings`. The default :meth:`score` is the dot product and the
    default :meth:`loss` is BPR (or sampled softmax) with L2 on the batch's layer-0 embeddings.

    Attributes:
        name: Registry key, lowercase (``"lightgcn"``).
        num_users: U.
        num_items: I.
        embedding_dim: Width of the layer-0 embeddings.
        reg_weight: Coefficient of the batch L2 term in :meth:`loss`.
    """

    name: ClassVar[str]

    def __init__(self, num_users: int, num_items: int, embedding_dim: int, reg_weight: float) -> None:
        super().__init__()
        if num_users <= 0 or num_items <= 0:
            raise ValueError(f"need at least one user and one item, got {num_users} users, {num_items} items")
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be non-negative, got {reg_weight}")
        self.num_users = num_users
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self._hparams: dict[str, Any] = {}

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_graphs(cls: type[RecommenderT], graphs: Graphs, **hparams: Any) -> RecommenderT:
        """Build the model for the graphs of a split, literature defaults overridden by ``hparams``.

        Graph models override this to take their adjacency from ``graphs``.

        Args:
            graphs: The training graphs (only their sizes are used here).
            **hparams: Hyperparameters; unknown names raise ``TypeError`` naming the accepted ones.

        Returns:
            A freshly initialised model on the CPU.
        """
        return cls(num_users=graphs.num_users, num_items=graphs.num_items, **cls.resolve_hparams(hparams))

    @classmethod
    def resolve_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """:meth:`default_hparams` overridden by ``hparams``.

        Raises:
            TypeError: naming the unknown hyperparameters and listing the accepted ones.
        """
        defaults = cls.default_hparams()
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise TypeError(
                f"{cls.name} does not take hyperparameter(s) {unknown}; "
                f"it takes: {', '.join(sorted(defaults))}."
            )
        return {**defaults, **hparams}

    @classmethod
    @abstractmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The literature defaults, one entry per constructor hyperparameter."""

    @staticmethod
    @abstractmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Hyperparameters suggested by an Optuna-style ``trial`` (same keys as :meth:`default_hparams`)."""

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (subclasses extend this)."""

    def _record_hparams(self, **hparams: Any) -> None:
        self._hparams = dict(hparams)

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyperparameters this instance was built with (JSON-friendly values)."""
        return dict(self._hparams)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hparams.items())
        return f"{type(self).__name__}({self.num_users} users, {self.num_items} items, {args})"

    # -- forward ----------------------------------------------------------------------------------------

    @abstractmethod
    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final (propagated) user and item embeddings, used both for training and for ranking.

        Returns:
            ``(user_emb, item_emb)``.

        Shapes:
            user_emb ``[U, d_out]``, item_emb ``[I, d_out]``.
        """

    @abstractmethod
    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The trainable input (layer-0, "ego") embedding tables that the batch L2 term penalises.

        Shapes:
            ``[U, d]`` and ``[I, d]``.
        """

    def score(self, user_emb: Tensor, item_emb: Tensor) -> Tensor:
        """Scores of every item for a chunk of users (higher ranks first).

        Args:
            user_emb: Rows of :meth:`embeddings`' users for the chunk.
            item_emb: All (or some) item embeddings.

        Returns:
            The score matrix.

        Shapes:
            user_emb ``[B, d]``, item_emb ``[I, d]`` -> ``[B, I]``.
        """
        return user_emb @ item_emb.T

    def pair_score(self, user_emb: Tensor, item_emb: Tensor) -> Tensor:
        """Scores of given (user, item) pairs; must agree with :meth:`score`.

        Shapes:
            user_emb ``[B, d]``, item_emb ``[B, d]`` -> ``[B]``, or ``[B, K, d]`` -> ``[B, K]``.
        """
        if item_emb.dim() == 3:
            return (user_emb.unsqueeze(1) * item_emb).sum(-1)
        return (user_emb * item_emb).sum(-1)

    def loss(
        self,
        users: Tensor,
        pos: Tensor,
        neg: Tensor,
        *,
        loss: LossName = "bpr",
        temperature: float = 0.2,
    ) -> Tensor:
        """Training loss of a batch: ranking loss on final embeddings + ``reg_weight`` x batch L2 on layer 0.

        Args:
            users: User of each training pair.
            pos: Its positive item.
            neg: Negative items drawn for it (one column per negative).
            loss: ``"bpr"`` (``mean softplus(s_neg - s_pos)``) or ``"softmax"`` (sampled softmax / InfoNCE
                of the positive against its negatives at ``temperature``).
            temperature: Softmax temperature.

        Returns:
            A scalar.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]``.
        """
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [B, 1 + K]: one gather for all items
        user_emb, item_emb = self.embeddings()
        scores = self.pair_score(gather_rows(user_emb, users), gather_rows(item_emb, items))
        out = ranking_loss(scores[:, 0], scores[:, 1:], loss=loss, temperature=temperature)
        if self.reg_weight > 0:
            user0, item0 = self.layer0_embeddings()
            out = out + self.reg_weight * batch_l2(
                gather_rows(user0, users), gather_rows(item0, items), batch_size=users.numel()
            )
        return out


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for an index of any shape, with a deterministic gradient on CPU.

    Advanced indexing with a 2-D index accumulates its gradient in a thread-dependent order on CPU (runs
    with the same seed then differ in the last bits); ``index_select`` on the flattened index does not.

    Shapes:
        table ``[N, d]``, index ``[*]`` -> ``[*, d]``.
    """
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])


RecommenderT = TypeVar("RecommenderT", bound=Recommender)

MODELS: dict[str, type[Recommender]] = {}
"""Registry from model name to class, filled by :func:`register_model` (see ``models/registry.py``)."""


class UnknownModelError(ValueError):
    """A model name that is not in the registry; the message lists the registered names."""


def register_model(cls: type[RecommenderT]) -> type[RecommenderT]:
    """Class decorator: add a :class:`Recommender` subclass to :data:`MODELS` under its ``name``.

    Raises:
        ValueError: when the class has no ``name`` or another class already took it.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} must set a non-empty class attribute `name` to be registered")
    existing = MODELS.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"model name '{name}' is taken by {existing.__qualname__}")
    MODELS[name] = cls
    return cls


def lookup_model(name: str, registry: dict[str, type[Recommender]] | None = None) -> type[Recommender]:
    """The class registered under ``name`` (case-insensitive).

    Raises:
        UnknownModelError: naming the unknown model and listing the known ones.
    """
    table = MODELS if registry is None else registry
    cls = table.get(name.lower())
    if cls is None:
        known = ", ".join(sorted(table)) or "(none registered)"
        raise UnknownModelError(f"Unknown model '{name}'. Available models: {known}.")
    return cls


ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(users [B], items [B, P]) -> scores [B, P]``, as hard-negative samplers take it."""


def pair_score_fn(model: Recommender) -> ScoreFn:
    """A no-grad ``score_fn`` for hard-negative samplers, computing the model's embeddings once.

    Args:
        model: The model being trained.

    Returns:
        A function scoring candidate items of given users with the embeddings of this moment.
    """
    with torch.no_grad():
        user_emb, item_emb = model.embeddings()

    def score_fn(users: Tensor, items: Tensor) -> Tensor:
        with torch.no_grad():
            return model.pair_score(gather_rows(user_emb, users), gather_rows(item_emb, items))

    return score_fn
