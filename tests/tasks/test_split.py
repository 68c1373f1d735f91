"""Splits: disjoint parts that cover the dataset, per-user rules, determinism, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import SplitConfig
from tasks.ingest.dataset import Dataset, build_dataset
from tasks.ingest.tables import RawTables
from tasks.split import Split, SplitError, split_dataset


def _dataset(seed: int = 0, num_users: int = 60, num_items: int = 40, timestamps: bool = True) -> Dataset:
    """Users with 1..30 interactions (so the small-user rules are exercised), coarse timestamps with ties."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([[1, 2, 3, 4], rng.integers(1, 31, size=num_users - 4)])
    user = np.repeat(np.arange(num_users), counts)
    item = np.concatenate([rng.choice(num_items, size=c, replace=False) for c in counts])
    return Dataset(
        name="tiny",
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        rating=None,
        timestamp=rng.integers(0, 50, size=len(user)).astype(np.int64) if timestamps else None,
        user_ids=np.arange(num_users),
        item_ids=np.arange(num_items),
    )


def _fixed_dataset() -> Dataset:
    rng = np.random.default_rng(4)
    rows = [(u, i) for u in range(1, 21) for i in rng.choice(np.arange(100, 130), size=12, replace=False)]
    inter = pd.DataFrame(rows, columns=["user", "item"])
    inter["split"] = np.where(rng.random(len(inter)) < 0.75, "train", "test")
    return build_dataset(RawTables(name="fixed", interactions=inter))


CONFIGS = [
    SplitConfig(method="random"),
    SplitConfig(method="random", ratios=(0.7, 0.0, 0.3)),
    SplitConfig(method="temporal"),
    SplitConfig(method="loo"),
]


def _keys(pairs: np.ndarray, num_items: int) -> np.ndarray:
    return pairs[:, 0] * num_items + pairs[:, 1]


def _assert_partition(ds: Dataset, split: Split) -> None:
    parts = [_keys(split.part(p), ds.num_items) for p in ("train", "valid", "test")]
    union = np.concatenate(parts)
    assert len(union) == ds.num_interactions
    np.testing.assert_array_equal(np.sort(union), np.sort(ds.user * ds.num_items + ds.item))
    for pairs in (split.train, split.valid, split.test):
        assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2


@pytest.mark.parametrize("config", CONFIGS + [SplitConfig(method="loo", seed=9)], ids=str)
def test_parts_are_disjoint_and_cover_the_dataset(config: SplitConfig) -> None:
    ds = _dataset()
    _assert_partition(ds, split_dataset(ds, config))


@pytest.mark.parametrize("valid_from_train", [0.0, 0.25])
def test_fixed_split_is_a_partition_too(valid_from_train: float) -> None:
    ds = _fixed_dataset()
    _assert_partition(ds, split_dataset(ds, SplitConfig(method="fixed", valid_from_train=valid_from_train)))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_deterministic_under_the_seed(config: SplitConfig) -> None:
    ds = _dataset()
    a, b = split_dataset(ds, config), split_dataset(ds, config)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.part(part), b.part(part))
    assert a.fingerprint == b.fingerprint
    other = split_dataset(ds, config.model_copy(update={"seed": config.seed + 1}))
    # Every method here is seeded: random throughout, temporal and loo through their tie-breaks (the tiny
    # dataset has many equal timestamps).
    assert other.fingerprint != a.fingerprint


