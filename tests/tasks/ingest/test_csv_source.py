"""The documented CSV schema: required and optional files, column mapping, separators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.csv_source import load_csv
from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_every_documented_file(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "d",
        {
            "interactions.csv": (
                "user,item,rating,timestamp,split\n1,10,4.5,100,train\n2,10,3,200,test\n2,11,1,300,TRAIN\n"
            ),
            "social.csv": "user,friend\n1,2\n",
            "kg.csv": 'head,relation,tail\n10,by,"Smith, J."\n11,by,Doe\n',
            "item_links.csv": "item,entity\n10,Q1\n",
            "user_features.csv": "user,age\n1,30\n",
            "item_features.csv": 'item,title\n10,"A, B"\n',
        },
    )
    raw = load_csv(folder)
    inter = raw.interactions
    assert inter["user"].dtype == np.int64 and inter["timestamp"].dtype == np.int64
    assert inter["split"].tolist() == ["train", "test", "train"]
    assert raw.kg is not None and raw.kg["tail"].tolist() == ["Smith, J.", "Doe"]
    assert raw.kg["head"].tolist() == ["10", "11"]
    assert raw.item_links is not None and raw.item_links["entity"].tolist() == ["Q1"]
    assert raw.item_features is not None and raw.item_features["title"].tolist() == ["A, B"]
    assert raw.user_features is not None and raw.user_features["age"].tolist() == [30]
    assert set(raw.files) == {"interactions", "social", "kg", "item_links", "user_features", "item_features"}
    ds = build_dataset(raw)
    assert ds.num_interactions == 3 and ds.social is not None and len(ds.social) == 1


def test_column_map_separator_and_a_single_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("customer;product;stars\n5;7;2\n6;7;5\n")
    raw = load_csv(path, columns={"user": "customer", "item": "product", "rating": "stars"}, sep=";")
    assert raw.interactions.to_numpy().tolist() == [[5, 7, 2.0], [6, 7, 5.0]]


def test_iso_timestamps_become_unix_seconds(tmp_path: Path) -> None:
    folder = write(tmp_path / "d", {"interactions.csv": "user,item,timestamp\n1,2,1970-01-02T00:00:00Z\n"})
    assert load_csv(folder).interactions["timestamp"].tolist() == [86400]


def test_unknown_column_key_and_missing_mapped_column(tmp_path: Path) -> None:
    folder = write(tmp_path / "d", {"interactions.csv": "user,item\n1,2\n"})
    with pytest.raises(DataFormatError, match=r"unknown canonical column\(s\) \['usr'\]"):
        load_csv(folder, columns={"usr": "user"})
    with pytest.raises(DataFormatError, match=r"interactions\.csv.*no column 'uid'"):
        load_csv(folder, columns={"user": "uid"})


def test_wrong_separator_is_explained(tmp_path: Path) -> None:
    folder = write(tmp_path / "d", {"interactions.csv": "user\titem\n1\t2\n"})
    with pytest.raises(DataFormatError, match="looks tab-separated, but this format is comma-separated"):
        load_csv(folder)


def test_missing_interactions_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError, match="interactions.csv"):
        load_csv(tmp_path)


def test_contract_values_and_string_ids(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "d",
        {"interactions.csv": "user,item,rating\n1,2,99\n1,2,99\n,3,1\n", "social.csv": "user,friend\n1,1\n"},
    )
    raw = load_csv(folder)
    assert raw.interactions["user"].isna().sum() == 1 and (raw.interactions["rating"] == 99).sum() == 2
    assert raw.social is not None and raw.social.to_numpy().tolist() == [[1, 1]]
    write(folder, {"interactions.csv": "user,item\nu1,2\n"})
    with pytest.raises(DataFormatError, match=r"line 2, column 'user'.*'u1'.*map string ids"):
        load_csv(folder)


@pytest.mark.parametrize(
    "users",
    [
        (2**63, 2**63 + 1),  # read as uint64: wrapped into int64 before
        (2**64 + 5, 2**64 + 6),  # read as text: rounded through float64 before
    ],
)
def test_ids_beyond_int64_are_refused_never_merged_or_wrapped(tmp_path: Path, users: tuple[int, int]) -> None:
    lines = "".join(f"{u},{i}\n" for u in users for i in (1, 2)) + "3,1\n"
    folder = write(tmp_path, {"interactions.csv": "user,item\n" + lines})
    with pytest.raises(DataFormatError, match=rf"user id .*{users[0]}.* cannot be kept exactly.*2\^63"):
        load_csv(folder)


def test_ids_between_2_53_and_2_63_stay_exact_and_distinct(tmp_path: Path) -> None:
    users = (2**53, 2**53 + 1, 2**63 - 1)
    lines = "".join(f"{u},{i},4\n" for u in users for i in (1, 2))
    folder = write(tmp_path, {"interactions.csv": "user,item,rating\n" + lines})
    raw = load_csv(folder)
    assert sorted(set(raw.interactions["user"].tolist())) == sorted(users)
    assert build_dataset(raw).num_users == 3


def test_large_ids_with_an_empty_field_are_refused_not_rounded(tmp_path: Path) -> None:
    # an empty field makes the column floating point, where 2^53 + 1 would become 2^53
    lines = f"{2**53},1\n{2**53 + 1},1\n,2\n"
    folder = write(tmp_path, {"interactions.csv": "user,item\n" + lines})
    with pytest.raises(DataFormatError, match="exact only up to 2\\^53"):
        load_csv(folder)
