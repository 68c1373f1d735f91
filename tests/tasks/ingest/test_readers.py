"""Robustness of the shared parsing helpers: encodings, line endings, malformed files, contract values."""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.ingest.errors import DataFormatError
from tasks.ingest.readers import (
    delimiter_hint,
    detect_encoding,
    read_delimited,
    to_ids,
    to_numbers,
)

COLS = ("user", "item", "rating")


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read(path: Path, **kwargs: object) -> pd.DataFrame:
    return read_delimited(path, sep="\t", what="test ratings", columns=COLS, **kwargs)  # type: ignore[arg-type]


def test_crlf_and_lf_read_the_same(tmp_path: Path) -> None:
    lf = read(write(tmp_path / "lf.tsv", "1\t2\t3\n4\t5\t1\n"))
    crlf = read(write(tmp_path / "crlf.tsv", "1\t2\t3\r\n4\t5\t1\r\n"))
    pd.testing.assert_frame_equal(lf, crlf)
    assert crlf["rating"].tolist() == [3, 1]


def test_index_is_line_number_and_blank_lines_dropped(tmp_path: Path) -> None:
    frame = read(write(tmp_path / "f.tsv", "1\t2\t3\r\n\r\n4\t5\t1\r\n"))
    assert frame.index.tolist() == [1, 3]
    assert to_ids(frame["user"], path="f", what="user id").dtype == np.int64


def test_bom_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.tsv", codecs.BOM_UTF8 + b"user\titem\n1\t2\n")
    assert detect_encoding(path, "latin-1") == "utf-8-sig"
    frame = read_delimited(path, sep="\t", what="t", columns=("user", "item"), header=True)
    assert list(frame.columns) == ["user", "item"]
    assert to_ids(frame["user"], path=path, what="user id").tolist() == [1]


def test_latin1_bytes_in_a_utf8_file_fall_back_to_latin1(tmp_path: Path) -> None:
    path = write(tmp_path / "tags.tsv", "id\tname\n1\tMis\xe9rables\n".encode("latin-1"))
    frame = read_delimited(
        path, sep="\t", what="t", columns=("id", "name"), header=True, text_columns=("name",)
    )
    assert frame["name"].tolist() == ["Misérables"]


def test_empty_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.tsv", "")
    with pytest.raises(DataFormatError, match=r"empty\.tsv.*is empty"):
        read(path)
    with pytest.raises(DataFormatError, match="is empty"):
        read(write(tmp_path / "blank.tsv", "\r\n\n"))


def test_wrong_delimiter_says_which_separator_the_file_uses(tmp_path: Path) -> None:
    path = write(tmp_path / "comma.tsv", "1,2,3\n4,5,1\n")
    with pytest.raises(DataFormatError) as info:
        read(path)
    message = str(info.value)
    assert "comma.tsv" in message
    assert "1 field(s) per line" in message
    assert "comma-separated" in message and "tab-separated" in message
    assert delimiter_hint(path, ",") == ""


def test_missing_header_column_names_it_and_lists_the_header(tmp_path: Path) -> None:
    path = write(tmp_path / "h.tsv", "userID\tweight\n1\t3\n")
    with pytest.raises(DataFormatError, match=r"h\.tsv.*no column 'artistID'.*\['userID', 'weight'\]"):
        read_delimited(path, sep="\t", what="t", columns=("userID", "artistID"), header=True)


def test_ragged_line_reports_its_line_number(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.tsv", "1\t2\t3\n4\t5\t1\n6\t7\t1\t9\n")
    with pytest.raises(DataFormatError) as info:
        read(path)
    assert info.value.line == 3
    assert "line 3 has 4 fields" in str(info.value)


def test_non_numeric_id_names_file_line_column_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.tsv", "1\t2\t3\n4\tabc\t1\n")
    frame = read(path)
    with pytest.raises(DataFormatError) as info:
        to_ids(frame["item"], path=path, what="item id")
    message = str(info.value)
    assert "bad.tsv" in message and "line 2" in message and "'item'" in message and "'abc'" in message
    assert info.value.line == 2
    assert "\n" not in message


def test_header_row_in_a_headerless_format_is_recognised(tmp_path: Path) -> None:
    path = write(tmp_path / "hdr.tsv", "user\titem\trating\n1\t2\t3\n")
    frame = read(path)
    with pytest.raises(DataFormatError, match="looks like a header row"):
        to_ids(frame["user"], path=path, what="user id", header_line=True)


def test_fractional_id_is_rejected(tmp_path: Path) -> None:
    frame = read(write(tmp_path / "f.tsv", "1\t2.5\t3\n"))
    with pytest.raises(DataFormatError, match=r"line 1.*2\.5"):
        to_ids(frame["item"], path="f.tsv", what="item id")


def test_contract_values_load_instead_of_failing(tmp_path: Path) -> None:
    # Empty id, out-of-range rating, duplicated row, truncated last line: all for the data contract.
    path = write(tmp_path / "c.tsv", "1\t2\t3\n\t5\t4\n7\t8\t99\n7\t8\t99\n9\t")
    frame = read(path)
    user = to_ids(frame["user"], path=path, what="user id")
    item = to_ids(frame["item"], path=path, what="item id")
    rating = to_numbers(frame["rating"], path=path, what="rating")
    assert user.dtype == np.float64 and np.isnan(user.iloc[1]) and user.iloc[-1] == 9
    assert np.isnan(item.iloc[-1])
    assert rating.tolist()[2:4] == [99.0, 99.0]
    assert np.isnan(rating.iloc[-1])
    assert len(frame) == 5


def test_na_strings_are_not_silently_missing(tmp_path: Path) -> None:
    frame = read(write(tmp_path / "na.tsv", "NA\t2\t3\n"))
    with pytest.raises(DataFormatError, match="'NA'"):
        to_ids(frame["user"], path="na.tsv", what="user id")


def test_non_numeric_rating_is_a_format_error(tmp_path: Path) -> None:
    frame = read(write(tmp_path / "r.tsv", "1\t2\tfive\n"))
    with pytest.raises(DataFormatError, match=r"line 1, column 'rating'.*'five'"):
        to_numbers(frame["rating"], path="r.tsv", what="rating")


def test_timestamps_stay_integral(tmp_path: Path) -> None:
    frame = read(write(tmp_path / "t.tsv", "1\t2\t881250949\n"))
    assert to_numbers(frame["rating"], path="t", what="ts", integral=True).dtype == np.int64
