from __future__ import annotations

import pytest
import torch

from models.base import History
from models.graphsage import GraphSAGE
from models.pinsage import PinSage
from tests.models.planted import planted


@pytest.fixture(scope="module")
def graphs():
    return planted()[2]


def _pair(cls, graphs, exponent):
    torch.manual_seed(0)
    plain = cls.from_graphs(graphs, embedding_dim=8).eval()
    debiased = cls.from_graphs(graphs, embedding_dim=8, popularity_exponent=exponent).eval()
    debiased.load_state_dict(plain.state_dict())
    if isinstance(plain, PinSage):  # neighbourhoods are buffers too; same seed, same walks
        assert torch.equal(plain.neighbors, debiased.neighbors)
    return plain, debiased


@pytest.mark.parametrize("cls", [GraphSAGE, PinSage])
def test_popularity_exponent_takes_the_log_item_popularity_off_every_score(cls, graphs):
    plain, debiased = _pair(cls, graphs, 0.5)
    degree = torch.bincount(graphs.ui_edge_index[1], minlength=graphs.num_items).float()
    users = torch.arange(0, 40, 4)
    history = History.from_lists(
        [[1, 2, 3], [5], [0, 7, 9, 11]],
        user_features=None if graphs.user_features is None else graphs.user_features[:3],
    )
    with plain.inference(), debiased.inference():
        raw_known, raw_new = plain.score_users(users), plain.score_history(history)
        known, new = debiased.score_users(users), debiased.score_history(history)
    assert torch.allclose(known, raw_known - 0.5 * torch.log1p(degree), atol=1e-6)
    assert torch.allclose(new, raw_new - 0.5 * torch.log1p(degree), atol=1e-6)
    # The top-20 moves to less popular items.
    top_raw, top = raw_known.topk(20, dim=1).indices, known.topk(20, dim=1).indices
    assert degree[top].mean() < degree[top_raw].mean()


@pytest.mark.parametrize("cls", [GraphSAGE, PinSage])
def test_exponent_zero_keeps_the_dot_products_and_a_negative_one_is_refused(cls, graphs):
    plain, same = _pair(cls, graphs, 0.0)
    with plain.inference(), same.inference():
        assert torch.equal(plain.score_users(torch.arange(5)), same.score_users(torch.arange(5)))
    with pytest.raises(ValueError, match="popularity_exponent"):
        cls.from_graphs(graphs, popularity_exponent=-0.1)
