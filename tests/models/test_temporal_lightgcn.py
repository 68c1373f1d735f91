from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lightgcn import LightGCN
from models.temporal_lightgcn import TemporalLightGCN, recency_weights, weighted_bipartite_adjacency
from tasks.compat import ModelDataMismatchError, check_requirements
from tasks.graphs import build_graphs
from tasks.ingest.dataset import Dataset
from tasks.split import Split
from tests.models.planted import random_graphs

DAY = 86400


def _timed_graphs():
    """User 0 rated items 0 (day 0) and 1 (day 9); user 1 rated items 0 and 1 on day 10; a later test pair."""
    user = np.array([0, 0, 1, 1, 1], dtype=np.int64)
    item = np.array([0, 1, 0, 1, 2], dtype=np.int64)
    time = np.array([0, 9, 10, 10, 500], dtype=np.int64) * DAY
    dataset = Dataset(
        name="timed",
        user=user,
        item=item,
        rating=None,
        timestamp=time,
        user_ids=np.arange(2),
        item_ids=np.arange(3),
    )
    pairs = np.stack([user, item], 1)
    split = Split("fixed", 0, 2, 3, pairs[:4], np.zeros((0, 2), np.int64), pairs[4:])
    return build_graphs(dataset, split)


def test_edge_ages_are_days_before_the_training_cut_and_ignore_held_out_times():
    graphs = _timed_graphs()
    assert graphs.ui_edge_age is not None
    # Edges sorted by (user, item): (0,0) day 0, (0,1) day 9, (1,0) day 10, (1,1) day 10; the test pair on
    # day 500 must not move the cut (day 10).
    assert graphs.ui_edge_age.tolist() == [10.0, 1.0, 0.0, 0.0]
    assert graphs.to("cpu").ui_edge_age is not None


def test_recency_weights_decay_from_each_users_latest_edge():
    graphs = _timed_graphs()
    assert graphs.ui_edge_age is not None
    w = recency_weights(graphs.ui_edge_index, graphs.ui_edge_age, 2, half_life_days=9.0, floor=0.2)
    # User 0's latest edge (day 9) keeps weight 1; its edge 9 days older halves above the floor.
    assert w.tolist() == pytest.approx([0.2 + 0.8 * 0.5, 1.0, 1.0, 1.0])
    off = recency_weights(graphs.ui_edge_index, graphs.ui_edge_age, 2, half_life_days=None, floor=0.2)
    assert off.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_decay_off_is_lightgcn_exactly():
    graphs = random_graphs(num_users=15, num_items=11, num_pairs=50, seed=4)
    ones = torch.ones(graphs.ui_edge_index.shape[1])
    adj = weighted_bipartite_adjacency(graphs.ui_edge_index, ones, graphs.num_users, graphs.num_items)
    assert torch.allclose(adj.to_dense(), graphs.ui_adj.to_dense(), atol=1e-7)
    torch.manual_seed(0)
    twin = LightGCN.from_graphs(graphs, embedding_dim=6)
    torch.manual_seed(0)
    model = TemporalLightGCN(graphs.num_users, graphs.num_items, adj, half_life_days=None, embedding_dim=6)
    assert torch.allclose(torch.cat(model.embeddings()), torch.cat(twin.embeddings()), atol=1e-6)


def test_recent_items_weigh_more_in_a_users_embedding():
    graphs = _timed_graphs()
    model = TemporalLightGCN.from_graphs(graphs, half_life_days=1.0, floor=0.0, num_layers=1, embedding_dim=4)
    adj = model.adj.to_dense()
    # User 0 -> item 1 (rated on its last day) outweighs user 0 -> item 0 (rated 9 days before).
    assert adj[0, 2 + 1] > 10 * adj[0, 2 + 0]
    plain = TemporalLightGCN.from_graphs(graphs, half_life_days=None, num_layers=1, embedding_dim=4).adj
    assert torch.allclose(plain.to_dense(), graphs.ui_adj.to_dense(), atol=1e-7)
    assert model.hparams["half_life_days"] == 1.0


def test_data_without_timestamps_is_refused_up_front():
    graphs = random_graphs()
    assert graphs.ui_edge_age is None
    with pytest.raises(ModelDataMismatchError, match="temporal_lightgcn cannot run .*needs timestamps"):
        check_requirements(["temporal_lightgcn"], graphs, "toy")
    check_requirements(["lightgcn"], graphs, "toy")
