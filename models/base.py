"""The one contract every recommender implements, and the name -> class registry.

Training, evaluation, tuning and serving only ever talk to :class:`Recommender`; none of them branches on
a model's name. A model declares what it needs from the data (:attr:`Recommender.requires`) and what it can
do (:attr:`~Recommender.inductive_users`, :attr:`~Recommender.closed_form`, ...); the pipeline reads these
flags and refuses a mismatch before any work starts (:func:`unmet_requirements`).

The contract, by path:

* **Scoring** (every model): :meth:`Recommender.score_users` gives ``[B, I]`` scores of known users;
  :meth:`Recommender.score_history` scores users unseen in training from the items they interacted with
  (a :class:`History`). Inside ``with model.inference():`` expensive work (propagation, item towers) is
  done once and reused by every call. The dot product is one implementation
  (:class:`EmbeddingRecommender`), not the contract.
* **SGD path** (``closed_form = False``): :meth:`Recommender.loss` of a batch of (user, positive,
  negatives), with the hooks :meth:`~Recommender.on_epoch_start` (a seeded generator for the model's own
  sampling: random walks, sub-graphs) and :meth:`~Recommender.training_negatives` (model-chosen hard
  negatives).
* **Closed-form path** (``closed_form = True``): :meth:`Recommender.fit` computes the model from the
  training graph; no optimiser, no epochs.
* **Export**: :meth:`Recommender.export` returns a :class:`models.serving.Servable`, the compact form the
  MLflow pyfunc loads in a fresh process (embeddings, sparse item-item neighbours, or the network itself).

A new model is one new file with a ``@register_model`` class and one import line in ``models/registry.py``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar, get_args

import torch
from torch import Tensor, nn

from models.losses import LossName, batch_l2, ranking_loss

if TYPE_CHECKING:
    from models.graphs import Graphs
    from models.serving import Servable

Requirement = Literal["user_item", "user_features", "item_features", "social", "kg", "timestamps"]
"""What a model may need from the data: the user-item graph, feature tensors, the social graph, a KG,
interaction timestamps (:attr:`models.graphs.Graphs.ui_edge_age`)."""

REQUIREMENTS: tuple[str, ...] = get_args(Requirement)

_REQUIREMENT_TEST: dict[str, Callable[[Graphs], bool]] = {
    "user_item": lambda g: g.ui_edge_index.numel() > 0,
    "user_features": lambda g: g.user_features is not None and g.user_features.shape[1] > 0,
    "item_features": lambda g: g.item_features is not None and g.item_features.shape[1] > 0,
    "social": lambda g: g.social_edge_index is not None and g.social_edge_index.numel() > 0,
    "kg": lambda g: g.kg_edge_index is not None and g.kg_edge_index.numel() > 0,
    "timestamps": lambda g: g.ui_edge_age is not None,
}

_REQUIREMENT_HINT = {
    "user_item": "the training part has no interactions",
    "user_features": "the dataset has no user features (e.g. MovieLens u.user, a CSV user table)",
    "item_features": "the dataset has no item features (e.g. MovieLens genres, Last.fm tags)",
    "social": "the dataset has no social graph (e.g. Last.fm user_friends.dat, a RecBole .net file)",
    "kg": "the dataset has no knowledge graph (e.g. a RecBole .kg file, MovieLens item attributes)",
    "timestamps": "the dataset's interactions have no timestamps (MovieLens u.data has them; a CSV needs "
    "a timestamp column)",
}


#: The training settings of the hand-found recipe (HetRec Last.fm, benchmarks/RESULTS.md, fourth round):
#: what :meth:`Recommender.search_prior` starts every SGD model from.
SGD_PRIOR_TRAIN: dict[str, Any] = {
    "negative_sampler": "hard",
    "sampler_pool_size": 32,
    "num_negatives": 1,
    "loss": "bpr",
    "sampling": "pairs",
    "batch_size": 2048,
    "lr_scale": 1.0,
}


@dataclass(frozen=True)
class SearchPrior:
    """A known-good point of a model's search: the first trial a study evaluates.

    Attributes:
        hparams: Model hyperparameters (names of :meth:`Recommender.search_space`); those not given take
            :meth:`Recommender.default_hparams` where the space allows them.
        train: Training settings (names of :meth:`Recommender.train_space`).
    """

    hparams: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class History:
    """Interactions of users unseen in training, given at inference time (CSR over internal item ids).

    Attributes:
        indptr: ``items[indptr[b]:indptr[b + 1]]`` are user ``b``'s items, long ``[B + 1]``.
        items: Internal item ids, long ``[nnz]``.
        user_features: Optional encoded features of the new users, float ``[B, F_u]``.
    """

    indptr: Tensor
    items: Tensor
    user_features: Tensor | None = None

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]], *, user_features: Tensor | None = None) -> History:
        """A history from one list of internal item ids per user (duplicates are kept once)."""
        rows = [sorted({int(i) for i in items}) for items in lists]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        indptr = torch.zeros(len(rows) + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(lengths, 0)
        flat = torch.tensor([i for r in rows for i in r], dtype=torch.long)
        return cls(indptr=indptr, items=flat, user_features=user_features)

    def __len__(self) -> int:
        return int(self.indptr.numel()) - 1

    @property
    def rows(self) -> Tensor:
        """The row (user position) of every entry of :attr:`items`, long ``[nnz]``."""
        lengths = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(len(self), device=self.items.device), lengths)

    def to(self, device: torch.device | str) -> History:
        """This history on ``device``."""
        feats = None if self.user_features is None else self.user_features.to(device)
        return History(self.indptr.to(device), self.items.to(device), feats)

    def to_dense(self, num_items: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The binary interaction matrix ``[B, num_items]``."""
        out = torch.zeros(len(self), num_items, dtype=dtype, device=self.items.device)
        out[self.rows, self.items] = 1
        return out