def test_random_split_per_user_rule() -> None:
    ds = _dataset()
    split = split_dataset(ds, SplitConfig(method="random", ratios=(0.8, 0.1, 0.1)))
    n = np.bincount(ds.user, minlength=ds.num_users)
    n_train = np.bincount(split.train[:, 0], minlength=ds.num_users)
    n_valid = np.bincount(split.valid[:, 0], minlength=ds.num_users)
    n_test = np.bincount(split.test[:, 0], minlength=ds.num_users)
    assert (n_train >= 1).all()
    assert (n_test[n >= 3] >= 1).all() and (n_valid[n >= 3] >= 1).all()
    assert n_test[0] == n_valid[0] == 0 and n_test[1] == n_valid[1] == 0  # 1 and 2 interactions: all train
    assert (n_train[2], n_valid[2], n_test[2]) == (1, 1, 1)
    big = n >= 10
    np.testing.assert_array_equal(n_test[big], np.maximum(np.floor(n[big] * 0.1 + 0.5), 1))
    assert abs(len(split.train) / ds.num_interactions - 0.8) < 0.05


def test_random_split_without_validation_ratio_leaves_valid_empty() -> None:
    split = split_dataset(_dataset(), SplitConfig(method="random", ratios=(0.7, 0.0, 0.3)))
    assert len(split.valid) == 0 and len(split.test) > 0


def test_temporal_split_trains_on_the_past() -> None:
    ds = _dataset()
    assert ds.timestamp is not None
    split = split_dataset(ds, SplitConfig(method="temporal"))
    ts = pd.Series(ds.timestamp, index=pd.MultiIndex.from_arrays([ds.user, ds.item]))

    def times(pairs: np.ndarray) -> pd.Series:
        return pd.Series(ts.loc[list(map(tuple, pairs))].to_numpy(), index=pairs[:, 0])

    train, valid, test = times(split.train), times(split.valid), times(split.test)
    latest_train = train.groupby(level=0).max()
    earliest_test = test.groupby(level=0).min()
    assert (latest_train.reindex(earliest_test.index) <= earliest_test).all()
    earliest_valid = valid.groupby(level=0).min()
    assert (latest_train.reindex(earliest_valid.index) <= earliest_valid).all()
    assert (valid.groupby(level=0).max().reindex(earliest_test.index).fillna(-1) <= earliest_test).all()


def test_temporal_split_needs_timestamps() -> None:
    with pytest.raises(ValueError, match="'temporal' needs timestamps.*'tiny'"):
        split_dataset(_dataset(timestamps=False), SplitConfig(method="temporal"))


@pytest.mark.parametrize("timestamps", [True, False])
def test_leave_one_out_holds_out_the_last_two(timestamps: bool) -> None:
    ds = _dataset(timestamps=timestamps)
    split = split_dataset(ds, SplitConfig(method="loo"))
    n = np.bincount(ds.user, minlength=ds.num_users)
    np.testing.assert_array_equal(np.bincount(split.test[:, 0], minlength=ds.num_users), (n >= 2).astype(int))
    np.testing.assert_array_equal(
        np.bincount(split.valid[:, 0], minlength=ds.num_users), (n >= 3).astype(int)
    )
    if timestamps:
        assert ds.timestamp is not None
        ts = dict(
            zip(zip(ds.user.tolist(), ds.item.tolist(), strict=True), ds.timestamp.tolist(), strict=True)
        )
        latest = pd.Series(ds.timestamp).groupby(ds.user).max()
        for u, i in split.test:
            assert ts[(u, i)] == latest[u]


def test_fixed_split_follows_the_source() -> None:
    ds = _fixed_dataset()
    assert ds.fixed_split is not None
    split = split_dataset(ds, SplitConfig(method="fixed"))
    assert len(split.train) == int((ds.fixed_split == 0).sum())
    assert len(split.test) == int((ds.fixed_split == 2).sum())
    assert len(split.valid) == 0


def test_fixed_split_moves_a_fraction_of_train_to_valid() -> None:
    ds = _fixed_dataset()
    whole = split_dataset(ds, SplitConfig(method="fixed"))
    split = split_dataset(ds, SplitConfig(method="fixed", valid_from_train=0.25))
    np.testing.assert_array_equal(split.test, whole.test)
    n_train = np.bincount(whole.train[:, 0], minlength=ds.num_users)
    moved = np.bincount(split.valid[:, 0], minlength=ds.num_users)
    np.testing.assert_array_equal(moved, np.minimum(np.floor(n_train * 0.25 + 0.5), n_train - 1))
    assert set(map(tuple, split.valid)) <= set(map(tuple, whole.train))


