"""LightGCN-style fixed-split loader on tiny files in both upstream layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.dataset import SPLIT_CODES, build_dataset
from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError
from tasks.ingest.lightgcn import load_lightgcn


def write(folder: Path, files: dict[str, str], newline: str = "\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.replace("\n", newline).encode())
    return folder


def test_adjacency_layout_zero_based(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "0 1 2 3\n1 0\n2\n", "test.txt": "0 4\n1 2 3\n"})
    raw = load_lightgcn(folder)
    inter = raw.interactions
    assert inter[["user", "item"]].to_numpy().tolist() == [
        [0, 1],
        [0, 2],
        [0, 3],
        [1, 0],
        [0, 4],
        [1, 2],
        [1, 3],
    ]
    assert inter["split"].tolist() == ["train"] * 4 + ["test"] * 3
    assert "rating" not in inter.columns
    assert inter["user"].dtype == np.int64


def test_pair_layout_one_based_with_weights_trust_and_crlf(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "fm",
        {
            "data1.txt": "1\t4\t993\n2\t1\t3.2466e+05\n3\t2\t5\n",
            "test1.txt": "1\t2\t57\n3\t3\t1\n",
            "trustnetwork.txt": "1\t2\n2\t1\n3\t1\n",
        },
        newline="\r\n",
    )
    raw = load_lightgcn(folder)
    inter = raw.interactions
    assert inter["user"].min() == 0 and inter["item"].min() == 0  # shifted from 1-based
    assert inter["rating"].tolist() == [993.0, 324660.0, 5.0, 57.0, 1.0]
    assert raw.social is not None and raw.social.to_numpy().tolist() == [[0, 1], [1, 0], [2, 0]]
    assert raw.files["interactions"].endswith("data1.txt") and raw.files["social"].endswith(
        "trustnetwork.txt"
    )

    ds = build_dataset(raw)
    assert ds.fixed_split is not None
    assert ds.fixed_split.tolist() == [SPLIT_CODES["train"]] * 3 + [SPLIT_CODES["test"]] * 2
    assert ds.social is not None and len(ds.social) == 2


def test_explicit_base_overrides_detection(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "1 1 2\n2 1\n", "test.txt": "1 3\n"})
    assert load_lightgcn(folder, one_based=False).interactions["user"].min() == 1
    assert load_lightgcn(folder).interactions["user"].min() == 0
    zero = write(tmp_path / "z", {"train.txt": "0 1\n", "test.txt": "1 0\n"})
    with pytest.raises(DataFormatError, match="one_based is set, but id 0 appears"):
        load_lightgcn(zero, one_based=True)


def test_missing_test_file(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "0 1\n"})
    with pytest.raises(DatasetNotAvailableError, match="test.txt or test1.txt"):
        load_lightgcn(folder)


def test_non_numeric_item_in_adjacency_line(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "0 1 2\n1 0 x7\n", "test.txt": "0 3\n"})
    with pytest.raises(DataFormatError, match=r"train\.txt, line 2, column 'item'.*'x7'"):
        load_lightgcn(folder)


def test_empty_test_file(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "0\t1\n", "test.txt": ""})
    with pytest.raises(DataFormatError, match=r"test\.txt.*is empty"):
        load_lightgcn(folder)


def test_truncated_pair_line_loads_with_a_missing_item(tmp_path: Path) -> None:
    folder = write(tmp_path / "g", {"train.txt": "1\t2\t3\n2\t", "test.txt": "1\t1\t1\n"})
    inter = load_lightgcn(folder).interactions
    assert inter["item"].isna().sum() == 1 and inter["user"].tolist() == [0, 1, 0]


def test_sociallgn_csv_layout_with_headers_keeps_the_split_and_the_trust(tmp_path: Path) -> None:
    # leo0481/SocialLGN data/preprocessed/lastfm: train_set.txt, test_set.txt, trust.txt, CSV with headers.
    folder = write(
        tmp_path / "s",
        {
            "train_set.txt": "user,item\n2,0\n0,1\n1,1\n0,2\n",
            "test_set.txt": "user,item\n0,0\n2,3\n",
            "trust.txt": "user,friend\n0,1\n1,0\n1,2\n2,1\n",
        },
    )
    raw = load_lightgcn(folder)
    inter = raw.interactions
    assert inter[["user", "item"]].to_numpy().tolist() == [[2, 0], [0, 1], [1, 1], [0, 2], [0, 0], [2, 3]]
    assert inter["split"].tolist() == ["train"] * 4 + ["test"] * 2
    assert raw.social is not None
    assert raw.social.to_numpy().tolist() == [[0, 1], [1, 0], [1, 2], [2, 1]]  # 0-based: not shifted
    dataset = build_dataset(raw)
    assert dataset.summary()["social_edges"] == 2  # each tie listed both ways
    assert dataset.fixed_split is not None and int((dataset.fixed_split == SPLIT_CODES["test"]).sum()) == 2


def test_csv_layout_without_a_header_and_a_bad_id(tmp_path: Path) -> None:
    folder = write(tmp_path / "n", {"train_set.txt": "1,1\n2,2\n", "test_set.txt": "1,2\n"})
    raw = load_lightgcn(folder)  # no id 0 anywhere: 1-based, shifted
    assert raw.interactions[["user", "item"]].to_numpy().tolist() == [[0, 0], [1, 1], [0, 1]]
    write(folder, {"test_set.txt": "user,item\n1,x\n"})
    with pytest.raises(DataFormatError, match="item id"):
        load_lightgcn(folder)
