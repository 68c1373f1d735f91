"""The GX suites against good tables and tables broken in one way each."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_checks import ExpectationOutcome, ValidationReport, validate, validate_split
from tasks.ingest.tables import RawTables
from tasks.split import Split

USERS = np.arange(1, 7)
ITEMS = np.arange(10, 18)


def interactions(seed: int = 0) -> pd.DataFrame:
    """36 unique (user, item) rows: every user rates six of the eight items."""
    rng = np.random.default_rng(seed)
    rows = [(u, i) for u in USERS for i in rng.choice(ITEMS, size=6, replace=False)]
    frame = pd.DataFrame(rows, columns=["user", "item"])
    frame["rating"] = rng.integers(1, 6, size=len(frame)).astype(float)
    frame["timestamp"] = 881_250_949 + np.arange(len(frame)) * 60
    return frame


def good_raw(**overrides: object) -> RawTables:
    """A small source with every table: interactions, social, KG with item links, features."""
    social = pd.DataFrame({"user": [1, 2, 3, 4], "friend": [2, 1, 5, 6]})
    kg = pd.DataFrame(
        {
            "head": ["m.10", "m.11", "m.12", "p.1"],
            "relation": ["genre", "genre", "genre", "produced"],
            "tail": ["g.drama", "g.comedy", "g.drama", "m.10"],
        }
    )
    links = pd.DataFrame({"item": [10, 11, 12], "entity": ["m.10", "m.11", "m.12"]})
    fields: dict[str, object] = {
        "name": "tiny",
        "interactions": interactions(),
        "social": social,
        "kg": kg,
        "item_links": links,
        "user_features": pd.DataFrame({"user": USERS, "age": 20 + USERS}),
        "item_features": pd.DataFrame({"item": ITEMS, "year": 1990 + ITEMS}),
        "rating_scale": (1.0, 5.0),
        "files": {
            "interactions": "/data/u.data",
            "social": "/data/user_friends.dat",
            "kg": "/data/movie.kg",
            "item_links": "/data/movie.link",
        },
    }
    fields.update(overrides)
    return RawTables(**fields)  # type: ignore[arg-type]


def failed(report: ValidationReport, table: str, expectation: str) -> ExpectationOutcome:
    """The one failed outcome of ``expectation`` on ``table`` (fails the test when there is none)."""
    hits = [r for r in report.failures if r.table == table and r.expectation == expectation]
    assert len(hits) == 1, report.summary()
    return hits[0]


def test_good_tables_pass_every_suite() -> None:
    report = validate(good_raw())
    assert report.success, report.summary()
    tables = {r.table for r in report.results}
    assert tables == {"interactions", "social", "kg", "item_links", "user_features", "item_features"}
    assert "PASSED" in report.summary()
    assert report.docs_path is None


def test_nan_user_id_is_reported_with_table_file_count_and_sample() -> None:
    inter = interactions()
    inter["user"] = inter["user"].astype(float)
    inter.loc[[3, 7], "user"] = np.nan
    report = validate(good_raw(interactions=inter))
    assert not report.success
    out = failed(report, "interactions", "expect_column_values_to_not_be_null")
    assert out.columns == ("user",)
    assert out.file == "/data/u.data"
    assert out.unexpected_count == 2
    assert out.unexpected_sample == (None,)
    # The missing ids count once: the whole-number rule skips them.
    regex = [r for r in report.results if r.expectation == "expect_column_values_to_match_regex"]
    assert all(r.success for r in regex)


def test_rating_outside_the_declared_scale() -> None:
    inter = interactions()
    inter.loc[5, "rating"] = 99.0
    report = validate(good_raw(interactions=inter))
    out = failed(report, "interactions", "expect_column_values_to_be_between")
    assert out.columns == ("rating",)
    assert out.unexpected_count == 1
    assert out.unexpected_sample == (99.0,)
    summary = report.summary()
    for text in ("interactions", "rating", "expect_column_values_to_be_between", "99", "/data/u.data"):
        assert text in summary


def test_weights_must_be_positive_without_a_scale() -> None:
    inter = interactions()
    inter.loc[0, "rating"] = 0.0
    report = validate(good_raw(interactions=inter, rating_scale=None))
    out = failed(report, "interactions", "expect_column_values_to_be_between")
    assert out.unexpected_sample == (0.0,)
    assert validate(good_raw(rating_scale=None)).success


@pytest.mark.parametrize("value", [np.inf, 1e300])
def test_infinite_or_huge_ratings_fail_with_or_without_a_scale(value: float) -> None:
    inter = interactions()
    inter.loc[3, "rating"] = value
    scaled = failed(
        validate(good_raw(interactions=inter)), "interactions", "expect_column_values_to_be_between"
    )
    assert scaled.unexpected_sample == (value,)
    if value == np.inf:  # no scale: only a non-finite weight is refused (listen counts may be large)
        unscaled = validate(good_raw(interactions=inter, rating_scale=None))
        out = failed(unscaled, "interactions", "expect_column_values_to_be_between")
        assert out.unexpected_count == 1


def test_duplicated_row_fails_unless_duplicates_are_aggregated() -> None:
    inter = interactions()
    dup = pd.concat([inter, inter.iloc[[4]]], ignore_index=True)
    report = validate(good_raw(interactions=dup))
    out = failed(report, "interactions", "expect_compound_columns_to_be_unique")
    assert out.columns == ("user", "item")
    assert out.unexpected_count == 2  # both copies
    row = inter.iloc[4]
    assert out.unexpected_sample == ({"user": int(row["user"]), "item": int(row["item"])},)
    assert validate(good_raw(interactions=dup), allow_duplicates=True).success


def test_non_integral_ids_are_named() -> None:
    inter = interactions()
    inter["item"] = inter["item"].astype(object)
    inter.loc[2, "item"] = "i7"
    inter.loc[3, "item"] = 3.5
    report = validate(good_raw(interactions=inter, kg=None, item_links=None))
    out = failed(report, "interactions", "expect_column_values_to_match_regex")
    assert out.columns == ("item",)
    assert out.unexpected_count == 2
    assert set(out.unexpected_sample) == {"i7", 3.5}


def test_truncated_last_line_leaves_missing_rating_and_timestamp() -> None:
    inter = interactions()
    inter["timestamp"] = inter["timestamp"].astype(float)
    inter.loc[len(inter) - 1, ["rating", "timestamp"]] = np.nan
    report = validate(good_raw(interactions=inter))
    nulls = [r for r in report.failures if r.expectation == "expect_column_values_to_not_be_null"]
    assert {r.columns for r in nulls} == {("rating",), ("timestamp",)}
    assert all(r.unexpected_count == 1 for r in nulls)


def test_implausible_timestamps_and_split_values_and_size() -> None:
    inter = interactions()
    inter.loc[0, "timestamp"] = 881_250_949_000  # milliseconds, far in the future as seconds
    inter["split"] = "train"
    inter.loc[1, "split"] = "dev"
    report = validate(good_raw(interactions=inter), min_interactions=100)
    ts = failed(report, "interactions", "expect_column_values_to_be_between")
    assert ts.columns == ("timestamp",) and ts.unexpected_sample == (881_250_949_000,)
    part = failed(report, "interactions", "expect_column_values_to_be_in_set")
    assert part.unexpected_sample == ("dev",)
    size = failed(report, "interactions", "expect_table_row_count_to_be_between")
    assert size.observed_value == len(inter) and size.unexpected_count is None


def test_self_friendship() -> None:
    social = pd.DataFrame({"user": [1, 2, 3], "friend": [2, 2, 4]})
    report = validate(good_raw(social=social))
    out = failed(report, "social", "expect_select_column_values_to_be_unique_within_record")
    assert out.columns == ("user", "friend")
    assert out.file == "/data/user_friends.dat"
    assert out.unexpected_count == 1
    assert out.unexpected_sample == ({"user": 2, "friend": 2},)


def test_unknown_friend_is_a_warning_and_missing_friend_an_error() -> None:
    social = pd.DataFrame({"user": [1, 2, 3], "friend": [999.0, np.nan, 4.0]})
    report = validate(good_raw(social=social))
    assert not report.success
    (unknown,) = report.warnings
    assert unknown.table == "social" and unknown.expectation == "expect_column_values_to_be_null"
    assert unknown.severity == "warning" and not unknown.success
    assert unknown.columns == ("friend",)
    assert unknown.unexpected_count == 1
    assert unknown.unexpected_sample == (999,)
    assert "Warnings (the contract still holds)" in report.summary()
    # An unknown friend alone keeps the contract: build_dataset drops such edges.
    only_unknown = validate(good_raw(social=pd.DataFrame({"user": [1, 2], "friend": [999, 3]})))
    assert only_unknown.success and len(only_unknown.warnings) == 1
    assert "PASSED" in only_unknown.summary() and "1 warnings" in only_unknown.summary()
    missing = failed(report, "social", "expect_column_values_to_not_be_null")
    assert missing.columns == ("friend",) and missing.unexpected_count == 1


def test_kg_without_any_item_head_is_not_anchored() -> None:
    # Without item_links an entity equal to str(item id) is the item; these heads name no known item.
    kg = pd.DataFrame({"head": ["99", "98", "98"], "relation": ["genre"] * 3, "tail": ["g.a", "g.b", "g.c"]})
    report = validate(good_raw(kg=kg, item_links=None))
    out = failed(report, "kg", "expect_column_values_to_be_null")
    assert out.columns == ("head",)
    assert out.unexpected_count == 3
    assert set(out.unexpected_sample) == {"99", "98"}
    anchored = pd.DataFrame({"head": ["10", "98"], "relation": ["genre"] * 2, "tail": ["g.a", "g.b"]})
    assert validate(good_raw(kg=anchored, item_links=None)).success


def test_item_link_to_unknown_item_or_absent_entity() -> None:
    links = pd.DataFrame({"item": [10, 11, 555], "entity": ["m.10", "m.404", "m.12"]})
    report = validate(good_raw(item_links=links))
    outs = {r.columns: r for r in report.failures if r.table == "item_links"}
    assert outs[("item",)].unexpected_sample == (555,)
    assert outs[("entity",)].unexpected_sample == ("m.404",)
    assert outs[("entity",)].file == "/data/movie.link"


def test_kg_null_fields_and_missing_column() -> None:
    kg = pd.DataFrame({"head": ["m.10", None], "relation": ["genre", "genre"], "tail": ["g.a", "g.b"]})
    report = validate(good_raw(kg=kg))
    out = failed(report, "kg", "expect_column_values_to_not_be_null")
    assert out.columns == ("head",) and out.unexpected_count == 1
    report = validate(good_raw(kg=kg.drop(columns=["tail"])))
    missing = failed(report, "kg", "expect_table_columns_to_match_set")
    assert missing.columns == ("tail",)
    assert missing.unexpected_sample == ("missing column 'tail'",)


def test_feature_ids_unique() -> None:
    feats = pd.DataFrame({"user": [1, 2, 2], "age": [20, 21, 22]})
    out = failed(
        validate(good_raw(user_features=feats)), "user_features", "expect_column_values_to_be_unique"
    )
    assert out.unexpected_count == 2 and out.unexpected_sample == (2,)


def test_report_serialises_and_docs_are_written(tmp_path) -> None:
    inter = interactions()
    inter.loc[5, "rating"] = 99.0
    report = validate(good_raw(interactions=inter), docs_dir=tmp_path / "docs")
    assert report.docs_path == (tmp_path / "docs" / "index.html").resolve()
    assert report.docs_path is not None and report.docs_path.is_file()
    pages = list((tmp_path / "docs").rglob("*.html"))
    assert len(pages) > 1
    assert any("expect_column_values_to_be_between" in p.read_text() or "99" in p.read_text() for p in pages)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["success"] is False and data["failed"] == 1
    assert data["docs_path"] == str(report.docs_path)
    bad = [r for r in data["results"] if not r["success"]][0]
    assert bad["table"] == "interactions" and bad["unexpected_sample"] == [99.0]
    assert str(report.docs_path) in report.summary()


def test_validation_of_100k_rows_is_fast() -> None:
    import time

    rng = np.random.default_rng(1)
    n = 100_000
    pairs = rng.choice(2000 * 3000, size=n, replace=False)
    inter = pd.DataFrame(
        {
            "user": pairs // 3000,
            "item": pairs % 3000,
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": rng.integers(800_000_000, 900_000_000, n),
        }
    )
    validate(good_raw(), min_interactions=1)  # GX import and first-use costs are not the point here
    start = time.perf_counter()
    report = validate(RawTables(name="big", interactions=inter, rating_scale=(1.0, 5.0)))
    assert report.success
    assert time.perf_counter() - start < 5.0


def split(train: list[tuple[int, int]], valid: list[tuple[int, int]], test: list[tuple[int, int]]) -> Split:
    def arr(pairs: list[tuple[int, int]]) -> np.ndarray:
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    return Split("random", 0, 3, 4, arr(train), arr(valid), arr(test))


def test_split_contract() -> None:
    ok = validate_split(split([(0, 0), (1, 1), (2, 2)], [(0, 1)], [(0, 2), (1, 3)]))
    assert ok.success, ok.summary()
    assert {r.table for r in ok.results} == {"split"}

    leak = validate_split(split([(0, 0), (1, 1), (2, 2)], [(0, 1)], [(0, 1), (1, 3)]))
    out = failed(leak, "split", "expect_compound_columns_to_be_unique")
    assert out.unexpected_count == 2 and out.unexpected_sample == ({"user": 0, "item": 1},)

    empty_train = validate_split(split([], [(0, 1)], [(0, 2)]))
    assert failed(empty_train, "split", "expect_column_distinct_values_to_contain_set")

    out_of_range = validate_split(split([(0, 0), (5, 1)], [], []))
    assert failed(out_of_range, "split", "expect_column_values_to_be_between").unexpected_sample == (5,)


@pytest.mark.parametrize("repeat_within_part", [True, False])
def test_repeats_inside_one_part_are_not_a_leak(repeat_within_part: bool) -> None:
    train = [(0, 0), (0, 0)] if repeat_within_part else [(0, 0)]
    assert validate_split(split(train, [], [(1, 1)])).success


def test_history_of_new_users_must_be_disjoint_from_train() -> None:
    def arr(pairs: list[tuple[int, int]]) -> np.ndarray:
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    train, test = arr([(0, 0), (1, 1)]), arr([(2, 3)])
    ok = validate_split(Split("cold-users", 0, 3, 4, train, arr([]), test, arr([(2, 2)])))
    assert ok.success, ok.summary()
    leak = validate_split(Split("cold-users", 0, 3, 4, train, arr([]), test, arr([(1, 1), (2, 2)])))
    out = failed(leak, "split", "expect_compound_columns_to_be_unique")
    assert out.unexpected_sample == ({"user": 1, "item": 1},)
