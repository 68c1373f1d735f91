"""Shared parsing helpers for the loaders: delimited files into frames, raw ids into integers.

Every loader reads through :func:`read_delimited` (pandas' C engine, so that the 186k-row Last.fm tag file
loads in milliseconds) and converts columns with :func:`to_ids` / :func:`to_numbers`. The split of
responsibilities with the data contract is deliberate:

* What makes a file *unreadable* is a :class:`DataFormatError` here: a missing or empty file, the wrong
  delimiter, a missing column, a ragged line with extra fields, a non-numeric id such as ``abc``.
* What makes a file *readable but wrong* loads as it is, so that ``data_checks`` can report it with the rest:
  an empty id field (kept as ``NaN``, the column then being float), an out-of-range rating, a duplicated
  row, a self-friendship, a truncated last line (its missing fields are ``NaN``).

Frames returned by :func:`read_delimited` are indexed by the 1-based line number of each row in the file,
so that errors can point at the line; loaders reset the index before returning tables.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_integer_dtype, is_numeric_dtype

from tasks.ingest.errors import DataFormatError

_SEP_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "'|'", " ": "space", r"\s+": "whitespace"}
_PARSER_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def sep_name(sep: str) -> str:
    r"""A person's name for a field separator (``tab`` for ``\t``)."""
    return _SEP_NAMES.get(sep, repr(sep))


def detect_encoding(path: Path, default: str = "utf-8") -> str:
    """The encoding to read ``path`` with: the one its byte-order mark names, else ``default``.

    A UTF-8 BOM is stripped (``utf-8-sig``) even when the format is latin-1 upstream, since a BOM can only
    come from an editor that re-saved the file as UTF-8.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return default


def first_line(path: Path, encoding: str = "latin-1") -> str:
    """The first non-blank line of a file, without its line ending (for error messages)."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        for line in handle:
            stripped = line.rstrip("\r\n").lstrip("\ufeff")
            if stripped.strip():
                return stripped
    return ""


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def delimiter_hint(path: Path, sep: str) -> str:
    """A sentence saying which separator the file seems to use when it is not ``sep`` (or ``""``)."""
    line = first_line(path)
    if sep in line or (sep == r"\s+" and len(line.split()) > 1):
        return ""
    for other in ("\t", ",", ";", "|", " "):
        if other != sep and other in line.strip():
            return (
                f" The first line reads {_short(line)!r}, which looks {sep_name(other)}-separated, but this "
                f"format is {sep_name(sep)}-separated."
            )
    return f" The first line reads {_short(line)!r}."


