"""GraphSAGE over the user-item bipartite graph, trained on sampled mini-batches, inductive for new users.

Hamilton, Ying and Leskovec, "Inductive Representation Learning on Large Graphs", NeurIPS 2017,
https://arxiv.org/abs/1706.02216. Each layer is PyG's ``SAGEConv``: ``h_v' = W_l agg({h_u : u in N(v)}) +
W_r h_v`` with the **mean** aggregator (``aggr="mean"``) or the **pooling** aggregator (``aggr="max"`` with
``project=True``: ``max_u ReLU(W_p h_u + b)``), ReLU between layers. Users and items are the nodes of one
joint graph (users ``0..U-1``, items ``U..U+I-1``) and share the layers, as in the paper's homogeneous
setting.

* **Input**: the shared :class:`models.layered.FeatureInput` (as GCN and GAT): a learned id embedding per
  node, plus a linear projection of ``Graphs.user_features`` / ``item_features`` when the data has them.
* **Training** (the paper's minibatch algorithm): for a batch of (user, positive, negatives) the computation
  graph around those nodes is sampled with :func:`models.graph_sampling.sample_neighbors` (per-layer
  fan-outs, uniform without replacement, drawn from the run's seeded generator), with the batch's own
  (user, positive) edges treated as absent so that the positive is not read off the graph; the layers run
  on the sampled blocks and the dot products of the outputs feed BPR (or the trainer's loss).
* **Evaluation**: full-graph layer-wise inference (:meth:`GraphSAGE.precompute`): each layer over every node,
  in chunks of destination nodes, every neighbour aggregated; scores are dot products. With fan-outs at
  least the maximum degree the mini-batch forward gives the same embeddings (tested).
* **New users** (inductive): a user unseen in training has no id embedding; its layer-0 "self" input is a
  learned **unknown-user vector** (plus its projected features when given), and the same layers embed it
  from its history items' layer outputs on the training graph. So that the layers learn to embed a user
  from its items alone, training replaces a user's id embedding by that vector with probability
  ``user_id_dropout``.
* **Item-only users** (``user_ids=False``): no user has an id input, in training and at inference: every
  user's layer-0 input is the unknown-user vector (plus its projected features), so a training user is
  embedded from its items exactly as a new user is from its history (the two paths give the same scores,
  tested), and the item layers never read per-user ids that a new user lacks. With ids, a new user is
  embedded by layers trained mostly on users that had one (1 - ``user_id_dropout`` of them).
* **Older context** (``context="older"``, needs interaction timestamps; meant with ``user_ids=False``): in
  training a user is sampled as if its items from the batch's positive on were not yet there (every edge
  of the user at or after its earliest positive in the batch is excluded, both directions, every hop), so
  its embedding comes from what it did before, as a new user of a cold-users split is scored on what it
  does after its revealed history (see :mod:`models.pinsage` for the measured effect of this order). A
  user whose positive is its first item keeps the plain exclusion of the batch's pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv

from models.base import History, Recommender, ScoreFn, Trial, register_model
from models.graph_sampling import BipartiteCSR, SampledSubgraph, sample_neighbors, time_order
from models.layered import FeatureInput
from models.losses import LossName, batch_l2, ranking_loss

if TYPE_CHECKING:
    from models.graphs import Graphs

Aggregator = Literal["mean", "pool"]


def parse_fan_outs(value: str | Sequence[int]) -> tuple[int, ...]:
    """Fan-outs per layer from ``"25,10"`` or ``[25, 10]`` (the hop nearest the seeds first; -1: all).

    Raises:
        ValueError: for an empty list or a fan-out below -1 or equal to 0.
    """
    parts = [int(p) for p in value.split(",")] if isinstance(value, str) else [int(p) for p in value]
    if not parts or any(p == 0 or p < -1 for p in parts):
        raise ValueError(f"fan_outs must be one or more positive ints (or -1 for all), got {value!r}")
    return tuple(parts)


class GraphBuffers(nn.Module):
    """The training graph as buffers, so it moves with ``.to(device)`` and travels in ``torch.save``.

    :meth:`csr` builds the :class:`~models.graph_sampling.BipartiteCSR` once per device and caches it; the
    cache is dropped when the module is pickled.
    """

    u_indptr: Tensor
    u_items: Tensor
    i_indptr: Tensor
    i_users: Tensor

    def __init__(self, ui_edge_index: Tensor, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        graph = BipartiteCSR.from_edge_index(ui_edge_index.cpu(), num_users, num_items)
        # Only the two directed CSRs are stored (2E + U + I + 2 longs); the joint graph is derived.
        self.register_buffer("u_indptr", graph.user_to_item.indptr, persistent=False)
        self.register_buffer("u_items", graph.user_to_item.indices, persistent=False)
        self.register_buffer("i_indptr", graph.item_to_user.indptr, persistent=False)
        self.register_buffer("i_users", graph.item_to_user.indices, persistent=False)
        self._cache: tuple[torch.device, BipartiteCSR] | None = None

    def csr(self) -> BipartiteCSR:
        """The graph on the buffers' device."""
        device = self.u_indptr.device
        if self._cache is None or self._cache[0] != device:
            from models.graph_sampling import CSR

            user_to_item = CSR(self.u_indptr, self.u_items, self.num_items)
            item_to_user = CSR(self.i_indptr, self.i_users, self.num_users)
            joint = CSR(
                torch.cat([self.u_indptr, self.i_indptr[1:] + self.u_items.numel()]),
                torch.cat([self.u_items + self.num_users, self.i_users]),
                self.num_users + self.num_items,
            )
            self._cache = (
                device,
                BipartiteCSR(self.num_users, self.num_items, user_to_item, item_to_user, joint),
            )
        return self._cache[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (user, item) pair is a training edge (one searchsorted over sorted pair keys).

        Shapes:
            users and items broadcastable -> bool of the broadcast shape.
        """
        users, items = torch.broadcast_tensors(users, items)
        if self.u_items.numel() == 0:
            return torch.zeros_like(users, dtype=torch.bool)
        # user * I + item is sorted in CSR order (users ascending, items ascending within a user).
        owner = torch.repeat_interleave(
            torch.arange(self.num_users, device=users.device), torch.diff(self.u_indptr)
        )
        keys = owner * self.num_items + self.u_items
        query = users * self.num_items + items
        where = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        return keys[where] == query


class UserTimeOrder(nn.Module):
    """Each user's training items oldest first, for training a user on its past (``context="older"``).

    PinSage and GraphSAGE share it: :meth:`for_context` checks the option and builds the order only for
    ``"older"``; :meth:`older_count` says how many of its items a user had before a given one, and
    :attr:`items` lists the user CSR's items in time order (same ``u_indptr`` as :class:`GraphBuffers`).
    """

    edge_keys: Tensor
    time_rank: Tensor
    items: Tensor

    def __init__(self, ui_edge_index: Tensor, ui_edge_age: Tensor | None, num_items: int) -> None:
        super().__init__()
        self.num_items = num_items
        edge_keys, time_rank, items = time_order(ui_edge_index, ui_edge_age, num_items)
        self.register_buffer("edge_keys", edge_keys, persistent=False)
        self.register_buffer("time_rank", time_rank, persistent=False)
        self.register_buffer("items", items, persistent=False)

    @classmethod
    def for_context(
        cls, model: str, context: str, ui_edge_index: Tensor, ui_edge_age: Tensor | None, num_items: int
    ) -> UserTimeOrder | None:
        """The order for ``context="older"``, ``None`` for ``"any"``.

        Raises:
            ValueError: for another ``context``, or ``"older"`` without ``ui_edge_age``.
        """
        if context not in ("any", "older"):
            raise ValueError(f"context must be 'any' or 'older', got {context!r}")
        if context == "any":
            return None
        if ui_edge_age is None:
            raise ValueError(
                f"{model} context='older' needs interaction timestamps (Graphs.ui_edge_age); "
                "the data has none"
            )
        return cls(ui_edge_index, ui_edge_age, num_items)

    @staticmethod
    def requirements(requires: frozenset[str], hparams: dict[str, Any]) -> frozenset[str]:
        """``requires``, plus timestamps when ``hparams`` ask for ``context="older"``."""
        return requires | {"timestamps"} if hparams.get("context", "any") == "older" else requires

    def older_count(self, users: Tensor, items: Tensor) -> Tensor:
        """How many training items each user had before each of its training ``items`` (its time rank).

        Shapes:
            users ``[B]``, items ``[B]`` (training pairs) -> ``[B]``.
        """
        edge = torch.searchsorted(self.edge_keys, users * self.num_items + items)
        return self.time_rank[edge.clamp(max=self.time_rank.numel() - 1)]


@register_model
class GraphSAGE(Recommender):
    """GraphSAGE (mean or pooling aggregator) on sampled mini-batches; full-graph layer-wise inference.

    Args:
        num_users: U.
        num_items: I.
        ui_edge_index: Training (user, item) pairs, long ``[2, E]`` (item ids not offset).
        user_features: Encoded user features ``[U, F_u]``, or ``None``.
        item_features: Encoded item features ``[I, F_i]``, or ``None``.
        embedding_dim: d, the width of the id embeddings and of every layer.
        fan_outs: Neighbours sampled per node at each hop, nearest the seeds first (``"25,10"`` or a list);
            its length is the number of layers.
        aggregator: ``"mean"`` or ``"pool"`` (max-pooling over projected neighbours).
        dropout: Dropout between layers during training.
        user_id_dropout: Probability that a training user's id embedding is replaced by the unknown-user
            vector (teaches the layers to embed users from their items, as new users are).
        reg_weight: Coefficient of the batch L2 term on the batch's id-embedding rows.
        user_ids: Give users a learned id input; ``False`` uses the unknown-user vector (plus features) for
            every user, in training and at inference (``user_id_dropout`` then has no effect).
        exclude_target_edges: Sample each batch as if its (user, positive) edges were absent.
        context: ``any`` samples a training user's whole neighbourhood (but the batch's pairs); ``older``
            only its items older than its earliest positive in the batch (needs ``ui_edge_age``).
        init_std: Standard deviation of the normal initialisation of the id embeddings.
        inference_chunk: Destination nodes per chunk of the full-graph layer-wise inference.
        ui_edge_age: Age of each pair of ``ui_edge_index`` (same order), for ``context="older"``.
    """

    name: ClassVar[str] = "graphsage"
    family: ClassVar[str] = "graph"
    inductive_users: ClassVar[bool] = True
    new_users: ClassVar[str] = (
        "inductive: the same SAGE layers embed the user from its history items on the training graph, its "
        "own layer-0 input being a learned unknown-user vector (trained by user-id dropout, or as every "
        "user's input with user_ids=False) plus its features"
    )

    def __init__(
        self,
        num_users: int,
        num_items: int,
        ui_edge_index: Tensor,
        user_features: Tensor | None = None,
        item_features: Tensor | None = None,
        embedding_dim: int = 64,
        fan_outs: str | Sequence[int] = "25,10",
        aggregator: Aggregator = "mean",
        dropout: float = 0.0,
        user_id_dropout: float = 0.1,
        reg_weight: float = 1e-4,
        exclude_target_edges: bool = True,
        init_std: float = 0.1,
        inference_chunk: int = 16384,
        user_ids: bool = True,
        context: str = "any",
        ui_edge_age: Tensor | None = None,
    ) -> None:
        super().__init__(num_users, num_items)
        if aggregator not in ("mean", "pool"):
            raise ValueError(f"aggregator must be 'mean' or 'pool', got {aggregator!r}")
        if not 0.0 <= user_id_dropout <= 1.0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropouts must lie in [0, 1], got {dropout}, {user_id_dropout}")
        self.fan_outs = parse_fan_outs(fan_outs)
        self.embedding_dim = embedding_dim
        self.aggregator = aggregator
        self.dropout = dropout
        self.user_id_dropout = user_id_dropout
        self.reg_weight = reg_weight
        self.exclude_target_edges = exclude_target_edges
        self.init_std = init_std
        self.inference_chunk = inference_chunk
        self.user_ids = user_ids
        self.time_order = UserTimeOrder.for_context(
            "graphsage", context, ui_edge_index, ui_edge_age, num_items
        )
        self.graph = GraphBuffers(ui_edge_index, num_users, num_items)
        self.input = FeatureInput(num_users, num_items, embedding_dim, user_features, item_features)
        self.unknown_user = nn.Parameter(torch.zeros(embedding_dim))
        self.convs = nn.ModuleList(
            SAGEConv(
                embedding_dim,
                embedding_dim,
                aggr="mean" if aggregator == "mean" else "max",
                project=aggregator == "pool",
            )
            for _ in self.fan_outs
        )
        # Filled by loss(): input/seed node counts of the last sampled computation graph (for inspection).
        self.last_subgraph_sizes: list[int] = []
        self._record_hparams(
            embedding_dim=embedding_dim,
            fan_outs=list(self.fan_outs),
            aggregator=aggregator,
            dropout=dropout,
            user_id_dropout=user_id_dropout,
            reg_weight=reg_weight,
            exclude_target_edges=exclude_target_edges,
            init_std=init_std,
            inference_chunk=inference_chunk,
            user_ids=user_ids,
            context=context,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal ids and feature projections, a zero unknown-user vector, PyG's init of the layers."""
        self.input.reset_parameters(self.init_std)
        nn.init.zeros_(self.unknown_user)
        for conv in self.convs:
            assert isinstance(conv, SAGEConv)
            conv.reset_parameters()

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> GraphSAGE:
        """Build on the training pairs and the feature tensors of ``graphs``."""
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            ui_edge_index=graphs.ui_edge_index,
            user_features=graphs.user_features,
            item_features=graphs.item_features,
            ui_edge_age=graphs.ui_edge_age,
            **cls.resolve_hparams(hparams),
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The paper's setting: K = 2 layers with fan-outs S1 = 25, S2 = 10, mean aggregator; d = 64."""
        return {
            "embedding_dim": 64,
            "fan_outs": "25,10",
            "aggregator": "mean",
            "dropout": 0.0,
            "user_id_dropout": 0.1,
            "reg_weight": 1e-4,
            "exclude_target_edges": True,
            "init_std": 0.1,
            "inference_chunk": 16384,
            "user_ids": True,
            "context": "any",
        }

    @classmethod
    def requirements(cls, hparams: dict[str, Any]) -> frozenset[str]:
        """The user-item graph, and timestamps with ``context="older"``."""
        return UserTimeOrder.requirements(cls.requires, hparams)

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Width, depth and fan-outs (the paper's grid and one deeper), aggregator, dropouts, L2, init."""
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "fan_outs": trial.suggest_categorical("fan_outs", ["10", "25,10", "10,10", "25,10,5"]),
            "aggregator": trial.suggest_categorical("aggregator", ["mean", "pool"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "user_id_dropout": trial.suggest_float("user_id_dropout", 0.0, 0.5),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
            "user_ids": trial.suggest_categorical("user_ids", [True, False]),
        }

    # -- layers ---------------------------------------------------------------------------------------

    def node_input(self, nodes: Tensor, *, drop_user_ids: bool = False) -> Tensor:
        """Layer-0 input of joint nodes: id embedding (+ projected features).

        Args:
            nodes: Joint ids (users ``< U``, items ``U + i``).
            drop_user_ids: Replace user id embeddings by the unknown-user vector with probability
                ``user_id_dropout`` (drawn from the run's generator). Without user ids (``user_ids=False``)
                every user's is replaced, always.

        Shapes:
            nodes ``[n]`` -> ``[n, d]``.
        """
        x = self.input.nodes(nodes)
        is_user = nodes < self.num_users
        if not self.user_ids:
            dropped = is_user.nonzero().squeeze(1)
        elif drop_user_ids and self.user_id_dropout > 0:
            draw = torch.rand(nodes.numel(), generator=self._generator, device=nodes.device)
            dropped = (is_user & (draw < self.user_id_dropout)).nonzero().squeeze(1)
        else:
            return x
        # The id part only: a dropped user keeps its projected features, as a new user has them.
        return x.index_add(0, dropped, self.unknown_user - self.input.user_embedding(nodes[dropped]))

    def _between_layers(self, x: Tensor) -> Tensor:
        x = x.relu()
        return nn.functional.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    def forward_blocks(self, sub: SampledSubgraph, *, drop_user_ids: bool = False) -> Tensor:
        """The layers on a sampled computation graph; one output row per given seed.

        Shapes:
            ``len(sub.seed_index) = B`` -> ``[B, d]``.
        """
        x = self.node_input(sub.input_nodes, drop_user_ids=drop_user_ids)
        for layer, (conv, block) in enumerate(zip(self.convs, sub.blocks, strict=True)):
            x = conv((x, x[: block.n_dst]), block.edge_index)
            if layer < len(self.convs) - 1:
                x = self._between_layers(x)
        return x[sub.seed_index]

    def embed_nodes(self, nodes: Tensor, fan_outs: Sequence[int] | None = None) -> Tensor:
        """Mini-batch embeddings of joint nodes with a freshly sampled computation graph.

        Args:
            nodes: Joint ids.
            fan_outs: Fan-outs per hop (default: the model's).

        Shapes:
            nodes ``[n]`` -> ``[n, d]``.
        """
        sub = sample_neighbors(
            self.graph.csr(),
            nodes,
            self.fan_outs if fan_outs is None else fan_outs,
            generator=self._generator,
        )
        return self.forward_blocks(sub)

    def layerwise(self) -> list[Tensor]:
        """Full-graph layer-wise inference: every layer's output for every joint node.

        Each layer runs over all nodes in chunks of ``inference_chunk`` destination nodes, aggregating every
        neighbour (the source rows of a chunk are gathered once, so pooling projects only those).

        Returns:
            ``L + 1`` tensors ``[U + I, d]``: the input and each layer's output (after ReLU between layers).
        """
        graph = self.graph.csr()
        nodes = torch.arange(graph.num_nodes, device=graph.device)
        x = self.node_input(nodes)
        outs = [x]
        indptr, indices = graph.joint.indptr, graph.joint.indices
        for layer, conv in enumerate(self.convs):
            parts = []
            for a in range(0, graph.num_nodes, self.inference_chunk):
                b = min(a + self.inference_chunk, graph.num_nodes)
                src = indices[indptr[a] : indptr[b]]
                dst = torch.repeat_interleave(
                    torch.arange(b - a, device=x.device), indptr[a + 1 : b + 1] - indptr[a:b]
                )
                src_nodes, local = torch.unique(src, return_inverse=True)
                parts.append(conv((x[src_nodes], x[a:b]), torch.stack([local, dst])))
            x = torch.cat(parts)
            if layer < len(self.convs) - 1:
                x = self._between_layers(x)
            outs.append(x)
        return outs

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
        """Ranking loss on a sampled computation graph around the batch's users, positives and negatives.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]`` -> scalar.
        """
        if neg.dim() == 1:
            neg = neg.unsqueeze(1)
        b = users.numel()
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [B, 1 + K]
        seeds = torch.cat([users, items.reshape(-1) + self.num_users])
        exclude = self.excluded_edges(users, pos)
        sub = sample_neighbors(
            self.graph.csr(), seeds, self.fan_outs, generator=self._generator, exclude_edges=exclude
        )
        self.last_subgraph_sizes = [int(n.numel()) for n in sub.node_ids]
        out = self.forward_blocks(sub, drop_user_ids=self.training)
        user_out, item_out = out[:b], out[b:].view(b, items.shape[1], -1)
        scores = (user_out.unsqueeze(1) * item_out).sum(-1)
        value = ranking_loss(scores[:, 0], scores[:, 1:], loss=loss, temperature=temperature)
        if self.reg_weight > 0:
            rows = [self.input.item_embedding(items)]
            if self.user_ids:
                rows.insert(0, self.input.user_embedding(users))
            value = value + self.reg_weight * batch_l2(*rows, batch_size=b)
        return value

    def excluded_edges(self, users: Tensor, pos: Tensor) -> Tensor | None:
        """The (user, item) edges a training batch is sampled without, ``[2, X]`` (``None``: none).

        The batch's own pairs (``exclude_target_edges``) and, with ``context="older"``, every edge of a
        batch user at or after its earliest positive in the batch (in the user's time order).

        Shapes:
            users ``[B]``, pos ``[B]`` -> ``[2, X]``.
        """
        pairs = torch.stack([users, pos]) if self.exclude_target_edges else None
        if self.time_order is None:
            return pairs
        rank = self.time_order.older_count(users, pos)
        first = torch.full((self.num_users,), torch.iinfo(torch.long).max, device=users.device)
        first = first.scatter_reduce(0, users, rank, reduce="amin")
        batch_users = torch.unique(users)
        start = self.graph.u_indptr[batch_users] + first[batch_users]
        count = torch.where(first[batch_users] > 0, self.graph.u_indptr[batch_users + 1] - start, 0)
        owner = torch.repeat_interleave(batch_users, count)
        offset = torch.arange(int(count.sum()), device=users.device) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        newer = torch.stack([owner, self.time_order.items[torch.repeat_interleave(start, count) + offset]])
        return newer if pairs is None else torch.cat([pairs, newer], dim=1)

    def candidate_scorer(self) -> ScoreFn:
        """Hard-negative scorer on sampled computation graphs (no full-graph pass per batch)."""

        def score_fn(users: Tensor, items: Tensor) -> Tensor:
            with torch.no_grad():
                out = self.embed_nodes(torch.cat([users, items.reshape(-1) + self.num_users]))
                user_out, item_out = out[: users.numel()], out[users.numel() :].view(*items.shape, -1)
                return (user_out.unsqueeze(1) * item_out).sum(-1)

        return score_fn

    # -- scoring --------------------------------------------------------------------------------------

    def precompute(self) -> list[Tensor]:
        """Every layer's output for every node (:meth:`layerwise`), once per :meth:`inference` block."""
        return self.layerwise()

    def _layers(self) -> list[Tensor]:
        cached = self.cached
        return cached if cached is not None else self.layerwise()

    def score_users(self, users: Tensor) -> Tensor:
        """Dot products of the users' final embeddings with every item's.

        Shapes:
            users ``[B]`` -> ``[B, I]``.
        """
        final = self._layers()[-1]
        return final[users.to(final.device)] @ final[self.num_users :].T

    def embed_history(self, history: History) -> Tensor:
        """Final embeddings of new users from their history items, with the trained layers.

        Layer ``l`` aggregates the history items' layer ``l - 1`` outputs on the training graph (the new
        user does not change them) into the user's own layer ``l - 1`` representation, whose layer-0 input
        is the unknown-user vector plus its projected features when both exist.

        Shapes:
            ``len(history) = B`` -> ``[B, d]``.
        """
        layers = self._layers()
        device = layers[0].device
        history = history.to(device)
        b = len(history)
        x = self.unknown_user.expand(b, -1)
        if self.input.user_projection is not None and history.user_features is not None:
            x = x + self.input.user_projection(history.user_features.to(x.dtype))
        edge_index = torch.stack([torch.arange(history.items.numel(), device=device), history.rows])
        sources = history.items + self.num_users
        for layer, conv in enumerate(self.convs):
            x = conv((layers[layer][sources], x), edge_index, size=(sources.numel(), b))
            if layer < len(self.convs) - 1:
                x = self._between_layers(x)
        return x

    def score_history(self, history: History) -> Tensor:
        """Scores of new users: :meth:`embed_history` dotted with every item's final embedding.

        Shapes:
            ``len(history) = B`` -> ``[B, I]``.
        """
        final = self._layers()[-1]
        return self.embed_history(history) @ final[self.num_users :].T
