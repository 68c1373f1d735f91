"""PinSage: item embeddings from random-walk neighbourhoods with importance pooling; users from their items.

Ying et al., "Graph Convolutional Neural Networks for Web-Scale Recommender Systems", KDD 2018,
https://arxiv.org/abs/1806.01973.

* **Neighbourhoods**: an item's neighbours are the ``num_neighbors`` (T) items most visited by
  item -> user -> item random walks from it (:func:`models.graph_sampling.random_walk_neighbors`), with
  their normalised visit counts as importance weights. They are drawn again at the start of every epoch
  from the run's seeded generator (:meth:`PinSage.on_epoch_start`); a fixed-seed draw at construction
  makes a fresh model usable.
* **Convolve** (the paper's Algorithm 1): ``n_v = sum_t alpha_t ReLU(Q h_t + q)`` (importance pooling: the
  visit-count-weighted mean), ``z_v = ReLU(W [h_v ; n_v] + w)``, ``z_v <- z_v / ||z_v||``; ``num_layers``
  of them, then the dense ``G2 ReLU(G1 z + g)``. With ``residual=True`` (the default here, not in the paper)
  the item's layer-0 input is added to that output: through the normalised ReLU layers alone the id
  embeddings train slowly (planted data, 8 epochs: valid NDCG@20 0.20 without, 0.53 with; popularity 0.17,
  MF 0.48). The layer-0 input is a learned item id embedding plus a
  projection of ``Graphs.item_features`` when the data has them (features only with ``use_item_ids=False``).
* **Users** are the mean of the final embeddings of the items they interacted with; a score is the dot
  product. So a user unseen in training is embedded from its history exactly as a training user is from
  its training items (PinSage is inductive for users). In training the user side is the mean of
  ``user_sample`` items drawn from the user's training items, the batch's positive left out.
* **Older context** (``context="older"``, needs interaction timestamps): a training user is embedded only
  from items it interacted with *before* the positive (drawn among them; any other item when the positive
  is the user's first). A new user of a cold-users split reveals its oldest interactions and is scored on
  the later ones; training then asks the same question: "what comes after these items?". The direction
  carries signal: on MovieLens 100K new users an item-item cosine of "j before i" counts scores valid
  NDCG@20 0.338-0.391, of "j after i" 0.172-0.244 (``benchmarks/time_order.py``), and this option took
  PinSage's new-user NDCG@20 from 0.348 to 0.408 on validation (``benchmarks/RESULTS.md``). Scoring is
  unchanged (the mean of all history items).
* **Target edges are out of the walks** (``exclude_target_edges``, default): a training batch's
  neighbourhoods are drawn afresh on the training graph without the batch's (user, positive) edges. On the
  full graph a positive's walks pass through the very user being scored (a Last.fm artist has about five
  listeners, so that user's other items fill much of its neighbourhood) and the context items' walks reach
  the positive through that user: the model learns to match a positive by that overlap, which a held-out
  item (not in the graph) never offers. On Last.fm (RecBole-GNN protocol, same recipe) test NDCG@10 rose
  from 0.117 to 0.166 with the exclusion (``benchmarks/RESULTS.md``). DGL's PinSage example removes a
  batch's query-positive edges from its sampled item graph for the same reason. It costs one walk refresh
  per batch; evaluation uses the epoch's neighbourhoods on the whole graph.
* **Loss**: the max-margin loss of the paper, ``max(0, s_neg - s_pos + margin)`` (``margin > 0``), or the
  trainer's loss (BPR) with ``margin = 0``.
* **Hard negatives and curriculum**: items at visit-count ranks ``[hard_rank_low, hard_rank_high)`` of the
  positive's random walks are related to it but not the closest; epoch ``e`` adds ``min(e - 1,
  max_hard_negatives)`` of them per positive to the trainer's negatives (:meth:`PinSage.training_negatives`;
  the paper adds one per epoch). A drawn item that is one of the user's training items, or a missing rank,
  is replaced by one of the trainer's uniform negatives.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import History, Recommender, Trial, register_model
from models.graph_sampling import random_walk_neighbors
from models.graphsage import GraphBuffers, UserTimeOrder
from models.layered import feature_matrix
from models.losses import LossName, batch_l2, ranking_loss

if TYPE_CHECKING:
    from models.graphs import Graphs
    from models.serving import Servable


class PinSageConv(nn.Module):
    """One PinSage convolution (Algorithm 1 of the paper) over fixed weighted neighbourhoods.

    Args:
        in_dim: Width of the input representations.
        hidden_dim: Width of the neighbour messages ``ReLU(Q h + q)``.
        out_dim: Width of the output.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(in_dim, hidden_dim)
        self.w = nn.Linear(in_dim + hidden_dim, out_dim)

    def reset_parameters(self) -> None:
        """PyTorch's default Linear initialisation."""
        self.q.reset_parameters()
        self.w.reset_parameters()

    def forward(
        self,
        h_src: Tensor,
        h_self: Tensor,
        neighbors: Tensor,
        alpha: Tensor,
        operator: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Importance pooling of the neighbours, concatenation with the node, dense layer, L2 normalisation.

        A message ``ReLU(Q h_t + q)`` depends only on the neighbour, so it is computed once per source row
        and gathered, not once per (node, neighbour) slot.

        Args:
            h_src: Representations of the rows ``neighbors`` indexes.
            h_self: The nodes' own representations.
            neighbors: Row of ``h_src`` of each neighbour (any valid row for padding).
            alpha: Importance weights (normalised visit counts; 0 for padding).
            operator: The same pooling as a sparse matrix ``A [n, m]`` (``A[v, t] = alpha``) and its
                transpose, for the full item graph: one sparse product forward and one backward.

        Shapes:
            h_src ``[m, d]``, h_self ``[n, d]``, neighbors ``[n, T]``, alpha ``[n, T]`` -> ``[n, d_out]``.
        """
        messages = F.relu(self.q(h_src))
        if operator is not None:
            pooled = _FixedSpmm.apply(operator[0], operator[1], messages)
        else:
            # One fused gather + weighted sum (embedding_bag), not an [n, T, d] intermediate.
            pooled = F.embedding_bag(
                neighbors, messages, per_sample_weights=alpha.to(messages.dtype), mode="sum"
            )
        z = F.relu(self.w(torch.cat([h_self, pooled], dim=-1)))
        return F.normalize(z, dim=-1)


class _FixedSpmm(torch.autograd.Function):
    """``A @ X`` for a fixed sparse ``A`` whose transpose is given: the backward is ``A^T @ dY``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, a_t: Tensor, x: Tensor) -> Tensor:
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, torch.sparse.mm(ctx.a_t, grad)


