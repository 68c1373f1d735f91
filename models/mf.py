"""Matrix factorisation trained with BPR (MF-BPR), the baseline every graph model must beat.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009,
https://arxiv.org/abs/1205.2618. Tuned fairly (dimension, L2 and learning rate searched like the GNNs'), it
often matches graph models (Rendle et al. 2020, https://arxiv.org/abs/2005.09683), so it is the honest floor.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models.base import SGD_PRIOR_TRAIN, EmbeddingRecommender, SearchPrior, Trial, register_model


@register_model
class MFBPR(EmbeddingRecommender):
    """User and item embedding tables scored by their dot product.

    Args:
        num_users: U.
        num_items: I.
        embedding_dim: d.
        reg_weight: Coefficient of the batch L2 term (``1/2 ||E[batch]||^2 / B``).
        init_std: Standard deviation of the normal initialisation.
    """

    name = "mf"
    family = "embedding"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        reg_weight: float = 1e-4,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim, reg_weight)
        self.init_std = init_std
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self._record_hparams(embedding_dim=embedding_dim, reg_weight=reg_weight, init_std=init_std)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw both tables from ``N(0, init_std^2)``."""
        nn.init.normal_(self.user_embedding.weight, std=self.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.init_std)

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """D = 64 and L2 1e-4, the setting LightGCN's paper compares MF-BPR at."""
        return {"embedding_dim": 64, "reg_weight": 1e-4, "init_std": 0.1}

    @staticmethod
    def search_space(trial: Trial) -> dict[str, Any]:
        """Dimension, L2 weight and initial scale, searched as widely as the graph models' (fair tuning).

        The L2 range reaches 1e-1: MF-BPR, having no propagation to smooth its embeddings, needs a stronger
        penalty than the GNNs (on HetRec Last.fm its validation NDCG@10 peaks at 1e-2, see
        benchmarks/RESULTS.md), so a range that ends at 1e-2 would put its optimum on the boundary.
        The initial scale reaches 1e-3: with hard negatives its best value on Last.fm is 0.003 (valid NDCG@10
        0.1891 against 0.1748 at the default 0.1).
        """
        return {
            "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64, 128]),
            "reg_weight": trial.suggest_float("reg_weight", 1e-6, 1e-1, log=True),
            "init_std": trial.suggest_float("init_std", 1e-3, 0.2, log=True),
        }

    @classmethod
    def search_prior(cls) -> SearchPrior:
        """The recipe found by hand on HetRec Last.fm (benchmarks/RESULTS.md, fourth round).

        Hard negatives (pool 32), ``init_std`` 0.003, L2 1e-2, lr 1e-3 at batch 2048: test Recall@10 /
        NDCG@10 0.2163 / 0.2129, mean of three seeds.
        """
        return SearchPrior(hparams={"init_std": 0.003, "reg_weight": 1e-2}, train=dict(SGD_PRIOR_TRAIN))

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """The tables themselves (no propagation).

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.item_embedding.weight

    def layer0_embeddings(self) -> tuple[Tensor, Tensor]:
        """The same tables.

        Shapes:
            ``[U, d]``, ``[I, d]``.
        """
        return self.user_embedding.weight, self.item_embedding.weight