class Recommender(nn.Module, ABC):
    """A recommender over ``num_users`` users and ``num_items`` items (see the module docstring).

    Subclasses set ``name`` and the capability flags, build their parameters in ``__init__`` (plain values
    only, ending with :meth:`reset_parameters`), call :meth:`_record_hparams` with their hyperparameters, and
    implement :meth:`default_hparams`, :meth:`search_space`, :meth:`score_users`, :meth:`score_history` and
    either :meth:`loss` (SGD) or :meth:`fit` (closed form).

    Attributes:
        name: Registry key, lowercase (``"lightgcn"``).
        family: What kind of model it is, for listings (``"embedding"``, ``"graph"``, ``"item-item"``...).
        requires: What the model needs from the data (:data:`Requirement` names).
        inductive_users: Users unseen in training are embedded by the model's network from their history.
        inductive_items: Items unseen in training are scored from their features (and side information).
        closed_form: Computed by :meth:`fit`, not trained by SGD.
        data_parallel: Several processes can train it together (``torch.distributed``): each takes a shard
            of the training pairs and the gradients are averaged. True for the SGD models, whose loss is a
            mean over independent (user, positive, negatives) rows; a closed-form model has no gradient to
            average, and a model whose training cannot be split into such rows sets it False.
        new_users: One line saying how a user unseen in training is scored.
        num_users: U.
        num_items: I.
    """

    name: ClassVar[str]
    family: ClassVar[str] = "embedding"
    requires: ClassVar[frozenset[str]] = frozenset({"user_item"})
    inductive_users: ClassVar[bool] = False
    inductive_items: ClassVar[bool] = False
    closed_form: ClassVar[bool] = False
    data_parallel: ClassVar[bool] = True
    new_users: ClassVar[str] = ""

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        if num_users <= 0 or num_items <= 0:
            raise ValueError(f"need at least one user and one item, got {num_users} users, {num_items} items")
        self.num_users = num_users
        self.num_items = num_items
        self._hparams: dict[str, Any] = {}
        self._inference_cache: Any = None
        self._generator: torch.Generator | None = None

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_graphs(cls: type[RecommenderT], graphs: Graphs, **hparams: Any) -> RecommenderT:
        """Build the model for the graphs of a split, literature defaults overridden by ``hparams``.

        Graph models override this to take their adjacency (and features) from ``graphs``.

        Args:
            graphs: The training graphs (only their sizes are used here).
            **hparams: Hyperparameters; unknown names raise ``TypeError`` naming the accepted ones.

        Returns:
            A freshly initialised model on the CPU.
        """
        return cls(num_users=graphs.num_users, num_items=graphs.num_items, **cls.resolve_hparams(hparams))

    @classmethod
    def requirements(cls, hparams: dict[str, Any]) -> frozenset[str]:
        """What the model needs from the data with these hyperparameters.

        :attr:`requires`, plus what an option adds (PinSage's ``context="older"`` needs timestamps).
        """
        return cls.requires

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

    @classmethod
    def train_space(cls) -> dict[str, list[Any]]:
        """Training settings the tuner searches by default, each a list of choices (the run may override it).

        Keys are fields of the trainer's configuration (``tasks.train.TrainConfig``) or ``lr_scale``, a
        factor on the run's learning rate that moves with the batch size (``tasks.tune.with_train_settings``:
        ``lr = run lr * lr_scale * sqrt(batch_size / run batch size)``, the square-root rule for Adam), so
        that batch size and learning rate are searched together. A closed-form model has no training
        settings: empty. For the SGD models, the settings that mattered by hand on HetRec Last.fm
        (benchmarks/RESULTS.md, "c. Quality on real data"): the negative sampler (hard negatives lifted
        LightGCN's validation NDCG@10 by 4.7%, more than any model hyperparameter), its candidate pool (flat
        between 16 and 64), negatives per positive, the loss, user-first sampling, batch size with the
        learning rate. The initial scale is a model hyperparameter (``init_std``), in the model's own space.
        """
        if cls.closed_form:
            return {}
        return {
            "negative_sampler": ["hard", "uniform", "popularity"],
            "sampler_pool_size": [16, 32, 64],
            "num_negatives": [1, 4],
            "loss": ["bpr", "softmax"],
            "sampling": ["pairs", "users"],
            "batch_size": [1024, 2048, 4096],
            "lr_scale": [0.5, 1.0, 2.0],
        }

    @classmethod
    def search_prior(cls) -> SearchPrior:
        """The known-good point the tuner evaluates first, before it explores (:class:`SearchPrior`).

        The default: the model's default hyperparameters, trained with the recipe found by hand on HetRec
        Last.fm (hard negatives from a pool of 32, BPR with one negative, batch 2048 at the run's learning
        rate); empty for a closed-form model. A model overrides it with what it learnt best with.
        """
        if cls.closed_form:
            return SearchPrior()
        return SearchPrior(train=dict(SGD_PRIOR_TRAIN))

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Everything a listing or a UI shows of the model: family, needs, capabilities, defaults, space."""
        return {
            "name": cls.name,
            "family": cls.family,
            "requires": sorted(cls.requires),
            "inductive_users": cls.inductive_users,
            "inductive_items": cls.inductive_items,
            "closed_form": cls.closed_form,
            "data_parallel": cls.data_parallel,
            "new_users": cls.new_users,
            "defaults": cls.default_hparams(),
            "search_space": describe_search_space(cls),
            "train_space": cls.train_space(),
            "search_prior": dataclasses.asdict(cls.search_prior()),
            "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        }

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

    # -- training: SGD path -----------------------------------------------------------------------------

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Called by the trainer before each epoch (1-based) of the SGD path.

        ``generator`` is the run's seeded generator: a model that samples (random walks, sub-graphs,
        dropout masks of its own) draws from it, never from the global RNG, so runs are reproducible. The
        default keeps it in ``self._generator`` for :meth:`loss` and :meth:`training_negatives`.
        """
        self._generator = generator

    def training_negatives(self, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The negatives a batch trains on: the trainer's ``neg`` ``[B, K]``, or the model's own choice.

        A model with its own negative mining (PinSage's random-walk hard negatives) returns
        ``[B, K']`` here; the default returns ``neg`` unchanged.
        """
        return neg

    def loss(
        self,
        users: Tensor,
        pos: Tensor,
        neg: Tensor,
        *,
        loss: LossName = "bpr",
        temperature: float = 0.2,
    ) -> Tensor:
        """Training loss of a batch of (user, positive, negatives); SGD models implement it.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]`` -> scalar.
        """
        raise NotImplementedError(f"{type(self).__name__} is closed-form: it is computed by fit(), not SGD")

    def candidate_scorer(self) -> ScoreFn:
        """A no-grad ``score_fn(users [B], items [B, P]) -> [B, P]`` for hard-negative samplers.

        Called once per training batch; the default scores the batch's users against every item with
        :meth:`score_users` and gathers the candidates. Embedding models compute embeddings once instead.
        """

        def score_fn(users: Tensor, items: Tensor) -> Tensor:
            with torch.no_grad():
                return self.score_users(users).gather(1, items)

        return score_fn

    # -- training: closed-form path ---------------------------------------------------------------------

    def fit(self, graphs: Graphs) -> None:
        """Compute a closed-form model from the training graph (``closed_form = True`` models)."""
        raise NotImplementedError(f"{type(self).__name__} is trained by SGD (loss()), not fit()")

    # -- scoring ----------------------------------------------------------------------------------------

    def precompute(self) -> Any:
        """Work that :meth:`score_users`/:meth:`score_history` reuse across calls inside :meth:`inference`.

        Embedding models return their propagated embeddings; the default is ``None`` (nothing to reuse).
        """
        return None

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Evaluation mode, no gradients, and :meth:`precompute` done once for every scoring call inside.

        The previous training mode is restored and the cache dropped on exit.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self._inference_cache = self.precompute()
                yield
        finally:
            self._inference_cache = None
            self.train(was_training)

    @property
    def cached(self) -> Any:
        """What :meth:`precompute` returned, inside :meth:`inference`; ``None`` outside."""
        return self._inference_cache

    @abstractmethod
    def score_users(self, users: Tensor) -> Tensor:
        """Scores of every item for known users (higher ranks first); seen items are not masked here.

        Args:
            users: Internal user ids.

        Returns:
            The score matrix.

        Shapes:
            users ``[B]`` -> ``[B, I]``.
        """

    @abstractmethod
    def score_history(self, history: History) -> Tensor:
        """Scores of every item for users unseen in training, described by their interactions.

        Args:
            history: The new users' items (internal ids), and optionally their features.

        Returns:
            The score matrix; how it is computed is the model's :attr:`new_users` line.

        Shapes:
            ``len(history) = B`` -> ``[B, I]``.
        """

    # -- export -----------------------------------------------------------------------------------------

    def export(self) -> Servable:
        """The compact, servable form of the trained model (see :mod:`models.serving`).

        The default keeps the whole network (:class:`models.serving.ModuleServable`).
        """
        from models.serving import ModuleServable

        return ModuleServable(self)


class EmbeddingRecommender(Recommender):
    """A recommender that ranks by the dot product of final user and item embeddings.

    Subclasses implement :meth:`embeddings` and :meth:`layer0_embeddings`. The loss is BPR (or sampled
    softmax) with L2 on the batch's layer-0 embeddings. A new user is folded in: its vector solves a ridge
    regression of its history on the item embeddings (:func:`fold_in`), so it needs no training and no
    stored row. It exports as two embedding tables (:class:`models.serving.EmbeddingServable`).

    Attributes:
        embedding_dim: Width of the layer-0 embeddings.
        reg_weight: Coefficient of the batch L2 term in :meth:`loss`.
    """

    new_users: ClassVar[str] = (
        "fold-in: the user vector solves a ridge regression of the history on the item embeddings "
        "(unobserved items weighted |H|/I), no training"
    )

    def __init__(self, num_users: int, num_items: int, embedding_dim: int, reg_weight: float) -> None:
        super().__init__(num_users, num_items)
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be non-negative, got {reg_weight}")
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight

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

    def precompute(self) -> tuple[Tensor, Tensor]:
        """The final embeddings, computed once per :meth:`inference` block."""
        return self.embeddings()

    def _final(self) -> tuple[Tensor, Tensor]:
        cached = self.cached
        return cached if cached is not None else self.embeddings()

    def score(self, user_emb: Tensor, item_emb: Tensor) -> Tensor:
        """Dot-product scores ``[B, I]`` of user rows ``[B, d]`` against item rows ``[I, d]``."""
        return user_emb @ item_emb.T

    def score_users(self, users: Tensor) -> Tensor:
        """Dot products of the users' final embeddings with every item's.

        Shapes:
            users ``[B]`` -> ``[B, I]``.
        """
        user_emb, item_emb = self._final()
        return self.score(user_emb[users.to(user_emb.device)], item_emb)

    def score_history(self, history: History) -> Tensor:
        """Fold-in scores for new users: :func:`fold_in` vectors dotted with every item embedding.

        Shapes:
            ``len(history) = B`` -> ``[B, I]``.
        """
        _, item_emb = self._final()
        return self.score(fold_in(item_emb, history.to(item_emb.device)), item_emb)

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

    def candidate_scorer(self) -> ScoreFn:
        """Hard-negative scorer over the embeddings of this moment (computed once per call)."""
        return pair_score_fn(self)

    def export(self) -> Servable:
        """The two final embedding tables (:class:`models.serving.EmbeddingServable`)."""
        from models.serving import EmbeddingServable

        with self.inference():
            user_emb, item_emb = self._final()
            return EmbeddingServable(user_emb.detach().float().cpu(), item_emb.detach().float().cpu())


FOLD_IN_RIDGE = 10.0
"""Default relative ridge of :func:`fold_in`, chosen on the validation new users of cold-users splits.

Validation NDCG@20 of the new users (``--split cold-users``, defaults, seed 2020; models trained 90 s) for
ridge 1e-3 / 0.1 / 1 / 10: MF-BPR on ML-100K 0.250 / 0.295 / 0.310 / 0.333, LightGCN on ML-100K 0.294 /
0.282 / 0.290 / 0.297, MF-BPR on Last.fm 0.212 / 0.284 / 0.281 / 0.280 (benchmarks/RESULTS.md, "Cold start
(issue 11)"). A weak ridge fits the few history items too closely; a strong one tends to the sum of the
history's item embeddings, the propagation rule of LightGCN itself.
"""


def fold_in(
    item_emb: Tensor, history: History, *, ridge: float = FOLD_IN_RIDGE, gram: Tensor | None = None
) -> Tensor:
    """User vectors for new users from the embeddings of the items in their history (no training).

    For each user with history ``H`` the vector ``u`` minimises
    ``sum_{i in H} (1 - u.v_i)^2 + (|H| / I) sum_{all i} (u.v_i)^2 + lam ||u||^2``: its history should score
    high and the catalogue as a whole low (the implicit-feedback fold-in of iALS, Hu et al. 2008), with
    ``lam = ridge * trace(V^T V) / d`` so the penalty follows the embeddings' scale. The closed form is
    ``u = ((|H|/I) V^T V + V_H^T V_H + lam I)^-1 V_H^T 1``, one ``d x d`` solve per user, batched. A user
    with an empty history gets the zero vector (all scores 0: callers fall back to popularity).

    On planted data (tests/models/planted.py, training users' own histories, valid NDCG@20) a ridge of 1e-3
    gave 0.316 for MF and 0.387 for LightGCN, 1.0 gave 0.491 and 0.544, a little above the trained rows
    themselves (0.463, 0.518); 1 to 30 is a plateau. On real new users (cold-users splits of ML-100K and
    Last.fm) 10 is best on validation, hence the default :data:`FOLD_IN_RIDGE`. A strong ridge pulls
    ``u`` towards the sum of the history's item embeddings, which is how LightGCN's first layer embeds a
    user.

    Args:
        item_emb: Final item embeddings ``V``.
        history: The users' items.
        ridge: Relative ridge strength (:data:`FOLD_IN_RIDGE`).
        gram: ``V^T V`` in float64 (:func:`item_gram`), when the caller keeps it across calls: it costs
            ``I d^2``, more than the rest of a one-user fold-in (a server scoring users one at a time).

    Returns:
        User vectors.

    Shapes:
        item_emb ``[I, d]``, ``len(history) = B`` -> ``[B, d]``.
    """
    num_items, dim = item_emb.shape
    v = item_emb.to(torch.float64)
    if gram is None:
        gram = item_gram(item_emb)  # [d, d]
    gram = gram.to(v.device)
    lam = ridge * float(torch.diagonal(gram).sum()) / dim + 1e-12
    rows, items = history.rows, history.items
    batch = len(history)
    counts = (history.indptr[1:] - history.indptr[:-1]).to(torch.float64)
    vh = v[items]  # [nnz, d]
    outer = _history_grams(vh, history)
    rhs = torch.zeros(batch, dim, dtype=torch.float64, device=v.device).index_add_(0, rows, vh)
    eye = torch.eye(dim, dtype=torch.float64, device=v.device)
    lhs = (counts / num_items).view(-1, 1, 1) * gram + outer + lam * eye
    users = torch.linalg.solve(lhs, rhs.unsqueeze(2)).squeeze(2)
    return users.to(item_emb.dtype)


_GRAM_BUDGET = 1 << 22
"""Elements of the zero-padded ``[users, longest history, d]`` block :func:`_history_grams` fills at once."""


def _history_grams(vh: Tensor, history: History) -> Tensor:
    """``V_H^T V_H`` of every user, one batched matmul per block of users.

    The histories' item rows are zero-padded to the longest one, ``[b, L, d]``, and multiplied by their own
    transpose; blocks of ``b`` users keep the padded block under :data:`_GRAM_BUDGET` elements. This holds
    ``L d`` numbers per user where a sum of outer products would hold ``d^2`` per history item (gigabytes
    for a thousand users of wide embeddings).

    Shapes:
        vh ``[nnz, d]`` (the rows of ``history.items``), ``len(history) = B`` -> ``[B, d, d]``.
    """
    batch, dim = len(history), vh.shape[1]
    out = torch.zeros(batch, dim, dim, dtype=vh.dtype, device=vh.device)
    lengths = history.indptr[1:] - history.indptr[:-1]
    if batch == 0 or vh.shape[0] == 0:
        return out
    longest = int(lengths.max())
    step = max(1, _GRAM_BUDGET // (longest * dim))
    rows = history.rows
    position = torch.arange(vh.shape[0], device=vh.device) - history.indptr[:-1][rows]
    indptr = history.indptr.tolist()
    for start in range(0, batch, step):
        end = min(batch, start + step)
        a, b = indptr[start], indptr[end]
        padded = torch.zeros(end - start, longest, dim, dtype=vh.dtype, device=vh.device)
        padded[rows[a:b] - start, position[a:b]] = vh[a:b]
        out[start:end] = padded.transpose(1, 2) @ padded
    return out


def item_gram(item_emb: Tensor) -> Tensor:
    """``V^T V`` of the item embeddings in float64, the catalogue term of :func:`fold_in`.

    Shapes:
        item_emb ``[I, d]`` -> ``[d, d]``.
    """
    v = item_emb.to(torch.float64)
    return v.T @ v


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for an index of any shape, with a deterministic gradient on CPU.

    Advanced indexing with a 2-D index accumulates its gradient in a thread-dependent order on CPU (runs
    with the same seed then differ in the last bits); ``index_select`` on the flattened index does not.

    Shapes:
        table ``[N, d]``, index ``[*]`` -> ``[*, d]``.
    """
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])


RecommenderT = TypeVar("RecommenderT", bound=Recommender)


def unmet_requirements(
    cls: type[Recommender], graphs: Graphs, hparams: dict[str, Any] | None = None
) -> list[str]:
    """What ``cls`` (with ``hparams``) needs that ``graphs`` lacks, one readable reason per requirement."""
    needed = cls.requirements(hparams or {})
    return [
        f"needs {req.replace('_', '-')}{'' if req in cls.requires else ' (for its hyperparameters)'}: "
        f"{_REQUIREMENT_HINT[req]}"
        for req in sorted(needed)
        if not _REQUIREMENT_TEST[req](graphs)
    ]


def describe_search_space(cls: type[Recommender]) -> dict[str, Any]:
    """The search space as data: ``{name: {"type": ..., "low"/"high"/"log" or "choices"}}``."""
    out: dict[str, Any] = {}

    class _Recorder:
        def suggest_float(
            self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
        ) -> float:
            out[name] = {"type": "float", "low": low, "high": high, "log": log}
            return low

        def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
            out[name] = {"type": "int", "low": low, "high": high, "log": log}
            return low

        def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
            out[name] = {"type": "categorical", "choices": list(choices)}
            return choices[0]

    cls.search_space(_Recorder())
    return out


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


def pair_score_fn(model: EmbeddingRecommender) -> ScoreFn:
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