def read_delimited(
    path: Path,
    *,
    sep: str,
    what: str,
    columns: Sequence[str] = (),
    optional: Sequence[str] = (),
    header: bool = False,
    encoding: str = "utf-8",
    text_columns: Collection[str] = (),
    quoting: int = csv.QUOTE_NONE,
) -> pd.DataFrame:
    """Read a delimited text file into a frame indexed by line number.

    Handles CRLF line endings, a byte-order mark, latin-1 bytes in a file declared UTF-8 (it falls back to
    latin-1, which accepts any byte), and blank lines (dropped). Only empty fields become missing values;
    strings such as ``NA`` stay strings, so an id ``NA`` is reported rather than silently dropped.

    Args:
        path: The file.
        sep: Field separator.
        what: What the file is, for messages (``"MovieLens ratings (u.data)"``).
        columns: Required columns. Without a header, the names of the first ``len(columns)`` fields; with a
            header, names that must appear in it.
        optional: Without a header, names of the fields after ``columns`` that may be absent.
        header: Whether the first line names the columns.
        encoding: The file's encoding (a byte-order mark overrides it).
        text_columns: Columns to keep as strings (tags, titles, zip codes).
        quoting: ``csv.QUOTE_NONE`` for upstream formats that never quote (a stray ``"`` in a title is
            data), ``csv.QUOTE_MINIMAL`` for user CSV files.

    Returns:
        The rows, index = 1-based line number in the file. Headerless files get the names in ``columns`` and
        ``optional`` (extra fields are dropped); files with a header keep their (stripped) column names.

    Raises:
        DataFormatError: The file is empty, a line has more fields than the first, or a required column is
            missing (with a hint when the file seems to use another separator).
    """
    if path.stat().st_size == 0 or not first_line(path):
        raise DataFormatError(
            f"{path} ({what}) is empty. Re-copy or re-download the file; an interrupted copy often leaves an "
            f"empty file behind.",
            path=str(path),
        )
    enc = detect_encoding(path, encoding)
    names = list(columns) + list(optional)
    dtype: dict[str | int, type] | None
    if header:
        dtype = {name: str for name in text_columns}
    else:
        dtype = {i: str for i, name in enumerate(names) if name in text_columns}
    kwargs = {
        "sep": sep,
        "header": 0 if header else None,
        "dtype": dtype or None,
        "keep_default_na": False,
        "na_values": [""],
        "skip_blank_lines": False,
        "quoting": quoting,
        "engine": "c",
    }
    try:
        try:
            frame = pd.read_csv(path, encoding=enc, **kwargs)
        except UnicodeDecodeError:
            if enc.lower().replace("_", "-") not in ("utf-8", "utf8"):
                raise
            frame = pd.read_csv(path, encoding="latin-1", **kwargs)
    except pd.errors.ParserError as exc:
        match = _PARSER_LINE.search(str(exc))
        where = (
            f"line {match.group(2)} has {match.group(3)} fields where the lines before it have "
            f"{match.group(1)}"
            if match
            else str(exc)
        )
        raise DataFormatError(
            f"{path} ({what}) cannot be parsed as {sep_name(sep)}-separated text: {where}. Fix or remove "
            f"that line (a separator inside a value must not appear unquoted).",
            path=str(path),
            line=int(match.group(2)) if match else None,
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{path} ({what}) is empty.", path=str(path)) from exc

    offset = 2 if header else 1
    frame.index = pd.RangeIndex(offset, offset + len(frame), name="line")
    if header:
        frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataFormatError(
                f"{path} ({what}) has no column {', '.join(repr(c) for c in missing)}; its header has "
                f"{list(frame.columns)}.{delimiter_hint(path, sep)} The header must name the columns "
                f"{list(columns)}, separated by {sep_name(sep)}.",
                path=str(path),
                line=1,
            )
    else:
        if frame.shape[1] < len(columns):
            raise DataFormatError(
                f"{path} ({what}) has {frame.shape[1]} field(s) per line but needs at least {len(columns)} "
                f"({', '.join(columns)}).{delimiter_hint(path, sep)} Write one record per line with the "
                f"fields separated by {sep_name(sep)}.",
                path=str(path),
                line=1,
            )
        frame = frame.iloc[:, : min(frame.shape[1], len(names))]
        frame.columns = names[: frame.shape[1]]
    # Blank lines become all-missing rows (skip_blank_lines=False keeps the line numbers right): drop them.
    blank = frame.isna().all(axis=1)
    if blank.any():
        frame = frame[~blank]
    return frame


def _line_of(frame: pd.DataFrame | pd.Series, label: object) -> int | None:
    return int(label) if isinstance(label, (int, np.integer)) and frame.index.name == "line" else None


def _where(path: Path | str, series: pd.Series, label: object) -> tuple[str, int | None]:
    line = _line_of(series, label)
    at = f"line {line}, " if line is not None else ""
    return f"{path}, {at}column '{series.name}'", line


#: The largest id an ``int64`` holds; larger raw ids are refused rather than wrapped or rounded into another.
INT64_MAX = 2**63 - 1
#: From this magnitude on, a float64 may be a rounded id (2^53 + 1 reads as 2^53).
FLOAT_EXACT_MAX = 2**53


def _too_large(
    series: pd.Series, mask: pd.Series, *, path: Path | str, what: str, empty: bool = False
) -> NoReturn:
    """Refuse ids that cannot be kept exactly (two distinct raw ids must never become one)."""
    label = mask[mask].index[0]
    where, line = _where(path, series, label)
    reason = (
        "its column also has empty fields, which makes it floating point, exact only up to 2^53"
        if empty
        else "ids must fit a signed 64-bit integer (up to 2^63 - 1 = 9223372036854775807)"
    )
    value = series[label]
    shown = str(value.item() if isinstance(value, np.generic) else value)
    raise DataFormatError(
        f"{where}: the {what} {shown} cannot be kept exactly: {reason} "
        f"({int(mask.sum())} such value(s) in the file). Map the ids to smaller integers before loading; "
        "they are never rounded or wrapped, since that would merge distinct users or items.",
        path=str(path),
        line=line,
    )


def to_ids(series: pd.Series, *, path: Path | str, what: str, header_line: bool = False) -> pd.Series:
    """Convert a column of raw ids to ``int64``, or to ``float64`` with ``NaN`` where a field is empty.

    Args:
        series: The column as read (strings, integers or floats); its index is the line number.
        path: The file, for messages.
        what: What the ids are (``"user id"``).
        header_line: Whether the format has no header, so that a bad first line is probably a header row.

    Returns:
        ``int64`` when every id is present; ``float64`` with ``NaN`` for empty fields otherwise (the data
        contract reports those).

    Raises:
        DataFormatError: A non-empty id is not a number (``abc``), or a number is not an integer (``3.5``).
    """
    if is_integer_dtype(series.dtype) and not is_bool_dtype(series.dtype):
        if series.dtype.kind == "u" and len(series) and int(series.max()) > INT64_MAX:
            _too_large(series, series > INT64_MAX, path=path, what=what)
        return series.astype("int64")
    if is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype):
        values = series.astype("float64")
        inexact = values.abs() >= FLOAT_EXACT_MAX
        if inexact.any():  # already rounded by the reader: two ids may have become one
            _too_large(series, inexact, path=path, what=what, empty=True)
    else:
        text = series.astype("str").str.strip().where(series.notna())
        whole = text.str.fullmatch(r"[+-]?\d+").fillna(False).astype(bool)
        if whole.any():  # exact, digit by digit: a float would merge ids above 2^53
            exact = text[whole].map(int)
            outside = (exact > INT64_MAX) | (exact < -INT64_MAX - 1)
            if outside.any():
                _too_large(
                    series, whole & outside.reindex(series.index, fill_value=False), path=path, what=what
                )
            if not (~whole & text.notna() & (text != "")).any():
                if whole.all():
                    return exact.astype("int64")
                values = exact.reindex(series.index).astype("float64")
                if (values.abs() >= FLOAT_EXACT_MAX).any():
                    _too_large(series, values.abs() >= FLOAT_EXACT_MAX, path=path, what=what, empty=True)
                return values
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        if (values.abs() >= FLOAT_EXACT_MAX).any():  # e.g. "1e19" or a big id beside a "3.0"
            _too_large(series, values.abs() >= FLOAT_EXACT_MAX, path=path, what=what, empty=True)
        bad = values.isna() & text.notna() & (text != "")
        if bad.any():
            label = bad.idxmax()
            where, line = _where(path, series, label)
            found = str(series[bad].iloc[0])
            hint = (
                " This looks like a header row, but this format has none: delete that line."
                if header_line and line == 1
                else " Ids must be integers; map string ids to integers before loading (the csv source "
                "documents how)."
            )
            raise DataFormatError(
                f"{where}: found {found!r} where a {what} (an integer) was expected "
                f"({int(bad.sum())} such value(s) in the file).{hint}",
                path=str(path),
                line=line,
            )
    array = values.to_numpy()
    present = ~np.isnan(array)
    fractional = present & (array != np.round(array))
    if fractional.any():
        label = values.index[int(np.argmax(fractional))]
        where, line = _where(path, series, label)
        raise DataFormatError(
            f"{where}: found {array[np.argmax(fractional)]!r} where a {what} (an integer) was expected. Ids "
            f"must be whole numbers; check that the columns are in the documented order.",
            path=str(path),
            line=line,
        )
    if present.all():
        return values.astype("int64")
    return values