def test_fixed_split_without_a_source_split_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'fixed' needs the source's own split.*'tiny'"):
        split_dataset(_dataset(), SplitConfig(method="fixed"))


def test_describe_and_part() -> None:
    ds = _dataset()
    split = split_dataset(ds, SplitConfig(method="random", seed=3))
    info = split.describe()
    assert info["method"] == "random" and info["seed"] == 3 and info["fingerprint"] == split.fingerprint
    assert [info["train"], info["valid"], info["test"]] == [
        len(split.train),
        len(split.valid),
        len(split.test),
    ]
    assert len(split.train) + len(split.valid) + len(split.test) == ds.num_interactions
    assert info["train_users"] == ds.num_users
    assert info["test_users"] == int((np.bincount(ds.user) >= 3).sum())
    assert len(split.fingerprint) == 16
    with pytest.raises(KeyError, match="unknown split part 'val'"):
        split.part("val")


# -- cold start ---------------------------------------------------------------------------------------


def _cold_dataset(seed: int = 0, num_users: int = 80, timestamps: bool = True) -> Dataset:
    """Users with 2..25 distinct items each (every user is eligible for a cold split)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 26, size=num_users)
    user = np.repeat(np.arange(num_users), counts)
    item = np.concatenate([rng.choice(40, size=c, replace=False) for c in counts])
    return Dataset(
        name="tiny-cold",
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        rating=None,
        timestamp=rng.integers(0, 30, size=len(user)).astype(np.int64) if timestamps else None,
        user_ids=np.arange(num_users),
        item_ids=np.arange(40),
    )


def _user_items(pairs: np.ndarray, user: int) -> set[int]:
    return set(pairs[pairs[:, 0] == user, 1].tolist())


@pytest.mark.parametrize("timestamps", [True, False])
def test_cold_users_are_held_out_whole_and_reveal_a_history(timestamps: bool) -> None:
    ds = _cold_dataset(timestamps=timestamps)
    split = split_dataset(ds, SplitConfig(method="cold-users", cold_fraction=0.25, fold_in=0.5, seed=1))
    valid_users, test_users = set(split.valid[:, 0].tolist()), set(split.test[:, 0].tolist())
    cold = valid_users | test_users
    assert len(cold) == 20 and len(valid_users) == 10 and not valid_users & test_users
    assert set(split.history[:, 0].tolist()) == cold
    assert not cold & set(split.train[:, 0].tolist())  # zero training pairs for a new user
    counts = np.bincount(ds.user, minlength=ds.num_users)
    for u in cold:
        history = _user_items(split.history, u)
        held_out = _user_items(split.valid, u) | _user_items(split.test, u)
        assert not history & held_out
        assert history | held_out == set(ds.item[ds.user == u].tolist())
        assert len(history) == min(max(int(np.floor(counts[u] * 0.5 + 0.5)), 1), counts[u] - 1)
    for u in set(range(ds.num_users)) - cold:  # warm users train on everything
        assert _user_items(split.train, u) == set(ds.item[ds.user == u].tolist())
    _assert_partition_with_history(ds, split)


def _assert_partition_with_history(ds: Dataset, split: Split) -> None:
    parts = ("train", "valid", "test", "history")
    union = np.concatenate([_keys(split.part(p), ds.num_items) for p in parts])
    np.testing.assert_array_equal(np.sort(union), np.sort(ds.user * ds.num_items + ds.item))


def test_cold_users_reveal_their_oldest_interactions_first() -> None:
    ds = _cold_dataset()
    split = split_dataset(ds, SplitConfig(method="cold-users", cold_fraction=0.25, seed=2))
    stamp = dict(zip((ds.user * ds.num_items + ds.item).tolist(), ds.timestamp.tolist(), strict=True))
    for u in set(split.history[:, 0].tolist()):
        held = np.concatenate([split.valid[split.valid[:, 0] == u], split.test[split.test[:, 0] == u]])
        newest_revealed = max(stamp[u * ds.num_items + i] for i in _user_items(split.history, u))
        oldest_held_out = min(stamp[u * ds.num_items + i] for i in held[:, 1].tolist())
        assert newest_revealed <= oldest_held_out


def test_cold_splits_are_seeded_and_fingerprint_their_history() -> None:
    ds = _cold_dataset()
    config = SplitConfig(method="cold-users", cold_fraction=0.25, seed=5)
    a, b = split_dataset(ds, config), split_dataset(ds, config)
    for part in ("train", "valid", "test", "history"):
        np.testing.assert_array_equal(a.part(part), b.part(part))
    assert a.fingerprint == b.fingerprint
    assert split_dataset(ds, config.model_copy(update={"seed": 6})).fingerprint != a.fingerprint
    # Same train/valid/test, a different revealed history: the fingerprint must change.
    moved = Split(a.method, a.seed, a.num_users, a.num_items, a.train, a.valid, a.test, a.history[:-1])
    assert moved.fingerprint != a.fingerprint
    info = a.describe()
    assert info["history"] == len(a.history) and info["history_users"] == 20


def test_splits_without_new_users_keep_their_fingerprint() -> None:
    ds = _dataset()
    split = split_dataset(ds, SplitConfig(method="random", seed=3))
    assert len(split.history) == 0 and split.describe()["history"] == 0
    # The hash of the three parts alone, as every split had before the history part existed.
    import hashlib

    h = hashlib.sha256()
    h.update(f"random|3|{split.num_users}|{split.num_items}".encode())
    for name in ("train", "valid", "test"):
        pairs = split.part(name)
        h.update(f"|{name}:{len(pairs)}|".encode())
        h.update(np.ascontiguousarray(pairs, dtype=np.int64).tobytes())
    assert split.fingerprint == h.hexdigest()[:16]


@pytest.mark.parametrize(
    ("num_users", "fraction", "method"),
    [(10, 0.1, "cold-users"), (80, 0.01, "cold-users"), (20, 0.02, "cold-items")],
)
def test_cold_split_with_too_few_users_or_items_is_one_clear_error(
    num_users: int, fraction: float, method: str
) -> None:
    ds = _cold_dataset(num_users=num_users)
    with pytest.raises(SplitError, match=f"a {method} split of dataset 'tiny-cold' needs at least two"):
        split_dataset(ds, SplitConfig(method=method, cold_fraction=fraction))


def test_cold_users_need_two_interactions_each() -> None:
    ds = _dataset(num_users=12)  # users 0..3 have 1..4 interactions; only those with 2+ are eligible
    single = Dataset(
        name="singles",
        user=np.arange(30, dtype=np.int64),
        item=np.arange(30, dtype=np.int64) % 7,
        rating=None,
        timestamp=None,
        user_ids=np.arange(30),
        item_ids=np.arange(7),
    )
    with pytest.raises(SplitError, match="0 users have 2 or more interactions"):
        split_dataset(single, SplitConfig(method="cold-users", cold_fraction=0.5))
    split = split_dataset(ds, SplitConfig(method="cold-users", cold_fraction=0.5, seed=0))
    assert 0 not in set(split.history[:, 0].tolist())  # user 0 has a single interaction


def test_cold_items_are_held_out_of_training_whole() -> None:
    ds = _cold_dataset()
    split = split_dataset(ds, SplitConfig(method="cold-items", cold_fraction=0.2, seed=3))
    valid_items, test_items = set(split.valid[:, 1].tolist()), set(split.test[:, 1].tolist())
    assert len(valid_items | test_items) == 8 and not valid_items & test_items
    assert not (valid_items | test_items) & set(split.train[:, 1].tolist())
    assert len(split.history) == 0
    _assert_partition(ds, split)
