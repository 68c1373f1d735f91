from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from models.base import EmbeddingRecommender, History, Recommender
from tasks.evaluate import (
    Metrics,
    UnsupportedSplitError,
    evaluate,
    full_ranking_metrics,
    head_items,
    popularity_metrics,
    sparse_users,
)
from tasks.split import Split

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def table_score_fn(table: torch.Tensor):
    def score_fn(users: torch.Tensor) -> torch.Tensor:
        return table[users.to(table.device)]

    return score_fn


# Two users with truth, one without. User 0 has seen item 0 and wants {1, 3}; user 1 wants {2}.
TOY_SCORES = torch.tensor(
    [
        [10.0, 4.0, 8.0, 3.0, 6.0],  # ranking after masking item 0: 2, 4, 1, 3
        [1.0, 2.0, 5.0, 4.0, 3.0],  # ranking: 2, 3, 4, 1, 0
        [9.0, 9.0, 9.0, 9.0, 9.0],
    ]
)
TOY_TRUTH = torch.tensor([[0, 1], [0, 3], [1, 2]])
TOY_EXCLUDE = torch.tensor([[0, 0], [2, 1]])


def test_hand_computed_toy_case() -> None:
    m = full_ranking_metrics(table_score_fn(TOY_SCORES), TOY_TRUTH, TOY_EXCLUDE, 3, 5, ks=(2, 4, 10))
    assert m.users_evaluated == 2 and m.users_skipped == 1
    # K=2: user 0 misses (items 2, 4); user 1 hits at rank 1.
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["precision@2"] == pytest.approx(0.25)
    assert m["hit@2"] == pytest.approx(0.5)
    assert m["mrr@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(0.5)
    # K=4: user 0 hits at ranks 3 and 4 (of two relevant), user 1 at rank 1.
    dcg0 = 1 / math.log2(4) + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["hit@4"] == pytest.approx(1.0)
    assert m["mrr@4"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["ndcg@4"] == pytest.approx((dcg0 / idcg0 + 1) / 2)
    # K=10 is more than the 4 and 5 candidates: lists are shorter, precision still divides by K.
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["precision@10"] == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert m["ndcg@10"] == pytest.approx(m["ndcg@4"])
    assert m["mrr@10"] == pytest.approx(m["mrr@4"])
    assert set(m.values) == {
        f"{n}@{k}" for n in ("recall", "ndcg", "hit", "precision", "mrr") for k in (2, 4, 10)
    }


def test_idcg_uses_min_of_relevant_and_k() -> None:
    # Three relevant items, K=2, both top-2 items relevant: NDCG@2 is 1 (IDCG over 2 items, not 3).
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    truth = torch.tensor([[0, 0], [0, 1], [0, 4]])
    m = full_ranking_metrics(
        table_score_fn(scores), truth, torch.zeros(0, 2, dtype=torch.long), 1, 5, ks=(2, 5)
    )
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@5"] == pytest.approx(dcg / idcg)


def test_seen_items_are_never_recommended_even_when_few_candidates_remain() -> None:
    # Every excluded item scores highest and is also marked relevant: any leak would count as a hit.
    num_users, num_items = 6, 7
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(num_users, num_items, generator=gen)
    exclude = []
    for u in range(num_users):
        for i in range(u + 1):  # user u has seen items 0..u; user 5 has only item 6 left
            exclude.append((u, i))
            scores[u, i] = 100.0 + i
    exclude_t = torch.tensor(exclude)
    m = full_ranking_metrics(
        table_score_fn(scores), exclude_t, exclude_t, num_users, num_items, ks=(1, 3, 10)
    )
    assert m.users_evaluated == num_users
    assert all(v == 0.0 for v in m.values.values())
    # The one item user 5 has left is ranked first despite scoring lowest.
    scores[5, 6] = -50.0
    truth = torch.cat([exclude_t, torch.tensor([[5, 6]])])
    m = full_ranking_metrics(table_score_fn(scores), truth, exclude_t, num_users, num_items, ks=(1, 3))
    relevant_5 = 7
    assert m["hit@1"] == pytest.approx(1 / num_users)
    assert m["mrr@3"] == pytest.approx(1 / num_users)
    assert m["recall@3"] == pytest.approx(1 / relevant_5 / num_users)


def test_all_users_skipped_when_truth_is_empty() -> None:
    empty = np.zeros((0, 2), dtype=np.int64)
    m = full_ranking_metrics(table_score_fn(TOY_SCORES), empty, TOY_EXCLUDE, 3, 5, ks=(2,))
    assert m.users_evaluated == 0 and m.users_skipped == 3
    assert m["recall@2"] == 0.0


def reference_metrics(scores: torch.Tensor, truth: torch.Tensor, exclude: torch.Tensor, ks: tuple[int, ...]):
    """A plain per-user Python implementation of the documented definitions."""
    sums: dict[str, float] = {}
    users = sorted(set(truth[:, 0].tolist()))
    for u in users:
        relevant = set(truth[truth[:, 0] == u, 1].tolist())
        seen = set(exclude[exclude[:, 0] == u, 1].tolist())
        order = sorted(
            (i for i in range(scores.shape[1]) if i not in seen), key=lambda i: -float(scores[u, i])
        )
        for k in ks:
            top = order[:k]
            flags = [i in relevant for i in top]
            hits = sum(flags)
            dcg = sum(1 / math.log2(r + 2) for r, f in enumerate(flags) if f)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
            first = next((r + 1 for r, f in enumerate(flags) if f), None)
            for name, value in (
                ("recall", hits / len(relevant)),
                ("precision", hits / k),
                ("hit", float(hits > 0)),
                ("ndcg", dcg / idcg),
                ("mrr", 1 / first if first else 0.0),
            ):
                sums[f"{name}@{k}"] = sums.get(f"{name}@{k}", 0.0) + value
    return {key: value / len(users) for key, value in sums.items()}, len(users)


def random_case(seed: int, num_users: int = 23, num_items: int = 40):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(num_users, num_items, generator=gen)
    cells = torch.randperm(num_users * num_items, generator=gen)
    exclude_keys, truth_keys = cells[:300], cells[300:420]
    to_pairs = lambda keys: torch.stack([keys // num_items, keys % num_items], 1)  # noqa: E731
    return scores, to_pairs(truth_keys), to_pairs(exclude_keys)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_per_user_reference_implementation(seed: int) -> None:
    scores, truth, exclude = random_case(seed)
    ks = (1, 5, 20)
    expected, n_users = reference_metrics(scores, truth, exclude, ks)
    m = full_ranking_metrics(table_score_fn(scores), truth, exclude, 23, 40, ks=ks, chunk_size=4)
    assert m.users_evaluated == n_users and m.users_skipped == 23 - n_users
    assert m.values == pytest.approx(expected)


@pytest.mark.parametrize("device", DEVICES)
def test_chunk_size_does_not_change_the_result(device: str) -> None:
    scores, truth, exclude = random_case(2)
    scores = scores.to(device)
    results = [
        full_ranking_metrics(
            table_score_fn(scores), truth, exclude, 23, 40, ks=(3, 10), chunk_size=c, device=device
        )
        for c in (1, 3, 23, 1000)
    ]
    for m in results[1:]:
        assert m.values == pytest.approx(results[0].values, abs=1e-12)
        assert (m.users_evaluated, m.users_skipped) == (results[0].users_evaluated, results[0].users_skipped)


def test_metrics_is_frozen_and_json_serialisable() -> None:
    m = full_ranking_metrics(table_score_fn(TOY_SCORES), TOY_TRUTH, TOY_EXCLUDE, 3, 5, ks=(2,))
    flat = json.loads(json.dumps(m.to_dict()))
    assert flat["users_evaluated"] == 2 and flat["users_skipped"] == 1
    assert flat["ndcg@2"] == pytest.approx(0.5)
    assert flat["seconds"] >= 0
    with pytest.raises(AttributeError):
        m.users_evaluated = 3  # type: ignore[misc]
    assert isinstance(m, Metrics)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        full_ranking_metrics(table_score_fn(TOY_SCORES), torch.tensor([[0, 9]]), TOY_EXCLUDE, 3, 5)
    with pytest.raises(ValueError, match="ks"):
        full_ranking_metrics(table_score_fn(TOY_SCORES), TOY_TRUTH, TOY_EXCLUDE, 3, 5, ks=(0,))
    with pytest.raises(ValueError, match="shape"):
        full_ranking_metrics(lambda users: torch.zeros(len(users), 4), TOY_TRUTH, TOY_EXCLUDE, 3, 5)


def toy_split() -> Split:
    # Training counts: item 3 x3, item 1 x2, item 4 x1, items 0 and 2 never: popularity order 3, 1, 4, 0, 2.
    return Split(
        method="fixed",
        seed=0,
        num_users=3,
        num_items=5,
        train=np.array([[0, 3], [1, 3], [2, 3], [0, 1], [1, 1], [2, 4]]),
        valid=np.array([[0, 4], [1, 0]]),
        test=np.array([[0, 2], [2, 1]]),
    )


def test_popularity_floor_on_a_toy_split() -> None:
    split = toy_split()
    valid = popularity_metrics(split, "valid", ks=(1, 2))
    # user 0 gets [4, 0, 2] (truth 4: rank 1), user 1 gets [4, 0, 2] (truth 0: rank 2); user 2 has no valid.
    assert (valid.users_evaluated, valid.users_skipped) == (2, 1)
    assert valid["hit@1"] == pytest.approx(0.5)
    assert valid["recall@2"] == pytest.approx(1.0)
    assert valid["mrr@2"] == pytest.approx(0.75)
    assert valid["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert valid["precision@2"] == pytest.approx(0.5)
    test = popularity_metrics(split, "test", ks=(1, 2))
    # Validation items are masked too: user 0 gets [0, 2] (truth 2: rank 2), user 2 gets [1, 0, 2] (rank 1).
    assert (test.users_evaluated, test.users_skipped) == (2, 1)
    assert test["hit@1"] == pytest.approx(0.5)
    assert test["mrr@2"] == pytest.approx(0.75)
    assert test["recall@2"] == pytest.approx(1.0)


class TableModel(EmbeddingRecommender):
    """A recommender whose embeddings reproduce a fixed score table (not registered)."""

    name = "table"

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__(scores.shape[0], scores.shape[1], scores.shape[1], 0.0)
        self.user = nn.Parameter(scores.clone())
        self.item = nn.Parameter(torch.eye(scores.shape[1]))
        self.embedding_calls = 0

    @classmethod
    def default_hparams(cls) -> dict:
        return {}

    @staticmethod
    def search_space(trial) -> dict:
        return {}

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.embedding_calls += 1
        assert not self.training
        return self.user * 1.0, self.item * 1.0

    def layer0_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user, self.item


def test_evaluate_masks_train_and_for_test_also_valid() -> None:
    split = toy_split()
    # The model loves item 4 for user 0; it is a valid item, so on test it must be masked.
    scores = torch.tensor(
        [
            [0.0, 9.0, 1.0, 9.0, 8.0],
            [5.0, 9.0, 1.0, 9.0, 2.0],
            [0.0, 3.0, 1.0, 9.0, 9.0],
        ]
    )
    model = TableModel(scores)
    model.train()
    valid = evaluate(model, split, "valid", ks=(1,))
    assert model.training and model.embedding_calls == 1
    assert valid["hit@1"] == pytest.approx(1.0)  # user 0 -> 4, user 1 -> 0
    test = evaluate(model, split, "test", ks=(1,))
    assert test["hit@1"] == pytest.approx(1.0)  # user 0 -> 2 (4 masked), user 2 -> 1
    direct = full_ranking_metrics(
        table_score_fn(scores),
        split.test,
        np.concatenate([split.train, split.valid]),
        3,
        5,
        ks=(1,),
    )
    assert test.values == pytest.approx(direct.values)
    assert test.seconds >= 0


def test_long_tail_counts_only_truth_items_outside_the_popular_head() -> None:
    split = toy_split()
    # Training popularity order 3, 1, 4, 0, 2: the 20% head of 5 items is item 3, the 40% head items 3, 1.
    assert head_items(split, 0.2).tolist() == [3]
    assert head_items(split, 0.4).tolist() == [1, 3]
    scores = torch.tensor(
        [
            [0.0, 9.0, 1.0, 9.0, 8.0],
            [5.0, 9.0, 1.0, 9.0, 2.0],
            [0.0, 3.0, 1.0, 9.0, 9.0],
        ]
    )
    model = TableModel(scores)
    # Test truth: user 0 wants item 2 (tail), user 2 wants item 1 (head at 40%, tail at 20%).
    everything = evaluate(model, split, "test", ks=(1, 2))
    at_20 = evaluate(model, split, "test", ks=(1, 2), long_tail=0.2)
    assert at_20.values == pytest.approx(everything.values)
    at_40 = evaluate(model, split, "test", ks=(1, 2), long_tail=0.4)
    # Only user 0 is left; its list is [2, 0] once items 1, 3 (train) and 4 (valid) are masked.
    assert (at_40.users_evaluated, at_40.users_skipped) == (1, 2)
    assert at_40["hit@1"] == pytest.approx(1.0)
    direct = full_ranking_metrics(
        table_score_fn(scores),
        np.array([[0, 2]]),
        np.concatenate([split.train, split.valid]),
        3,
        5,
        ks=(1, 2),
    )
    assert at_40.values == pytest.approx(direct.values)
    popular = popularity_metrics(split, "test", ks=(1, 2), long_tail=0.4)
    assert popular.users_evaluated == 1
    with pytest.raises(ValueError, match="share"):
        evaluate(model, split, "test", long_tail=1.0)


# -- new users (cold-users splits) and new items (cold-items splits) ----------------------------------


class HistoryModel(Recommender):
    """Trained rows that rank the truth last; ``score_history`` that ranks by a per-item table.

    ``score_history`` scores item ``i`` as ``history_table[i]`` plus 100 for every item in the history, so
    an evaluation that forgets to mask the history recommends it, and one that uses the trained row misses.
    """

    name = "history-table"

    def __init__(self, rows: torch.Tensor, history_table: torch.Tensor) -> None:
        super().__init__(rows.shape[0], rows.shape[1])
        self.rows = nn.Parameter(rows.clone())
        self.register_buffer("history_table", history_table.clone())
        self.histories: list[list[list[int]]] = []

    @classmethod
    def default_hparams(cls) -> dict:
        return {}

    @staticmethod
    def search_space(trial) -> dict:
        return {}

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.rows[users] * 1.0

    def score_history(self, history: History) -> torch.Tensor:
        self.histories.append(
            [history.items[history.indptr[b] : history.indptr[b + 1]].tolist() for b in range(len(history))]
        )
        return self.history_table.expand(len(history), -1) + 100.0 * history.to_dense(self.num_items)


def cold_toy_split() -> Split:
    # Users 0, 1 are warm; user 2 (valid) and user 3 (test) are new: no training pair, a revealed history.
    return Split(
        method="cold-users",
        seed=0,
        num_users=4,
        num_items=5,
        train=np.array([[0, 0], [0, 1], [1, 1], [1, 2], [0, 3]]),
        valid=np.array([[2, 4]]),
        test=np.array([[3, 2]]),
        history=np.array([[2, 0], [2, 1], [3, 3]]),
    )


def test_new_users_are_scored_from_their_history_never_a_trained_row() -> None:
    split = cold_toy_split()
    rows = torch.tensor([[0.0, 0, 0, 0, 0]] * 2 + [[9.0, 9, 9, 9, -9], [9.0, 9, -9, 9, 9]])  # truth last
    model = HistoryModel(rows, history_table=torch.tensor([0.0, 0.0, 2.0, 0.0, 3.0]))
    valid = evaluate(model, split, "valid", ks=(1,))
    # User 2: history {0, 1} masked (else it would win at +100), then item 4 (3.0) is first: a hit.
    assert valid["hit@1"] == pytest.approx(1.0) and valid.history_users == 1
    assert model.histories == [[[0, 1]]]
    test = evaluate(model, split, "test", ks=(1,))
    # User 3: history {3} masked, item 4 (3.0) beats its truth 2 (2.0): a miss at 1 -- the table decides.
    assert test["hit@1"] == pytest.approx(0.0)
    assert evaluate(model, split, "test", ks=(2,))["hit@2"] == pytest.approx(1.0)
    assert test.to_dict()["history_users"] == 1


def test_a_mixed_chunk_routes_each_user_to_its_own_scorer() -> None:
    split = cold_toy_split()
    # Put a warm user's pair in test: user 0 (trained row prefers item 4) and new user 3 share one chunk.
    split = Split(split.method, 0, 4, 5, split.train, split.valid, np.array([[3, 2], [0, 4]]), split.history)
    rows = torch.tensor([[0.0, 0, 0, 0, 5]] + [[0.0] * 5] * 3)
    model = HistoryModel(rows, history_table=torch.tensor([0.0, 0.0, 4.0, 0.0, 1.0]))
    test = evaluate(model, split, "test", ks=(1,))
    assert test["hit@1"] == pytest.approx(1.0) and test.users_evaluated == 2 and test.history_users == 1


def test_popularity_masks_the_history_of_new_users() -> None:
    split = cold_toy_split()
    # Training counts: item 1 x2, items 0, 2, 3 x1 (ties by lower id), 4 never: order 1, 0, 2, 3, 4.
    test = popularity_metrics(split, "test", ks=(1,))
    assert test["hit@1"] == pytest.approx(0.0)  # user 3 gets item 1 first
    valid = popularity_metrics(split, "valid", ks=(3,))
    # User 2's history {0, 1} is masked: it gets 2, 3, 4 and hits its truth 4 at rank 3.
    assert valid["mrr@3"] == pytest.approx(1 / 3)


def test_cold_items_rank_only_unseen_items_and_refuse_models_that_cannot_score_them() -> None:
    split = Split(
        method="cold-items",
        seed=0,
        num_users=3,
        num_items=5,
        train=np.array([[0, 0], [0, 1], [1, 1], [1, 2]]),
        valid=np.array([[0, 3]]),
        test=np.array([[1, 4], [2, 4]]),  # user 2 has no training pair: not evaluated
    )
    model = HistoryModel(torch.zeros(3, 5), torch.zeros(5))
    with pytest.raises(UnsupportedSplitError, match="'history-table' cannot score items unseen in training"):
        evaluate(model, split, "test")
    model.inductive_items = True  # type: ignore[misc]
    model.rows.data = torch.tensor([[9.0, 9, 9, 1, 0], [9.0, 9, 9, 0, 1], [0.0] * 5])
    test = evaluate(model, split, "test", ks=(1,))
    # Warm items 0, 1, 2 outscore everything but are masked; user 1 ranks 4 over 3: a hit.
    assert test["hit@1"] == pytest.approx(1.0) and test.users_evaluated == 1
    pop = popularity_metrics(split, "valid", ks=(1,))
    assert pop["hit@1"] == pytest.approx(1.0)  # only 3 and 4 are ranked; equal counts, lower id first


def test_mf_folded_in_beats_popularity_for_new_users_on_planted_data() -> None:
    from tasks.config import SplitConfig
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.split import split_dataset
    from tasks.train import TrainConfig, train

    dataset = build_dataset(make_synthetic(400, 300, 12_000, seed=3))
    split = split_dataset(dataset, SplitConfig(method="cold-users", cold_fraction=0.2, seed=3))
    config = TrainConfig(model="mf", epochs=20, lr=0.01, batch_size=512, device="cpu", progress=False)
    trained = train(build_graphs(dataset, split), split, config)
    model_test = evaluate(trained.model, split, "test", ks=(20,))
    pop_test = popularity_metrics(split, "test", ks=(20,))
    assert model_test.history_users == model_test.users_evaluated == 40
    # Early stopping followed the validation new users (scored through score_history too).
    assert trained.best_valid is not None and trained.best_valid.history_users == 40
    assert model_test["ndcg@20"] > 1.5 * pop_test["ndcg@20"]


def test_a_user_subset_evaluates_only_those_users_and_the_subsets_average_to_the_whole() -> None:
    split = toy_split()
    scores = torch.tensor(
        [
            [0.0, 9.0, 1.0, 9.0, 8.0],  # test: user 0 -> 2 (4 valid-masked; 1, 3 seen): hit
            [5.0, 9.0, 1.0, 9.0, 2.0],
            [5.0, 3.0, 1.0, 9.0, 9.0],  # test: user 2 wants 1, gets 0 first (3, 4 seen): miss at 1
        ]
    )
    model = TableModel(scores)
    whole = evaluate(model, split, "test", ks=(1, 2))
    first = evaluate(model, split, "test", ks=(1, 2), users=[0])
    rest = evaluate(model, split, "test", ks=(1, 2), users=np.array([1, 2]))
    assert (first.users_evaluated, rest.users_evaluated) == (1, 1)  # user 1 has no test item
    assert first["hit@1"] == pytest.approx(1.0) and rest["hit@1"] == pytest.approx(0.0)
    assert rest["hit@2"] == pytest.approx(1.0)
    for key, value in whole.values.items():
        assert value == pytest.approx((first[key] + rest[key]) / 2), key
    with pytest.raises(ValueError, match="outside"):
        evaluate(model, split, "test", users=[3])


def test_sparse_users_are_those_with_one_to_n_training_pairs() -> None:
    split = toy_split()  # training pairs per user: 2, 2, 2
    assert sparse_users(split, 1).tolist() == []
    assert sparse_users(split, 2).tolist() == [0, 1, 2]
    lopsided = Split("fixed", 0, 4, 5, np.array([[0, 1], [1, 1], [1, 2], [1, 3]]), split.valid, split.test)
    assert sparse_users(lopsided, 1).tolist() == [0]  # user 3 has no training pair: not a sparse user
