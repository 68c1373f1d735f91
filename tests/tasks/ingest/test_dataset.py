import numpy as np
import pandas as pd
import pytest

from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DataFormatError
from tasks.ingest.tables import RawTables


def _raw(**kwargs) -> RawTables:
    inter = pd.DataFrame(
        {
            "user": [10, 10, 20, 20, 30, 30, 30],
            "item": [7, 5, 5, 9, 7, 9, 5],
            "rating": [5.0, 3.0, 4.0, 1.0, 2.0, 5.0, 4.0],
            "timestamp": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    return RawTables(name="toy", interactions=kwargs.pop("interactions", inter), **kwargs)


def test_ids_are_contiguous_in_sorted_raw_order() -> None:
    ds = build_dataset(_raw())
    assert ds.user_ids.tolist() == [10, 20, 30]
    assert ds.item_ids.tolist() == [5, 7, 9]
    assert ds.user.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert ds.item.tolist() == [1, 0, 0, 2, 1, 2, 0]
    # Every interaction maps back to its raw ids.
    assert ds.user_ids[ds.user].tolist() == [10, 10, 20, 20, 30, 30, 30]
    assert ds.num_users == 3 and ds.num_items == 3 and ds.num_interactions == 7


def test_min_rating_keeps_positives_only() -> None:
    ds = build_dataset(_raw(), min_rating=4)
    assert sorted(zip(ds.user_ids[ds.user], ds.item_ids[ds.item], strict=True)) == [
        (10, 7),
        (20, 5),
        (30, 5),
        (30, 9),
    ]


def test_k_core_is_iterated_to_a_fixed_point() -> None:
    inter = pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [1, 2, 1, 2, 3]})
    ds = build_dataset(_raw(interactions=inter), k_core=2)
    assert ds.user_ids.tolist() == [1, 2] and ds.item_ids.tolist() == [1, 2]
    with pytest.raises(DataFormatError, match="no interactions left"):
        build_dataset(_raw(interactions=inter), k_core=3)


def test_aggregate_duplicates_sums_weights_and_keeps_latest_time() -> None:
    inter = pd.DataFrame(
        {"user": [1, 1, 2], "item": [4, 4, 4], "rating": [2.0, 3.0, 1.0], "timestamp": [5, 9, 1]}
    )
    ds = build_dataset(_raw(interactions=inter), aggregate_duplicates=True)
    assert ds.num_interactions == 2
    row = int(np.flatnonzero(ds.user == 0)[0])
    assert ds.rating is not None and ds.rating[row] == 5.0
    assert ds.timestamp is not None and ds.timestamp[row] == 9


def test_social_is_undirected_unique_and_restricted_to_known_users() -> None:
    social = pd.DataFrame({"user": [10, 20, 30, 10, 99], "friend": [20, 10, 30, 30, 10]})
    ds = build_dataset(_raw(social=social))
    assert ds.social is not None
    assert ds.social.tolist() == [[0, 1], [0, 2]]  # (10,20) once, self-loop and unknown 99 dropped


def test_kg_items_come_first_then_other_entities() -> None:
    kg = pd.DataFrame(
        {"head": ["7", "5", "9"], "relation": ["genre", "genre", "year"], "tail": ["g:a", "g:a", "7"]}
    )
    ds = build_dataset(_raw(kg=kg))
    assert ds.kg is not None
    assert ds.relation_names == ("genre", "year")
    assert ds.entity_ids is not None and ds.entity_ids.tolist() == ["5", "7", "9", "g:a"]
    # item 7 -> 1, item 5 -> 0, item 9 -> 2; entity g:a -> 3 (after the 3 items).
    assert sorted(map(tuple, ds.kg.tolist())) == [(0, 0, 3), (1, 0, 3), (2, 1, 1)]


def test_kg_heads_resolve_through_item_links() -> None:
    kg = pd.DataFrame({"head": ["m.a", "m.b"], "relation": ["r", "r"], "tail": ["m.x", "m.a"]})
    links = pd.DataFrame({"item": [9, 5], "entity": ["m.a", "m.b"]})
    ds = build_dataset(_raw(kg=kg, item_links=links))
    assert ds.kg is not None and ds.entity_ids is not None
    assert ds.entity_ids.tolist() == ["m.b", "7", "m.a", "m.x"]
    assert sorted(map(tuple, ds.kg.tolist())) == [(0, 0, 2), (2, 0, 3)]


def test_features_are_reindexed_by_internal_id() -> None:
    feats = pd.DataFrame({"item": [9, 5, 1234], "genre": ["c", "a", "zz"]})
    ds = build_dataset(_raw(item_features=feats))
    assert ds.item_features is not None
    # Item 1234 has features but no interaction: it keeps an id (after the interacted ones, sorted order).
    assert ds.item_ids.tolist() == [5, 7, 9, 1234]
    assert ds.item_features["genre"].to_dict() == {0: "a", 2: "c", 3: "zz"}
    assert ds.num_interactions == 7 and int(ds.item.max()) == 2


def test_featured_users_without_interactions_keep_an_id() -> None:
    feats = pd.DataFrame({"user": [5, 20], "age": [31, 40]})
    ds = build_dataset(_raw(user_features=feats))
    assert ds.user_ids.tolist() == [5, 10, 20, 30]
    assert ds.user.tolist() == [1, 1, 2, 2, 3, 3, 3]  # interactions renumbered around the new id
    assert ds.user_features is not None and ds.user_features["age"].to_dict() == {0: 31, 2: 40}


def test_ids_removed_by_a_filter_stay_removed_even_with_features() -> None:
    # Item 9's ratings are 1.0 and 5.0; min_rating 5 keeps only (30, 9) and (10, 7); item 5 is filtered out.
    feats = pd.DataFrame({"item": [5, 7, 9], "genre": ["a", "b", "c"]})
    ds = build_dataset(_raw(item_features=feats), min_rating=5.0)
    assert ds.item_ids.tolist() == [7, 9]


def test_fixed_split_codes_and_fingerprint() -> None:
    inter = pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 1], "split": ["train", "test", "valid"]})
    ds = build_dataset(_raw(interactions=inter))
    assert ds.fixed_split is not None and ds.fixed_split.tolist() == [0, 2, 1]
    again = build_dataset(_raw(interactions=inter))
    assert ds.fingerprint == again.fingerprint and len(ds.fingerprint) == 16
    other = build_dataset(_raw(interactions=inter.assign(item=[1, 3, 1])))
    assert other.fingerprint != ds.fingerprint


def test_missing_column_is_a_format_error() -> None:
    with pytest.raises(DataFormatError, match="no 'item' column"):
        build_dataset(_raw(interactions=pd.DataFrame({"user": [1]})))