@register_model
class PinSage(Recommender):
    """PinSage item tower on random-walk neighbourhoods; users are the mean of their items' embeddings.

    Args:
        num_users: U.
        num_items: I.
        ui_edge_index: Training (user, item) pairs, long ``[2, E]``.
        item_features: Encoded item features ``[I, F_i]``, or ``None``.
        embedding_dim: d, the width of every layer.
        num_layers: K, convolutions stacked.
        num_neighbors: T, neighbours kept per item (most visited first).
        num_walks: Random walks started from every item at each refresh.
        walk_length: Item -> user -> item hops per walk.
        restart_prob: Probability of restarting a walk at its source before each hop after the first.
        margin: Max-margin loss margin; 0 uses the trainer's loss (BPR).
        residual: Add the item's layer-0 input to the output (not in the paper; see the module docstring).
        hard_rank_low: First visit-count rank (0-based) hard negatives are drawn from.
        hard_rank_high: One past the last rank.
        max_hard_negatives: Cap of the curriculum (hard negatives per positive); 0 disables them.
        user_sample: Items drawn (with replacement) from a training user's items to embed it in training.
        context: ``any`` draws those items among all the user's other training items; ``older`` only among
            the items it interacted with before the positive (needs ``ui_edge_age``).
        ui_edge_age: Age of each pair of ``ui_edge_index`` (same order), for ``context="older"``.
        exclude_target_edges: Draw each training batch's neighbourhoods without its (user, positive) edges.
        use_item_ids: Learn an id embedding per item (always, when the data has no item features).
        reg_weight: Batch L2 on the id-embedding rows a batch touches.
        init_std: Standard deviation of the id embeddings' normal initialisation.
    """

    name: ClassVar[str] = "pinsage"
    family: ClassVar[str] = "graph"
    inductive_users: ClassVar[bool] = True
    new_users: ClassVar[str] = (
        "inductive: the mean of the PinSage embeddings of the history items, exactly as a training user"
    )
    neighbors: Tensor
    neighbor_weights: Tensor
    hard_pool: Tensor
    item_features: Tensor | None

    def __init__(
        self,
        num_users: int,
        num_items: int,
        ui_edge_index: Tensor,
        item_features: Tensor | None = None,
        embedding_dim: int = 64,
        num_layers: int = 2,
        num_neighbors: int = 20,
        num_walks: int = 50,
        walk_length: int = 2,
        restart_prob: float = 0.0,
        margin: float = 0.0,
        residual: bool = True,
        hard_rank_low: int = 10,
        hard_rank_high: int = 50,
        max_hard_negatives: int = 2,
        user_sample: int = 20,
        context: str = "any",
        exclude_target_edges: bool = True,
        use_item_ids: bool = True,
        reg_weight: float = 1e-5,
        init_std: float = 0.1,
        ui_edge_age: Tensor | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        if num_layers < 1 or num_neighbors < 1 or user_sample < 1:
            raise ValueError("num_layers, num_neighbors and user_sample must be >= 1")
        if not 0 <= hard_rank_low < hard_rank_high:
            raise ValueError(
                f"need 0 <= hard_rank_low < hard_rank_high, got {hard_rank_low}, {hard_rank_high}"
            )
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.num_neighbors = num_neighbors
        self.num_walks = num_walks
        self.walk_length = walk_length
        self.restart_prob = restart_prob
        self.margin = margin
        self.residual = residual
        self.hard_rank_low = hard_rank_low
        self.hard_rank_high = hard_rank_high
        self.max_hard_negatives = max_hard_negatives
        self.user_sample = user_sample
        self.time_order = UserTimeOrder.for_context("pinsage", context, ui_edge_index, ui_edge_age, num_items)
        self.exclude_target_edges = exclude_target_edges
        self.reg_weight = reg_weight
        self.init_std = init_std
        self.graph = GraphBuffers(ui_edge_index, num_users, num_items)
        self.register_buffer(
            "item_features", feature_matrix(item_features, num_items, "item"), persistent=False
        )
        self.use_item_ids = use_item_ids or self.item_features is None
        self.item_embedding = nn.Embedding(num_items, embedding_dim) if self.use_item_ids else None
        self.item_proj = (
            None if self.item_features is None else nn.Linear(self.item_features.shape[1], embedding_dim)
        )
        self.convs = nn.ModuleList(
            PinSageConv(embedding_dim, embedding_dim, embedding_dim) for _ in range(num_layers)
        )
        self.g1 = nn.Linear(embedding_dim, embedding_dim)
        self.g2 = nn.Linear(embedding_dim, embedding_dim, bias=False)
        # Neighbourhoods are state: the best checkpoint keeps those its weights were trained with.
        self.register_buffer("neighbors", torch.zeros(num_items, num_neighbors, dtype=torch.long))
        self.register_buffer("neighbor_weights", torch.zeros(num_items, num_neighbors))
        self.register_buffer(
            "hard_pool", torch.zeros(num_items, hard_rank_high - hard_rank_low, dtype=torch.long)
        )
        self._epoch = 0
        self._operator: tuple[Tensor, Tensor] | None = None
        self._operator_key: tuple[Any, ...] | None = None
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            num_neighbors=num_neighbors,
            num_walks=num_walks,
            walk_length=walk_length,
            restart_prob=restart_prob,
            margin=margin,
            residual=residual,
            hard_rank_low=hard_rank_low,
            hard_rank_high=hard_rank_high,
            max_hard_negatives=max_hard_negatives,
            user_sample=user_sample,
            context=context,
            exclude_target_edges=exclude_target_edges,
            use_item_ids=use_item_ids,
            reg_weight=reg_weight,
            init_std=init_std,
        )
        self.reset_parameters()
        self.refresh_neighborhoods(torch.Generator().manual_seed(0))

    def reset_parameters(self) -> None:
        """Normal id embeddings; PyTorch's default for the dense layers."""
        if self.item_embedding is not None:
            nn.init.normal_(self.item_embedding.weight, std=self.init_std)
        for module in (self.item_proj, *self.convs, self.g1, self.g2):
            if module is not None:
                module.reset_parameters()

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> PinSage:
        """Build on the training pairs and the item features of ``graphs``."""
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            ui_edge_index=graphs.ui_edge_index,
            item_features=graphs.item_features,
            ui_edge_age=graphs.ui_edge_age,
            **cls.resolve_hparams(hparams),
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The paper's K = 2 convolutions and curriculum, sized for catalogues of thousands of items.

        The paper keeps T = 50 neighbours and hard negatives at ranks 2000-5000 of Pinterest's
        personalised PageRank; here T = 20 and ranks 10-50 of the walks' visit counts.
        """
        return {
            "embedding_dim": 64,
            "num_layers": 2,
            "num_neighbors": 20,
            "num_walks": 50,
            "walk_length": 2,
            "restart_prob": 0.0,
            "margin": 0.0,
            "residual": True,
            "hard_rank_low": 10,
            "hard_rank_high": 50,
            "max_hard_negatives": 2,
            "user_sample": 20,
            "context": "any",
            "exclude_target_edges": True,
            "use_item_ids": True,
            "reg_weight": 1e-5,
            "init_std": 0.1,
        }

    @classmethod
    def requirements(cls, hparams: dict[str, Any]) -> frozenset[str]:
        """The user-item graph, and timestamps with ``context="older"``."""
        return UserTimeOrder.requirements(cls.requires, hparams)

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Width, depth, neighbourhood size and walks, loss margin, hard-negative rank and curriculum cap."""
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "num_layers": trial.suggest_int("num_layers", 1, 3),
            "num_neighbors": trial.suggest_categorical("num_neighbors", [10, 20, 50]),
            "num_walks": trial.suggest_categorical("num_walks", [20, 50, 100]),
            "walk_length": trial.suggest_int("walk_length", 1, 3),
            "margin": trial.suggest_categorical("margin", [0.0, 0.1, 1.0]),
            "residual": trial.suggest_categorical("residual", [True, False]),
            "hard_rank_low": trial.suggest_categorical("hard_rank_low", [5, 10, 50]),
            "max_hard_negatives": trial.suggest_int("max_hard_negatives", 0, 4),
            "user_sample": trial.suggest_categorical("user_sample", [10, 20, 50]),
            "reg_weight": trial.suggest_float("reg_weight", 1e-7, 1e-3, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
        }

    # -- neighbourhoods -------------------------------------------------------------------------------

    def refresh_neighborhoods(self, generator: torch.Generator) -> None:
        """Draw every item's random walks again; keep its top-T neighbours and its hard-negative ranks."""
        graph = self.graph.csr()
        width = max(self.num_neighbors, self.hard_rank_high)
        neighbors, weights = random_walk_neighbors(
            graph,
            width,
            num_walks=self.num_walks,
            walk_length=self.walk_length,
            restart_prob=self.restart_prob,
            generator=generator,
            batch_size=max(1, 2**22 // max(self.num_walks * self.walk_length, 1)),
        )
        top = weights[:, : self.num_neighbors]
        total = top.sum(1, keepdim=True)
        self.neighbors.copy_(neighbors[:, : self.num_neighbors])
        self.neighbor_weights.copy_(torch.where(total > 0, top / total.clamp(min=1e-12), top))
        self.hard_pool.copy_(neighbors[:, self.hard_rank_low : self.hard_rank_high])
        self._operator = None

    def batch_neighborhoods(
        self, users: Tensor, pos: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Every item's top-T neighbourhood from walks on the training graph without the (user, pos) edges.

        Returns:
            ``(neighbors, weights)`` as the buffers: item ids ``[I, T]`` (``-1`` padding) and importance
            weights ``[I, T]`` summing to 1 over the kept neighbours.

        Shapes:
            users ``[B]``, pos ``[B]`` -> ``[I, T]``, ``[I, T]``.
        """
        return random_walk_neighbors(
            self.graph.csr().without_edges(users, pos),
            self.num_neighbors,
            num_walks=self.num_walks,
            walk_length=self.walk_length,
            restart_prob=self.restart_prob,
            generator=generator,
            batch_size=max(1, 2**22 // max(self.num_walks * self.walk_length, 1)),
        )

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Keep the generator and epoch (curriculum); refresh the random-walk neighbourhoods from it."""
        super().on_epoch_start(epoch, generator)
        self._epoch = epoch
        self.refresh_neighborhoods(generator)

    def hard_negatives_at(self, epoch: int) -> int:
        """Hard negatives per positive at ``epoch`` (1-based): one more each epoch, from 0, up to the cap."""
        return max(0, min(epoch - 1, self.max_hard_negatives))

    def training_negatives(self, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The trainer's negatives plus :meth:`hard_negatives_at` hard ones from the positive's walks.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]`` -> ``[B, K + h]``.
        """
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        count = self.hard_negatives_at(self._epoch)
        pool_width = self.hard_pool.shape[1]
        if count == 0 or pool_width == 0:
            return neg
        draw = torch.rand(pos.numel(), count, generator=self._generator, device=pos.device)
        picked = self.hard_pool[pos].gather(1, (draw * pool_width).long().clamp(max=pool_width - 1))
        bad = picked < 0
        bad |= self.graph.is_positive(users.unsqueeze(1), picked.clamp(min=0))
        fallback = neg[:, torch.arange(count, device=neg.device) % neg.shape[1]]
        return torch.cat([neg, torch.where(bad, fallback, picked)], dim=1)

    # -- item tower -----------------------------------------------------------------------------------

    def item_input(self, items: Tensor) -> Tensor:
        """Layer-0 input: id embedding and/or projected features.

        Shapes:
            items ``[n]`` -> ``[n, d]``.
        """
        x = self.item_embedding(items) if self.item_embedding is not None else None
        if self.item_proj is not None and self.item_features is not None:
            projected = self.item_proj(self.item_features[items])
            x = projected if x is None else x + projected
        assert x is not None
        return x

    def _output(self, h: Tensor, items: Tensor) -> Tensor:
        """The paper's final dense layers ``G2 ReLU(G1 h + g)``, plus the items' layer-0 input if residual."""
        z = self.g2(F.relu(self.g1(h)))
        return z + self.item_input(items) if self.residual else z

    def embed_items(self, items: Tensor, neighborhoods: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Mini-batch item embeddings: the paper's Algorithm 2 over the items' K-hop neighbourhoods.

        When the K-hop neighbourhood covers at least half of the catalogue (small catalogues, large
        batches), the whole item graph is computed instead (:meth:`item_embeddings`, same result).

        Args:
            items: Item ids.
            neighborhoods: ``(neighbors, weights)`` ``[I, T]`` to use instead of the buffers (a training
                batch's, :meth:`batch_neighborhoods`).

        Shapes:
            items ``[n]`` -> ``[n, d]``.
        """
        neighbors, weights = (
            (self.neighbors, self.neighbor_weights) if neighborhoods is None else neighborhoods
        )
        sets = [torch.unique(items)]
        for _ in range(self.num_layers):
            nb = neighbors[sets[-1]]
            sets.append(torch.unique(torch.cat([sets[-1], nb[nb >= 0]])))
            if 2 * sets[-1].numel() >= self.num_items:
                return self.item_embeddings(neighborhoods)[items]
        h = self.item_input(sets[-1])
        for k, conv in enumerate(self.convs):
            src, dst = sets[self.num_layers - k], sets[self.num_layers - k - 1]
            nb = neighbors[dst]
            alpha = torch.where(nb >= 0, weights[dst], 0.0)
            h = conv(h, h[torch.searchsorted(src, dst)], torch.searchsorted(src, nb.clamp(min=0)), alpha)
        z = self._output(h, sets[0])
        return z[torch.searchsorted(sets[0], items)]

    def pooling_operator(self) -> tuple[Tensor, Tensor]:
        """The importance pooling of the current neighbourhoods as sparse ``A [I, I]`` and ``A^T`` (cached).

        ``A[v, t]`` is the normalised visit count of neighbour ``t`` of item ``v``; rebuilt whenever the
        neighbourhood buffers change (a refresh, or ``load_state_dict`` restoring the best epoch's, which
        bumps their version counters), kept out of the pickle.
        """
        key = (self.neighbors.device, self.neighbors._version, self.neighbor_weights._version)
        if self._operator is None or self._operator_key != key:
            self._operator = _pooling_operator(self.neighbors, self.neighbor_weights)
            self._operator_key = key
        return self._operator

    def item_embeddings(self, neighborhoods: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Full-graph inference: every item's final embedding, layer by layer (one sparse product each).

        Args:
            neighborhoods: ``(neighbors, weights)`` ``[I, T]`` instead of the buffers (see
                :meth:`embed_items`).

        Shapes:
            ``[I, d]``.
        """
        device = self.neighbors.device
        if neighborhoods is None:
            neighbors, weights, operator = self.neighbors, self.neighbor_weights, self.pooling_operator()
        else:
            # A batch's neighbourhoods are used once: the gather (embedding_bag, whose backward is an
            # index_add) costs what one sparse product does, without building and coalescing A and A^T.
            neighbors, weights, operator = neighborhoods[0].clamp(min=0), neighborhoods[1], None
        h = self.item_input(torch.arange(self.num_items, device=device))
        for conv in self.convs:
            h = conv(h, h, neighbors, weights, operator=operator)
        return self._output(h, torch.arange(self.num_items, device=device))

    def export(self) -> Servable:
        """The network without its training-only hard-negative pool (a third of the pickle on Last.fm)."""
        from models.serving import ModuleServable

        served = copy.deepcopy(self).cpu()
        served.hard_pool = torch.zeros(self.num_items, 0, dtype=torch.long)
        served.time_order = None  # training only
        served._operator = None
        return ModuleServable(served)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_operator"] = None
        return state

    def users_from_items(self, item_emb: Tensor, history: History) -> Tensor:
        """Mean of the history items' embeddings per user (zero for an empty history).

        Shapes:
            item_emb ``[I, d]``, ``len(history) = B`` -> ``[B, d]``.
        """
        history = history.to(item_emb.device)
        total = torch.zeros(len(history), item_emb.shape[1], device=item_emb.device, dtype=item_emb.dtype)
        total.index_add_(0, history.rows, item_emb[history.items])
        counts = (history.indptr[1:] - history.indptr[:-1]).clamp(min=1).unsqueeze(1)
        return total / counts

    # -- training -------------------------------------------------------------------------------------

    def loss(
        self,
        users: Tensor,
        pos: Tensor,
        neg: Tensor,
        *,
        loss: LossName = "bpr",
        temperature: float = 0.2,
    ) -> Tensor:
        """Max-margin (or the trainer's) loss; users are the mean of ``user_sample`` of their other items.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]`` -> scalar.
        """
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        b = users.numel()
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)
        context = self.context_items(users, pos)
        keep = (context != pos.unsqueeze(1)).unsqueeze(-1).to(torch.float32)
        neighborhoods = (
            self.batch_neighborhoods(users, pos, self._generator) if self.exclude_target_edges else None
        )
        z = self.embed_items(torch.cat([items.reshape(-1), context.reshape(-1)]), neighborhoods)
        z_items = z[: items.numel()].view(b, items.shape[1], -1)
        z_context = z[items.numel() :].view(b, self.user_sample, -1)
        user = (z_context * keep).sum(1) / keep.sum(1).clamp(min=1)
        scores = (user.unsqueeze(1) * z_items).sum(-1)
        if self.margin > 0:
            value = F.relu(scores[:, 1:] - scores[:, :1] + self.margin).mean()
        else:
            value = ranking_loss(scores[:, 0], scores[:, 1:], loss=loss, temperature=temperature)
        if self.reg_weight > 0 and self.item_embedding is not None:
            value = value + self.reg_weight * batch_l2(self.item_embedding(items), batch_size=b)
        return value

    def context_items(self, users: Tensor, pos: Tensor) -> Tensor:
        """``user_sample`` items per pair (with replacement) that embed the user against its positive.

        ``context="any"``: among all the user's training items (the positive itself is masked by the
        caller); ``"older"``: among the items the user interacted with before ``pos``, or all its items
        when ``pos`` is its first.

        Shapes:
            users ``[B]``, pos ``[B]`` -> ``[B, user_sample]``.
        """
        start = self.graph.u_indptr[users]
        degree = self.graph.u_indptr[users + 1] - start
        draw = torch.rand(users.numel(), self.user_sample, generator=self._generator, device=users.device)
        source = self.graph.u_items
        if self.time_order is not None:
            older = self.time_order.older_count(users, pos)
            degree = torch.where(older > 0, older, degree)
            source = self.time_order.items
        offset = torch.minimum((draw * degree.unsqueeze(1)).long(), (degree - 1).clamp(min=0).unsqueeze(1))
        return source[start.unsqueeze(1) + offset]

    # -- scoring --------------------------------------------------------------------------------------

    def precompute(self) -> tuple[Tensor, Tensor]:
        """Every item's embedding and every training user's (the mean of its items')."""
        item_emb = self.item_embeddings()
        graph = self.graph
        history = History(graph.u_indptr, graph.u_items)
        return self.users_from_items(item_emb, history), item_emb

    def _embeddings(self) -> tuple[Tensor, Tensor]:
        cached = self.cached
        return cached if cached is not None else self.precompute()

    def score_users(self, users: Tensor) -> Tensor:
        """Dot products of the users' item-mean embeddings with every item's.

        Shapes:
            users ``[B]`` -> ``[B, I]``.
        """
        user_emb, item_emb = self._embeddings()
        return user_emb[users.to(user_emb.device)] @ item_emb.T

    def score_history(self, history: History) -> Tensor:
        """New users embedded from their history items, as training users are from theirs.

        Shapes:
            ``len(history) = B`` -> ``[B, I]``.
        """
        _, item_emb = self._embeddings()
        return self.users_from_items(item_emb, history) @ item_emb.T


def _pooling_operator(neighbors: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Importance pooling over ``[I, T]`` neighbourhoods as sparse ``A [I, I]`` and its transpose."""
    num_items = neighbors.shape[0]
    valid = neighbors >= 0
    rows = torch.arange(num_items, device=neighbors.device).unsqueeze(1).expand_as(neighbors)[valid]
    cols, values = neighbors[valid], weights[valid]
    size = (num_items, num_items)
    a = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, size, check_invariants=False).coalesce()
    a_t = torch.sparse_coo_tensor(torch.stack([cols, rows]), values, size, check_invariants=False).coalesce()
    return a, a_t
