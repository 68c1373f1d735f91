"""The feature encoder, and how encoded features reach the dataset fingerprint and the graphs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import SplitConfig
from tasks.features import encode_features
from tasks.graphs import build_graphs
from tasks.ingest.dataset import build_dataset
from tasks.ingest.tables import RawTables
from tasks.split import split_dataset


def _column(encoded, name: str) -> np.ndarray:
    return encoded.values[:, encoded.names.index(name)]


def test_numbers_are_standardised_and_missing_values_flagged():
    table = pd.DataFrame({"age": [20.0, np.nan, 40.0, 30.0]}, index=[0, 1, 2, 3])
    encoded = encode_features(table, 5)  # id 4 is not in the table: missing too
    assert encoded is not None
    assert encoded.names == ("age", "age:missing")
    age = _column(encoded, "age")
    observed = np.array([20.0, 40.0, 30.0])
    expected = (observed - observed.mean()) / observed.std()
    assert np.allclose(age[[0, 2, 3]], expected)
    assert age[1] == 0.0 and age[4] == 0.0
    assert _column(encoded, "age:missing").tolist() == [0, 1, 0, 0, 1]
    assert encoded.values.dtype == np.float32


def test_no_missing_indicator_when_every_value_is_there():
    encoded = encode_features(pd.DataFrame({"x": [1.5, 2.5, 3.5]}), 3)
    assert encoded is not None and encoded.names == ("x",)
    assert np.isclose(encoded.values.mean(), 0.0) and np.isclose(encoded.values.std(), 1.0)


def test_flags_stay_binary_and_text_numbers_become_numbers():
    table = pd.DataFrame({"comedy": [1, 0, 1], "age": ["24", "53", " 30"]})
    encoded = encode_features(table, 3)
    assert encoded is not None
    assert encoded.kinds == {"comedy": "binary", "age": "numeric"}
    assert _column(encoded, "comedy").tolist() == [1, 0, 1]
    assert _column(encoded, "age")[1] > _column(encoded, "age")[2] > _column(encoded, "age")[0]


def test_categories_are_one_hot_with_rare_ones_bucketed():
    genders = ["M", "F", "M", "F", "M", "X", None]
    encoded = encode_features(pd.DataFrame({"gender": genders}), 7, min_count=2)
    assert encoded is not None
    assert encoded.names == ("gender=M", "gender=F", "gender=<other>", "gender:missing")
    assert encoded.values.tolist() == [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 1, 0],  # "X" appears once: the rare bucket
        [0, 0, 0, 1],
    ]


def test_max_categories_keeps_the_most_frequent():
    values = ["a"] * 5 + ["b"] * 4 + ["c"] * 3
    encoded = encode_features(pd.DataFrame({"c": values}), 12, max_categories=2)
    assert encoded is not None and encoded.names == ("c=a", "c=b", "c=<other>")
    assert _column(encoded, "c=<other>").sum() == 3


def test_multi_valued_text_and_lists_are_multi_hot_top_k():
    text = pd.DataFrame({"genres": ["Action|Comedy", "Comedy", "Drama|Comedy|Action", "Action", "Drama", ""]})
    encoded = encode_features(text, 6, top_k=2)
    assert encoded is not None and encoded.kinds == {"genres": "multi"}
    # Action and Comedy tie at 3 rows each: ties go by value.
    assert encoded.names == ("genres=Action", "genres=Comedy", "genres=<other>", "genres:missing")
    assert encoded.values.tolist() == [
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 1, 0],  # Drama is beyond the top 2
        [0, 0, 0, 1],
    ]
    lists = pd.DataFrame({"tags": [("rock", "pop"), ("rock",), (), ("pop", "rock", "jazz")]})
    encoded = encode_features(lists, 4)
    assert encoded is not None and encoded.names == ("tags=rock", "tags=pop", "tags:missing")
    assert encoded.values.tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 0]]


def test_identifiers_and_constant_columns_are_skipped():
    table = pd.DataFrame(
        {
            "name": ["a|b", "c", "d", "e"],
            "url": ["u1", "u2", "u3", "u4"],
            "one": [7, 7, 7, 7],
            "g": list("xxyy"),
        }
    )
    encoded = encode_features(table, 4)
    assert encoded is not None and encoded.names == ("g=x", "g=y")
    assert set(encoded.skipped) == {"name", "url", "one"}
    assert encode_features(table[["url"]], 4) is None
    assert encode_features(None, 4) is None


def test_ids_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        encode_features(pd.DataFrame({"x": [1.0, 2.0]}, index=[0, 2]), 2)


def _raw(item_features: pd.DataFrame | None = None, user_features: pd.DataFrame | None = None) -> RawTables:
    inter = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3, 3, 4, 4], "item": [10, 11, 10, 12, 11, 12, 13, 10, 13]})
    return RawTables(name="toy", interactions=inter, item_features=item_features, user_features=user_features)


def test_fingerprint_changes_with_feature_values():
    genres = pd.DataFrame({"item": [10, 11, 12, 13], "genre": ["a", "a", "b", "b"]})
    other = genres.assign(genre=["a", "b", "a", "b"])
    plain = build_dataset(_raw()).fingerprint
    first = build_dataset(_raw(item_features=genres)).fingerprint
    assert first != plain
    assert first == build_dataset(_raw(item_features=genres.copy())).fingerprint
    assert first != build_dataset(_raw(item_features=other)).fingerprint
    users = pd.DataFrame({"user": [1, 2, 3, 4], "age": [20, 30, 40, 50]})
    assert build_dataset(_raw(user_features=users)).fingerprint != plain


def test_graphs_carry_the_encoded_features_and_inactive_items_keep_ids():
    # Item 99 has features but no interaction: it keeps an id, a feature row and an empty graph row.
    feats = pd.DataFrame({"item": [10, 11, 12, 13, 99], "genre": ["a", "a", "b", "b", "b"]})
    users = pd.DataFrame({"user": [1, 2, 3, 4], "age": [20.0, 30.0, 40.0, 50.0]})
    dataset = build_dataset(_raw(item_features=feats, user_features=users))
    assert dataset.item_ids.tolist() == [10, 11, 12, 13, 99]
    split = split_dataset(dataset, SplitConfig(method="random", seed=1))
    graphs = build_graphs(dataset, split)
    assert graphs.num_items == 5
    assert graphs.item_features is not None and graphs.item_features.shape == (5, 2)
    assert graphs.item_features[4].tolist() == [1.0, 0.0]  # genre b, the most frequent, comes first
    assert graphs.feature_names == {"user": ("age",), "item": ("genre=b", "genre=a")}
    assert graphs.user_features is not None and graphs.user_features.shape == (4, 1)
    assert int((graphs.ui_edge_index[1] == 4).sum()) == 0
    assert graphs.stats["user_item"]["isolated_items"] >= 1