def to_numbers(
    series: pd.Series, *, path: Path | str, what: str, integral: bool = False, header_line: bool = False
) -> pd.Series:
    """Convert a column of ratings, weights or timestamps to numbers; empty fields become ``NaN``.

    Args:
        series: The column as read; its index is the line number.
        path: The file, for messages.
        what: What the values are (``"rating"``).
        integral: Return ``int64`` when every value is present and whole (timestamps).
        header_line: Whether the format has no header (a bad first line is probably a header row).

    Returns:
        ``float64`` (or ``int64`` for integral columns without missing values).

    Raises:
        DataFormatError: A non-empty value is not a number.
    """
    if is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype):
        values = series.astype("float64") if not is_integer_dtype(series.dtype) else series
    else:
        text = series.astype("str").str.strip().where(series.notna())
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = values.isna() & text.notna() & (text != "")
        if bad.any():
            label = bad.idxmax()
            where, line = _where(path, series, label)
            hint = (
                " This looks like a header row, but this format has none: delete that line."
                if header_line and line == 1
                else " Write plain numbers (a dot for decimals, no units or thousands separators)."
            )
            raise DataFormatError(
                f"{where}: found {str(series[bad].iloc[0])!r} where a {what} (a number) was expected "
                f"({int(bad.sum())} such value(s) in the file).{hint}",
                path=str(path),
                line=line,
            )
    if integral:
        array = values.to_numpy(dtype="float64")
        if not np.isnan(array).any() and (array == np.round(array)).all():
            return values.astype("int64")
        return values.astype("float64")
    return values.astype("float64")


def item_key(ids: pd.Series) -> pd.Series:
    """The KG key of raw item ids: ``str(int(id))``, which :func:`build_dataset` matches against items."""
    return ids.astype("int64").astype(str)


def dedupe_triples(kg: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated (head, relation, tail) rows and reset the index."""
    return kg.drop_duplicates(["head", "relation", "tail"]).reset_index(drop=True)
