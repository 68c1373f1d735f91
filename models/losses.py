"""Ranking losses shared by every recommender: BPR, sampled softmax (InfoNCE) and batch L2.

All functions take already-computed scores, so a model only decides how it scores a (user, item) pair.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossName = Literal["bpr", "softmax"]


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """Bayesian personalised ranking loss, ``mean(softplus(s_neg - s_pos))`` over every negative.

    ``softplus(x) = -log(sigmoid(-x))``, so this is ``-log sigmoid(s_pos - s_neg)`` written in the form that
    does not overflow. Rendle et al., UAI 2009: https://arxiv.org/abs/1205.2618

    Args:
        pos_scores: Score of each positive pair.
        neg_scores: Scores of the negatives drawn for each positive.

    Returns:
        A scalar.

    Shapes:
        pos_scores ``[B]``, neg_scores ``[B, K]``.
    """
    return F.softplus(neg_scores - pos_scores.unsqueeze(-1)).mean()


def softmax_loss(pos_scores: Tensor, neg_scores: Tensor, temperature: float = 0.2) -> Tensor:
    """Sampled softmax / InfoNCE: cross-entropy of the positive against its sampled negatives.

    ``-log(exp(s_pos / t) / (exp(s_pos / t) + sum_k exp(s_neg_k / t)))``, averaged over the batch.

    Args:
        pos_scores: Score of each positive pair.
        neg_scores: Scores of the negatives drawn for each positive.
        temperature: Softmax temperature ``t`` (> 0); smaller is sharper.

    Returns:
        A scalar.

    Shapes:
        pos_scores ``[B]``, neg_scores ``[B, K]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = torch.cat([pos_scores.unsqueeze(-1), neg_scores], dim=-1) / temperature
    return torch.logsumexp(logits, dim=-1).sub(logits[:, 0]).mean()


def batch_l2(*embeddings: Tensor, batch_size: int) -> Tensor:
    """Half the squared L2 norm of the given embedding rows, divided by the batch size.

    This is the regulariser of LightGCN's reference code (``1/2 * ||E0[batch]||^2 / B``): it penalises only
    the rows a batch touches, so a rarely seen node is not shrunk at every step.

    Args:
        *embeddings: Embedding rows of any shape ending in ``d``.
        batch_size: ``B``, the number of (user, positive) pairs in the batch.

    Returns:
        A scalar.
    """
    total = sum((e.pow(2).sum() for e in embeddings), torch.zeros((), device=embeddings[0].device))
    return 0.5 * total / batch_size


def ranking_loss(
    pos_scores: Tensor, neg_scores: Tensor, *, loss: LossName = "bpr", temperature: float = 0.2
) -> Tensor:
    """Dispatch to :func:`bpr_loss` or :func:`softmax_loss` by name.

    Args:
        pos_scores: Score of each positive pair.
        neg_scores: Scores of the negatives.
        loss: ``"bpr"`` or ``"softmax"``.
        temperature: Softmax temperature (ignored by BPR).

    Returns:
        A scalar.

    Shapes:
        pos_scores ``[B]``, neg_scores ``[B, K]``.
    """
    if loss == "bpr":
        return bpr_loss(pos_scores, neg_scores)
    if loss == "softmax":
        return softmax_loss(pos_scores, neg_scores, temperature)
    raise ValueError(f"Unknown loss '{loss}'. Choose one of: bpr, softmax.")
