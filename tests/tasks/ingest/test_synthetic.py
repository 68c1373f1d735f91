"""The synthetic source: exact sizes, determinism, and planted structure a recommender can find."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tasks.config import SplitConfig
from tasks.ingest.dataset import Dataset, build_dataset
from tasks.ingest.synthetic import make_synthetic
from tasks.ingest.tables import RawTables
from tasks.split import split_dataset


@pytest.fixture(scope="module")
def raw() -> RawTables:
    return make_synthetic()


@pytest.fixture(scope="module")
def dataset(raw: RawTables) -> Dataset:
    return build_dataset(raw)


def _matrix(user: np.ndarray, item: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(user)), (user, item)), shape=shape)


def _mean_jaccard(rows: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> float:
    """Mean Jaccard similarity of the binary rows a[k] and b[k]."""
    size = np.asarray(rows.sum(axis=1)).ravel()
    shared = np.asarray(rows[a].multiply(rows[b]).sum(axis=1)).ravel()
    return float(np.mean(shared / (size[a] + size[b] - shared)))


def _random_pairs(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, count), rng.integers(0, n, count)
    return a[a != b], b[a != b]


def test_default_sizes_are_exact_and_ids_one_based(raw: RawTables) -> None:
    inter = raw.interactions
    assert raw.name == "synthetic"
    assert len(inter) == 100_000
    assert not inter.duplicated(["user", "item"]).any()
    assert sorted(inter["user"].unique()) == list(range(1, 944))
    assert sorted(inter["item"].unique()) == list(range(1, 1683))
    assert inter.groupby("user").size().min() >= 5
    assert raw.rating_scale == (1.0, 5.0)
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    ts = inter["timestamp"]
    assert ts.dtype == np.int64
    assert (
        pd.Timestamp("2015-01-01").value // 10**9
        <= ts.min()
        < ts.max()
        < pd.Timestamp("2020-01-01").value // 10**9
    )


@pytest.mark.parametrize(
    ("users", "items", "interactions"),
    [(10, 10, 100), (10, 10, 60), (50, 400, 400), (200, 300, 20_000), (7, 2000, 3000)],
)
def test_sizes_are_exact_at_the_edges(users: int, items: int, interactions: int) -> None:
    raw = make_synthetic(users, items, interactions, seed=3)
    inter = raw.interactions
    assert len(inter) == interactions
    assert not inter.duplicated(["user", "item"]).any()
    assert inter["user"].nunique() == users and inter["item"].nunique() == items
    assert inter.groupby("user").size().min() >= 5
    assert inter.groupby("user").size().max() <= max(5, items // 2, -(-interactions // users))


@pytest.mark.parametrize(
    ("users", "items", "interactions", "match"),
    [(100, 50, 400, "num_interactions=400"), (10, 3000, 2000, "every item"), (10, 10, 101, r"\[50, 100\]")],
)
def test_impossible_sizes_are_rejected(users: int, items: int, interactions: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_synthetic(users, items, interactions)


def test_passes_through_build_dataset(raw: RawTables, dataset: Dataset) -> None:
    summary = dataset.summary()
    assert (summary["users"], summary["items"], summary["interactions"]) == (943, 1682, 100_000)
    assert dataset.user_ids[0] == 1 and dataset.item_ids[-1] == 1682
    assert dataset.relation_names == ("directed_by", "has_genre", "released_in")
    assert dataset.kg is not None and dataset.entity_ids is not None
    # Every item is a KG head (genre, creator, decade), and the non-item entities follow the items.
    assert set(np.unique(dataset.kg[:, 0])) == set(range(dataset.num_items))
    assert dataset.kg[:, 2].min() >= dataset.num_items
    assert {str(e).split(":")[0] for e in dataset.entity_ids[dataset.num_items :]} == {
        "genre",
        "person",
        "decade",
    }
    assert dataset.social is not None
    assert 7.0 <= 2 * len(dataset.social) / dataset.num_users <= 12.0  # about 10 friends per user
    assert dataset.item_features is not None and list(dataset.item_features.columns) == ["genre", "decade"]
    assert dataset.user_features is not None and len(dataset.user_features) == 943


def test_same_seed_same_tables_other_seed_other_tables() -> None:
    a, b, c = (
        make_synthetic(300, 500, 8000, seed=5),
        make_synthetic(300, 500, 8000, seed=5),
        make_synthetic(300, 500, 8000, seed=6),
    )
    for name, table in a.tables().items():
        pd.testing.assert_frame_equal(table, b.tables()[name])
    assert build_dataset(a).fingerprint == build_dataset(b).fingerprint
    assert build_dataset(a).fingerprint != build_dataset(c).fingerprint
    assert not a.interactions[["user", "item"]].equals(c.interactions[["user", "item"]])


def test_popularity_and_activity_are_heavy_tailed(raw: RawTables) -> None:
    item_counts = np.sort(raw.interactions.groupby("item").size().to_numpy())[::-1]
    top_decile_share = item_counts[: len(item_counts) // 10].sum() / item_counts.sum()
    assert top_decile_share > 0.25  # uniform popularity would give 0.10
    activity = raw.interactions.groupby("user").size()
    assert activity.max() > 5 * activity.median()


def test_two_hop_co_occurrence_beats_popularity_by_a_wide_margin(dataset: Dataset) -> None:
    split = split_dataset(dataset, SplitConfig(method="random", seed=0))
    shape = (dataset.num_users, dataset.num_items)
    train = _matrix(split.train[:, 0], split.train[:, 1], shape)
    test = _matrix(split.test[:, 0], split.test[:, 1], shape)
    co = (train.T @ train).tocsr()
    co.setdiag(0)
    cooc_score = (train @ co).toarray()
    pop_score = np.broadcast_to(np.asarray(train.sum(axis=0)), shape).astype(np.float64)

    def recall_at_20(score: np.ndarray) -> float:
        score = score.copy()
        score[train.nonzero()] = -np.inf
        top = np.argpartition(-score, 20, axis=1)[:, :20]
        hits = np.asarray(test[np.arange(shape[0])[:, None], top].sum(axis=1)).ravel()
        n_test = np.asarray(test.sum(axis=1)).ravel()
        has = n_test > 0
        return float(np.mean(hits[has] / np.minimum(n_test[has], 20)))

    cooc, pop = recall_at_20(cooc_score), recall_at_20(pop_score)
    # Measured 0.35 vs 0.15 (2.4x) at the default size.
    assert pop > 0.05
    assert cooc >= 2.0 * pop


def test_friends_share_items_far_above_chance(dataset: Dataset) -> None:
    assert dataset.social is not None
    ui = _matrix(dataset.user, dataset.item, (dataset.num_users, dataset.num_items))
    friends = _mean_jaccard(ui, dataset.social[:, 0], dataset.social[:, 1])
    strangers = _mean_jaccard(ui, *_random_pairs(dataset.num_users, 20_000, seed=0))
    assert friends >= 3.0 * strangers  # measured 3.5x


def test_same_genre_items_share_users_far_above_chance(dataset: Dataset) -> None:
    assert dataset.item_features is not None
    iu = _matrix(dataset.item, dataset.user, (dataset.num_items, dataset.num_users))
    a, b = _random_pairs(dataset.num_items, 100_000, seed=1)
    genre = dataset.item_features["genre"].to_numpy()
    same = genre[a] == genre[b]
    assert _mean_jaccard(iu, a[same], b[same]) >= 2.0 * _mean_jaccard(iu, a, b)  # measured 2.8x


def test_in_community_items_are_rated_higher(dataset: Dataset) -> None:
    # A user's community shows as the genre they consume most; those items should carry higher ratings.
    assert dataset.item_features is not None and dataset.rating is not None
    genre = pd.Series(dataset.item_features["genre"].to_numpy()[dataset.item])
    top_genre = genre.groupby(dataset.user).agg(lambda g: g.value_counts().index[0]).to_numpy()
    own = genre.to_numpy() == top_genre[dataset.user]
    assert dataset.rating[own].mean() > dataset.rating[~own].mean() + 0.5


def test_scale_smoke_is_fast() -> None:
    start = time.perf_counter()
    raw = make_synthetic(5000, 8000, 200_000, seed=11)
    elapsed = time.perf_counter() - start
    assert len(raw.interactions) == 200_000
    assert not raw.interactions.duplicated(["user", "item"]).any()
    assert raw.interactions["item"].nunique() == 8000
    assert elapsed < 10.0  # about 0.3 s on one core
