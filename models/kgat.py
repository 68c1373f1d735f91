"""KGAT: attentive propagation over the collaborative knowledge graph of users, items and KG entities.

Wang et al., "KGAT: Knowledge Graph Attention Network for Recommendation", KDD 2019,
https://arxiv.org/abs/1905.07854 (authors' code: https://github.com/xiangwang1223/knowledge_graph_attention_network).

The collaborative knowledge graph (CKG) joins the user-item graph to the KG: nodes are the KG entities
(entity ``i < I`` is item ``i``) and the users; edges are the KG triples with their inverses (relations
``0..R-1``, ``R`` = :attr:`Graphs.num_relations`), ``user -interact-> item`` (relation ``R``) and
``item -interacted_by-> user`` (``R + 1``). Each edge ``(h, r, t)`` gets the attention of Eq. 4,
``pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r)``, soft-maxed over the edges leaving ``h``; as in the
authors' code it is recomputed without gradient once per epoch (and kept as a buffer, so a restored
checkpoint keeps the attention its embeddings were trained with). Layer ``l`` aggregates
``e_N(h) = sum_t pi(h, r, t) e_t`` with the bi-interaction aggregator (Eq. 8),
``LeakyReLU(W1 (e_h + e_N)) + LeakyReLU(W2 (e_h * e_N))``, then message dropout; the final representation
concatenates the ego embedding with every layer's L2-normalised output, and a user's score for an item is
the dot product. Training adds to BPR on interactions the TransR loss of Eq. 2 on a batch of KG triples
(tails corrupted uniformly), with L2 on the batch's ego embeddings.

The defaults are the paper's. Measured on ML-100K-KG and Last.fm-KG (benchmarks/RESULTS.md, issue 12),
validation picked ``aggregator="linear"`` with ``kg_weight=0`` on both: the bi-interaction layers scored
far lower on these small data sets, and training the attention's relation parameters through TransR (even
at weight 0.01) made it worse, while propagating over the KG edges is what lifts the long-tail items.

Explanations follow the paper's case study: a recommended item is explained by the paths
``user -interact-> item j -r1-> ... -> recommended item`` (one or two KG hops after an item of the user's
training history), ranked by the product of the attention weights along the path (:meth:`KGAT.explain`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax

from models.base import EmbeddingRecommender, Trial, register_model
from models.losses import LossName

if TYPE_CHECKING:
    from models.graphs import Graphs


@dataclass(frozen=True)
class KGPath:
    """One explanation path: the user interacted with ``entities[0]``, which leads to ``entities[-1]``.

    Attributes:
        user: Internal user id.
        entities: ``(j, [e,] i)``: the history item ``j``, an optional intermediate KG entity, the
            recommended item ``i`` (entity ids; ``< I`` are items).
        relations: The KG relation of each hop (``r >= R/2`` is the inverse of ``r - R/2``).
        weight: Product of the attention weights along the path (the interaction edge included).
    """

    user: int
    entities: tuple[int, ...]
    relations: tuple[int, ...]
    weight: float


class _SpMM(torch.autograd.Function):
    """``A @ x`` for a fixed (gradient-free) CSR ``A`` whose transpose ``A^T`` is given for the backward."""

    @staticmethod
    def forward(ctx: Any, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[None, None, Tensor]:
        return None, None, torch.sparse.mm(ctx.adj_t, grad_outputs[0])


@register_model
class KGAT(EmbeddingRecommender):
    """KGAT on the CKG (see the module docstring). Nodes: entities ``0..E-1`` then users ``E..E+U-1``.

    Args:
        num_users: U.
        num_items: I.
        num_entities: E (``>= I``).
        num_relations: R, KG relations including inverses (``Graphs.num_relations``).
        kg_edge_index: KG edges ``head -> tail`` with inverses, long ``[2, T]``.
        kg_edge_type: Relation of each KG edge, long ``[T]``.
        ui_edge_index: Training (user, item) pairs, long ``[2, N]``.
        embedding_dim: d, width of the ego embeddings and of the relation embeddings.
        num_layers: L; layer ``l`` (1-based) outputs ``max(1, d // 2^(l-1))`` columns (the paper's
            ``[64, 32, 16]`` for d = 64, L = 3).
        message_dropout: Dropout on each layer's output during training.
        reg_weight: L2 on the batch's ego embeddings (users, items; entities and relations in the KG term).
        kg_weight: Weight of the TransR loss next to BPR (0 turns it off).
        init_std: Standard deviation of the normal initialisation of the embeddings.
        aggregator: ``"bi-interaction"`` (the paper's Eq. 8, layers of widths ``d, d/2, d/4``) or
            ``"linear"``: ``e^(l+1) = A_pi e^(l)`` with no transform, no non-linearity and the layers
            averaged, LightGCN's propagation (He et al., SIGIR 2020) on the attentive CKG; it keeps the KG
            paths and attention, and has no weights to over-fit on sparse data.
    """

    name = "kgat"
    family = "graph"
    requires = frozenset({"user_item", "kg"})
    attention: Tensor
    edge_src: Tensor
    edge_dst: Tensor
    edge_type: Tensor
    pair_of_edge: Tensor
    crow: Tensor
    col: Tensor
    perm_t: Tensor
    crow_t: Tensor
    col_t: Tensor

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_entities: int,
        num_relations: int,
        kg_edge_index: Tensor,
        kg_edge_type: Tensor,
        ui_edge_index: Tensor,
        embedding_dim: int = 64,
        num_layers: int = 3,
        message_dropout: float = 0.1,
        reg_weight: float = 1e-5,
        kg_weight: float = 1.0,
        init_std: float = 0.1,
        aggregator: Literal["bi-interaction", "linear"] = "bi-interaction",
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        if aggregator not in ("bi-interaction", "linear"):
            raise ValueError(f"aggregator must be 'bi-interaction' or 'linear', got {aggregator!r}")
        if num_entities < num_items:
            raise ValueError(f"num_entities ({num_entities}) must count the {num_items} items")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= message_dropout < 1.0:
            raise ValueError(f"message_dropout must lie in [0, 1), got {message_dropout}")
        if kg_weight < 0:
            raise ValueError(f"kg_weight must be non-negative, got {kg_weight}")
        self.num_entities = num_entities
        self.num_kg_relations = num_relations
        self.num_layers = num_layers
        self.layer_dims = [max(1, embedding_dim // 2**layer) for layer in range(num_layers)]
        self.kg_weight = kg_weight
        self.init_std = init_std
        self.aggregator = aggregator
        self.num_kg_edges = int(kg_edge_index.shape[1])

        # The CKG's edges: KG edges first (their column order kept), then user -> item, then item -> user.
        users = ui_edge_index[0].long() + num_entities
        items = ui_edge_index[1].long()
        interact, interacted_by = num_relations, num_relations + 1
        src = torch.cat([kg_edge_index[0].long(), users, items])
        dst = torch.cat([kg_edge_index[1].long(), items, users])
        rel = torch.cat(
            [kg_edge_type.long(), torch.full_like(users, interact), torch.full_like(items, interacted_by)]
        )
        self.register_buffer("edge_src", src, persistent=False)
        self.register_buffer("edge_dst", dst, persistent=False)
        self.register_buffer("edge_type", rel, persistent=False)
        num_nodes = num_entities + num_users
        self.num_nodes = num_nodes
        # Edges with the same (h, t) share one CSR entry (their attentions add up).
        key = src * num_nodes + dst
        pairs, pair_of_edge = torch.unique(key, return_inverse=True)
        rows, cols = pairs // num_nodes, pairs % num_nodes
        self.register_buffer("pair_of_edge", pair_of_edge, persistent=False)
        self.register_buffer("crow", _crow(rows, num_nodes), persistent=False)
        self.register_buffer("col", cols, persistent=False)
        order_t = torch.argsort(cols * num_nodes + rows)
        self.register_buffer("perm_t", order_t, persistent=False)
        self.register_buffer("crow_t", _crow(cols[order_t], num_nodes), persistent=False)
        self.register_buffer("col_t", rows[order_t], persistent=False)
        # Attention is state: recomputed each epoch, saved with the weights it was computed from.
        self.register_buffer("attention", torch.zeros(src.numel()))

        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.entity_embedding = nn.Embedding(num_entities, embedding_dim)
        self.relation_embedding = nn.Embedding(num_relations + 2, embedding_dim)
        self.relation_proj = nn.Parameter(torch.empty(num_relations + 2, embedding_dim, embedding_dim))
        dims = [embedding_dim, *self.layer_dims]
        self.w_sum = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.w_product = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.dropout = nn.Dropout(message_dropout)
        self._record_hparams(
            embedding_dim=embedding_dim,
            num_layers=num_layers,
            message_dropout=message_dropout,
            reg_weight=reg_weight,
            kg_weight=kg_weight,
            init_std=init_std,
            aggregator=aggregator,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal ego embeddings, Xavier projections and layers, and the attention of the initial state."""
        for table in (self.user_embedding, self.entity_embedding, self.relation_embedding):
            nn.init.normal_(table.weight, std=self.init_std)
        nn.init.xavier_uniform_(self.relation_proj)
        for layer in [*self.w_sum, *self.w_product]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.update_attention()

    @classmethod
    def from_graphs(cls, graphs: Graphs, **hparams: Any) -> KGAT:
        """Build on the graphs' KG and training interactions, the paper's defaults overridden."""
        if graphs.kg_edge_index is None or graphs.kg_edge_type is None:
            raise ValueError("KGAT needs a knowledge graph (the dataset has none; see tasks/compat.py)")
        return cls(
            num_users=graphs.num_users,
            num_items=graphs.num_items,
            num_entities=graphs.num_entities,
            num_relations=graphs.num_relations,
            kg_edge_index=graphs.kg_edge_index,
            kg_edge_type=graphs.kg_edge_type,
            ui_edge_index=graphs.ui_edge_index,
            **cls.resolve_hparams(hparams),
        )

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """The paper's setting: d = 64, layers [64, 32, 16], message dropout 0.1, L2 1e-5, TransR on."""
        return {
            "embedding_dim": 64,
            "num_layers": 3,
            "message_dropout": 0.1,
            "reg_weight": 1e-5,
            "kg_weight": 1.0,
            "init_std": 0.1,
            "aggregator": "bi-interaction",
        }

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Depth, dropout, L2 and the weight of the KG loss (the paper's grid, widened)."""
        return {
            "num_layers": trial.suggest_int("num_layers", 1, 3),
            "message_dropout": trial.suggest_float("message_dropout", 0.0, 0.3),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-2, log=True),
            "kg_weight": trial.suggest_float("kg_weight", 0.0, 1.0),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
            "aggregator": trial.suggest_categorical("aggregator", ["bi-interaction", "linear"]),
        }

    # -- attention ---------------------------------------------------------------------------------------

    def _node_table(self) -> Tensor:
        """Ego embeddings of every CKG node, entities first, ``[E + U, d]``."""
        return torch.cat([self.entity_embedding.weight, self.user_embedding.weight])

    @torch.no_grad()
    def update_attention(self) -> None:
        """Recompute ``pi(h, r, t)`` for every edge from the current embeddings (Eq. 4 and 5)."""
        x = self._node_table()
        logits = torch.empty(self.edge_src.numel(), device=x.device)
        for r in torch.unique(self.edge_type).tolist():
            idx = (self.edge_type == r).nonzero().squeeze(1)
            for chunk in idx.split(1 << 16):
                w = self.relation_proj[r]
                head = x[self.edge_src[chunk]] @ w
                tail = x[self.edge_dst[chunk]] @ w
                logits[chunk] = (tail * torch.tanh(head + self.relation_embedding.weight[r])).sum(1)
        self.attention.copy_(softmax(logits, self.edge_src, num_nodes=self.num_nodes))

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:
        """Keep the generator for KG sampling and refresh the attention (the authors do it every epoch)."""
        super().on_epoch_start(epoch, generator)
        if epoch > 1:
            self.update_attention()

    def _adjacency(self) -> tuple[Tensor, Tensor]:
        """The attention-weighted CKG adjacency ``A[h, t]`` and its transpose, sparse CSR."""
        values = torch.zeros(self.col.numel(), device=self.attention.device)
        values.index_add_(0, self.pair_of_edge, self.attention)
        size = (self.num_nodes, self.num_nodes)
        adj = torch.sparse_csr_tensor(self.crow, self.col, values, size=size, check_invariants=False)
        adj_t = torch.sparse_csr_tensor(
            self.crow_t, self.col_t, values[self.perm_t], size=size, check_invariants=False
        )
        return adj, adj_t

    # -- propagation -------------------------------------------------------------------------------------

    def propagate(self) -> Tensor:
        """Final node representations of every CKG node.

        Bi-interaction: the ego embedding and every layer's normalised output, concatenated. Linear: the
        mean of ``e, A e, ..., A^L e``.

        Shapes:
            ``[E + U, d + sum(layer_dims)]`` (bi-interaction), ``[E + U, d]`` (linear).
        """
        adj, adj_t = self._adjacency()
        x = self._node_table()
        if self.aggregator == "linear":
            total = x
            for _ in range(self.num_layers):
                x = _SpMM.apply(adj, adj_t, x)
                total = total + x
            return total / (self.num_layers + 1)
        outputs = [x]
        for w_sum, w_product in zip(self.w_sum, self.w_product, strict=True):
            neighbours: Tensor = _SpMM.apply(adj, adj_t, x)
            x = F.leaky_relu(w_sum(x + neighbours), 0.2) + F.leaky_relu(w_product(x * neighbours), 0.2)
            x = self.dropout(x)
            outputs.append(F.normalize(x, dim=1))
        return torch.cat(outputs, dim=1)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Users' and items' final representations.

        Shapes:
            ``[U, d + sum(layer_dims)]``, ``[I, d + sum(layer_dims)]``.
        """
        out = self.propagate()
        return out[self.num_entities :], out[: self.num_items]

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The ego tables of users and items.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.entity_embedding.weight[: self.num_items]

    # -- training ----------------------------------------------------------------------------------------

    def loss(
        self,
        users: Tensor,
        pos: Tensor,
        neg: Tensor,
        *,
        loss: LossName = "bpr",
        temperature: float = 0.2,
    ) -> Tensor:
        """The ranking loss on interactions plus ``kg_weight`` x the TransR loss on as many KG triples.

        Shapes:
            users ``[B]``, pos ``[B]``, neg ``[B]`` or ``[B, K]`` -> scalar.
        """
        out = super().loss(users, pos, neg, loss=loss, temperature=temperature)
        if self.kg_weight > 0 and self.num_kg_edges > 0:
            out = out + self.kg_weight * self.transr_loss(users.numel())
        return out

    def transr_loss(self, batch_size: int) -> Tensor:
        """The TransR loss (Eq. 1, 2) of a batch of KG triples, with ``g = ||W_r e_h + e_r - W_r e_t||^2``.

        The loss is ``-ln sigmoid(g(h, r, t') - g(h, r, t))`` for a triple and a corrupted tail ``t'``.
        Triples are drawn uniformly from the KG edges (inverses included), corrupted tails uniformly from
        the entities, both from the trainer's seeded generator; L2 on the batch's ego embeddings.
        """
        device = self.attention.device
        generator = self._generator
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randint(0, self.num_kg_edges, (batch_size,), generator=generator, device=gen_device)
        bad = torch.randint(0, self.num_entities, (batch_size,), generator=generator, device=gen_device)
        idx, bad = idx.to(device), bad.to(device)
        h, t, r = self.edge_src[idx], self.edge_dst[idx], self.edge_type[idx]
        e_r = self.relation_embedding(r)
        table = self.entity_embedding
        # One [n_r, d] x [d, d] product per relation in the batch: gathering a [B, d, d] stack of W_r for
        # a batched product costs several times more.
        proj = self._project(torch.cat([table(h), table(t), table(bad)]), r.repeat(3))
        proj_h, proj_t, proj_bad = proj.split(batch_size)
        good = ((proj_h + e_r - proj_t) ** 2).sum(1)
        corrupt = ((proj_h + e_r - proj_bad) ** 2).sum(1)
        kg = F.softplus(good - corrupt).mean()
        l2 = (proj_h.pow(2).sum() + e_r.pow(2).sum() + proj_t.pow(2).sum() + proj_bad.pow(2).sum()) / 2
        return kg + self.reg_weight * l2 / batch_size

    def _project(self, x: Tensor, relation: Tensor) -> Tensor:
        """``x[k] @ W_{relation[k]}`` for every row, grouped by relation.

        Shapes:
            x ``[B, d]``, relation ``[B]`` -> ``[B, d]``.
        """
        order = torch.argsort(relation, stable=True)
        counts = torch.bincount(relation, minlength=self.num_kg_relations + 2).tolist()
        blocks = x[order].split(counts)
        # unbind: one backward for the whole stack; indexing W_r per relation fills a zero [R, d, d] each.
        weights = self.relation_proj.unbind(0)
        projected = torch.cat([block @ weights[rel] for rel, block in enumerate(blocks) if block.numel()])
        return projected[torch.argsort(order)]

    # -- explanations ------------------------------------------------------------------------------------

    def explainer(self) -> KGExplainer:
        """The CKG and its current attention, detached on the CPU.

        It is what :meth:`explain` reads, and what is exported beside the served model so that the served
        model can explain its recommendations too.
        """
        return KGExplainer(
            edge_src=self.edge_src.detach().cpu(),
            edge_dst=self.edge_dst.detach().cpu(),
            edge_type=self.edge_type.detach().cpu(),
            attention=self.attention.detach().float().cpu(),
            num_entities=self.num_entities,
            num_kg_edges=self.num_kg_edges,
            num_kg_relations=self.num_kg_relations,
        )

    def explain(self, user: int, items: Sequence[int], top: int = 3) -> list[list[KGPath]]:
        """The ``top`` strongest KG paths to each of ``items`` (:meth:`KGExplainer.explain`)."""
        return self.explainer().explain(user, items, top)


@dataclass(frozen=True, eq=False)
class KGExplainer:
    """Explanations of KGAT's recommendations from the CKG and the attention of its edges.

    Attributes:
        edge_src: Head node of every CKG edge (entities ``0..E-1``, user ``u`` at ``E + u``), long ``[N]``.
        edge_dst: Tail node of every edge, long ``[N]``.
        edge_type: Relation of every edge (KG relations first, then interact, interacted_by), long ``[N]``.
        attention: ``pi(h, r, t)`` of every edge, float ``[N]``.
        num_entities: E.
        num_kg_edges: The first ``num_kg_edges`` edges are the KG's (with inverses); the rest interactions.
        num_kg_relations: KG relations including inverses (``2R``; ``r >= R`` is the inverse of ``r - R``).
        entity_names: Raw id of every entity (items first), for :meth:`describe`; empty when unknown.
        relation_names: Name of every base relation (``R`` of them), for :meth:`describe`.
    """

    edge_src: Tensor
    edge_dst: Tensor
    edge_type: Tensor
    attention: Tensor
    num_entities: int
    num_kg_edges: int
    num_kg_relations: int
    entity_names: tuple[str, ...] = ()
    relation_names: tuple[str, ...] = ()

    @torch.no_grad()
    def explain(self, user: int, items: Sequence[int], top: int = 3) -> list[list[KGPath]]:
        """The ``top`` KG paths from the user's training items to each of ``items``, strongest first.

        A path is ``user -interact-> j -r1-> i`` or ``user -interact-> j -r1-> e -r2-> i`` with ``j`` an item
        the user interacted with in training, each hop an edge of the CKG; its weight is the product of
        the attention weights of its edges. An item that no such path reaches gets an empty list.

        Args:
            user: Internal user id.
            items: Internal ids of the recommended items.
            top: Paths kept per item.

        Returns:
            One list of :class:`KGPath` per item.
        """
        src, dst, rel, att = self.edge_src, self.edge_dst, self.edge_type, self.attention
        own = (src == self.num_entities + int(user)).nonzero().squeeze(1)
        history = torch.zeros(self.num_entities, dtype=torch.bool)
        history[dst[own]] = True
        item_weight = torch.zeros(self.num_entities, dtype=att.dtype)
        item_weight[dst[own]] = att[own]
        kg = torch.arange(self.num_kg_edges)
        first = kg[history[src[kg]]]  # KG edges leaving a history item
        out: list[list[KGPath]] = []
        for item in items:
            item = int(item)
            paths: list[KGPath] = []
            for e in first[dst[first] == item].tolist():  # j -r-> i
                j = int(src[e])
                paths.append(KGPath(int(user), (j, item), (int(rel[e]),), float(item_weight[j] * att[e])))
            for e2 in kg[dst[kg] == item].tolist():  # j -r1-> e -r2-> i
                middle = int(src[e2])
                if middle == item:
                    continue
                for e1 in first[(dst[first] == middle) & (src[first] != item)].tolist():
                    j = int(src[e1])
                    weight = float(item_weight[j] * att[e1] * att[e2])
                    paths.append(KGPath(int(user), (j, middle, item), (int(rel[e1]), int(rel[e2])), weight))
            paths.sort(key=lambda p: (-p.weight, p.entities, p.relations))
            out.append(paths[:top])
        return out

    def describe(self, path: KGPath) -> str:
        """One line for a path in raw ids and relation names: ``50 -[film.genre]-> m.0hcr -[...]-> 181``."""
        base = self.num_kg_relations // 2

        def entity(e: int) -> str:
            return self.entity_names[e] if e < len(self.entity_names) else str(e)

        def relation(r: int) -> str:
            name = self.relation_names[r % base] if base and r % base < len(self.relation_names) else str(r)
            return f"{name} (inverse)" if base and r >= base else name

        text = entity(path.entities[0])
        for r, e in zip(path.relations, path.entities[1:], strict=True):
            text += f" -[{relation(r)}]-> {entity(e)}"
        return f"{text} ({path.weight:.3g})"

    def save(self, folder: str | Path) -> Path:
        """Write ``edges.npz`` and ``explainer.json`` into ``folder`` (created)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / "edges.npz",
            edge_src=self.edge_src.numpy(),
            edge_dst=self.edge_dst.numpy(),
            edge_type=self.edge_type.numpy(),
            attention=self.attention.numpy(),
        )
        meta = {
            "num_entities": self.num_entities,
            "num_kg_edges": self.num_kg_edges,
            "num_kg_relations": self.num_kg_relations,
            "entity_names": list(self.entity_names),
            "relation_names": list(self.relation_names),
        }
        (folder / "explainer.json").write_text(json.dumps(meta))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> KGExplainer:
        """Read what :meth:`save` wrote."""
        folder = Path(folder)
        arrays = np.load(folder / "edges.npz")
        meta = json.loads((folder / "explainer.json").read_text())
        return cls(
            edge_src=torch.from_numpy(arrays["edge_src"]),
            edge_dst=torch.from_numpy(arrays["edge_dst"]),
            edge_type=torch.from_numpy(arrays["edge_type"]),
            attention=torch.from_numpy(arrays["attention"]),
            num_entities=int(meta["num_entities"]),
            num_kg_edges=int(meta["num_kg_edges"]),
            num_kg_relations=int(meta["num_kg_relations"]),
            entity_names=tuple(meta["entity_names"]),
            relation_names=tuple(meta["relation_names"]),
        )


def _crow(rows: Tensor, num_rows: int) -> Tensor:
    """CSR row pointers of sorted row indices."""
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), 0)
    return crow
