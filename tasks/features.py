"""Encode user and item feature tables into float32 matrices, once, for every model that reads features.

A feature table (a pandas DataFrame indexed by internal id, as :class:`tasks.ingest.dataset.Dataset` holds
it) becomes one ``[N, F]`` float32 matrix plus a name per column. Each column is encoded by its kind:

* **binary** (numbers that are all 0 or 1, booleans, MovieLens' genre flags): kept as 0/1.
* **numeric** (other numbers, or text that parses as numbers in full, such as RecBole's ``age:token``):
  standardised to zero mean and unit variance over the rows that have a value; a missing value becomes 0
  and sets a ``<col>:missing`` indicator (added only when some value is missing). A constant column carries
  nothing and is skipped.
* **identifier** (text whose values are mostly distinct: titles, names, URLs): skipped.
* **categorical** (other text): one-hot over the categories seen at least ``min_count`` times, at most
  ``max_categories`` of them (most frequent first); the rest share a ``<col>=<other>`` bucket and a missing
  value sets ``<col>:missing``. A column with no category that frequent is skipped.
* **multi-valued** (cells that are lists, tuples or sets, or text joined by ``|`` such as ``"a|b"`` whose
  parts repeat across cells):
  multi-hot over the ``top_k`` values found in the most rows (each seen at least ``min_count`` times), so a
  high-cardinality column such as Last.fm's tags keeps its head; a row with only rarer values sets
  ``<col>=<other>``, an empty one ``<col>:missing``.

Rows of the ``N`` ids that the table does not list count as missing in every column. The encoding is
deterministic (categories ordered by count then value), so two encodings of the same table are equal, and
:func:`encoded_digest` hashes the result for the data fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

OTHER = "<other>"
MISSING = "missing"
SEPARATOR = "|"


@dataclass(frozen=True, eq=False)
class EncodedFeatures:
    """One feature table, encoded.

    Attributes:
        values: The encoded matrix, float32 ``[N, F]``.
        names: The name of each column of ``values`` (``age``, ``gender=F``, ``tags=rock``, ``age:missing``).
        kinds: How each source column was encoded (``binary``, ``numeric``, ``categorical``, ``multi``).
        skipped: Source columns left out, with the reason.
    """

    values: np.ndarray
    names: tuple[str, ...]
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """F, the number of encoded columns."""
        return len(self.names)


def encode_features(
    table: pd.DataFrame | None,
    num_rows: int,
    *,
    min_count: int = 2,
    max_categories: int = 50,
    top_k: int = 100,
) -> EncodedFeatures | None:
    """Encode a feature table indexed by internal id ``0..num_rows-1`` (see the module docstring).

    Args:
        table: The features, one row per id (the index), any columns; ``None`` for no table.
        num_rows: N, the number of ids (rows of the result; ids absent from ``table`` are all-missing).
        min_count: Fewest rows a category or a multi-valued value must appear in to get its own column.
        max_categories: Most one-hot columns per categorical column (the rest go to ``<other>``).
        top_k: Most multi-hot columns per multi-valued column.

    Returns:
        The encoding, or ``None`` when there is no table or no column carries information.

    Raises:
        ValueError: When the index holds ids outside ``[0, num_rows)`` or repeats one.
    """
    if table is None or len(table.columns) == 0:
        return None
    index = np.asarray(table.index, dtype=np.int64)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= num_rows):
        raise ValueError(
            f"feature ids must lie in [0, {num_rows}), found {int(index.min())}..{int(index.max())}"
        )
    if len(np.unique(index)) != len(index):
        raise ValueError("the feature table lists an id more than once")
    blocks: list[np.ndarray] = []
    names: list[str] = []
    kinds: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for column in table.columns:
        label = str(column)
        kind, cells = _kind(table[column])
        if kind == "identifier":
            skipped[label] = "identifier or free text: most values are distinct"
            continue
        if kind == "numeric":
            block, block_names, reason = _numeric(cells, index, num_rows, label)
        elif kind == "binary":
            block, block_names, reason = _binary(cells, index, num_rows, label)
        elif kind == "multi":
            block, block_names, reason = _multi(cells, index, num_rows, label, min_count, top_k)
        else:
            block, block_names, reason = _categorical(
                cells, index, num_rows, label, min_count, max_categories
            )
        if reason is not None:
            skipped[label] = reason
            continue
        kinds[label] = kind
        blocks.append(block)
        names.extend(block_names)
    if not names:
        return None
    values = np.concatenate(blocks, axis=1).astype(np.float32)
    return EncodedFeatures(values=values, names=tuple(names), kinds=kinds, skipped=skipped)


def encoded_digest(features: EncodedFeatures | None) -> bytes:
    """A sha256 digest of an encoding (values and names), ``b""`` for none, for the data fingerprint."""
    if features is None:
        return b""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(features.values).tobytes())
    h.update("\x1f".join(features.names).encode())
    return h.digest()


# -- column kinds ------------------------------------------------------------------------------------------


def _kind(series: pd.Series) -> tuple[str, pd.Series]:
    """The encoding kind of a column and its cells (text that is all numbers comes back as numbers).

    Text joined by ``|`` is multi-valued only when splitting it leaves fewer distinct values than there
    are distinct cells (the parts repeat across cells), so a name that happens to hold a ``|`` stays a
    name. Text whose values are mostly distinct (more than half the rows) is an identifier or free text
    (``identifier``) and is not encoded.
    """
    if pd.api.types.is_bool_dtype(series):
        return "binary", series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        numbers = pd.to_numeric(series, errors="coerce").astype("float64")
        return ("binary" if _is_binary(numbers) else "numeric"), numbers
    present = series.dropna()
    if len(present) and present.map(lambda v: isinstance(v, list | tuple | set | frozenset)).all():
        return "multi", series
    text = present.astype(str).str.strip()
    if len(text) and text.str.contains(SEPARATOR, regex=False).any():
        tokens = text.str.split(SEPARATOR, regex=False).explode().str.strip()
        if tokens[tokens != ""].nunique() < text.nunique():
            return "multi", series
    numbers = pd.to_numeric(text, errors="coerce")
    if len(text) and bool(numbers.notna().all()):
        full = pd.to_numeric(series.astype("string").str.strip(), errors="coerce").astype("float64")
        return ("binary" if _is_binary(full) else "numeric"), full
    if text.nunique() > 0.5 * len(text):
        return "identifier", series
    return "categorical", series


def _is_binary(numbers: pd.Series) -> bool:
    present = numbers.dropna()
    return len(present) > 0 and bool(present.isin([0.0, 1.0]).all())


def _scatter(values: np.ndarray, index: np.ndarray, num_rows: int) -> np.ndarray:
    """Rows ``values[k]`` placed at ``index[k]`` in a zero matrix of ``num_rows`` rows."""
    out = np.zeros((num_rows, values.shape[1]), dtype=np.float32)
    out[index] = values
    return out


def _missing_column(present: np.ndarray, index: np.ndarray, num_rows: int) -> np.ndarray:
    """1 where an id has no value (absent from the table or empty), ``[N, 1]``."""
    flag = np.ones(num_rows, dtype=np.float32)
    flag[index[present]] = 0.0
    return flag[:, None]


def _numeric(
    numbers: pd.Series, index: np.ndarray, num_rows: int, label: str
) -> tuple[np.ndarray, list[str], str | None]:
    values = numbers.to_numpy(np.float64)
    present = np.isfinite(values)
    if not present.any():
        return np.zeros((num_rows, 0)), [], "no numeric value"
    mean = float(values[present].mean())
    std = float(values[present].std())
    if std == 0.0:
        return np.zeros((num_rows, 0)), [], "constant"
    standard = np.where(present, (values - mean) / std, 0.0)
    block = _scatter(standard[:, None], index, num_rows)
    names = [label]
    if not present.all() or len(index) < num_rows:
        block = np.concatenate([block, _missing_column(present, index, num_rows)], axis=1)
        names.append(f"{label}:{MISSING}")
    return block, names, None


def _binary(
    numbers: pd.Series, index: np.ndarray, num_rows: int, label: str
) -> tuple[np.ndarray, list[str], str | None]:
    values = numbers.to_numpy(np.float64)
    present = np.isfinite(values)
    if np.nanmin(values) == np.nanmax(values) and present.all() and len(index) == num_rows:
        return np.zeros((num_rows, 0)), [], "constant"
    block = _scatter(np.where(present, values, 0.0)[:, None], index, num_rows)
    names = [label]
    if not present.all() or len(index) < num_rows:
        block = np.concatenate([block, _missing_column(present, index, num_rows)], axis=1)
        names.append(f"{label}:{MISSING}")
    return block, names, None


def _vocabulary(counts: pd.Series, min_count: int, limit: int) -> list[Any]:
    """The values seen ``min_count`` times or more, most frequent first (ties by value), at most ``limit``."""
    frame = pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy(), "key": counts.index})
    frame = frame[frame["count"] >= min_count].sort_values(["count", "value"], ascending=[False, True])
    return list(frame["key"].iloc[:limit])


def _categorical(
    series: pd.Series, index: np.ndarray, num_rows: int, label: str, min_count: int, max_categories: int
) -> tuple[np.ndarray, list[str], str | None]:
    text = series.astype("string").str.strip()
    text = text.mask(text == "")
    present = text.notna().to_numpy()
    vocabulary = _vocabulary(text.value_counts(), min_count, max_categories)
    if not vocabulary:
        return np.zeros((num_rows, 0)), [], f"no category appears {min_count} or more times"
    codes = pd.Categorical(text.to_numpy(dtype=object, na_value=None), categories=vocabulary).codes
    known = codes >= 0
    width = len(vocabulary)
    onehot = np.zeros((len(text), width + 1), dtype=np.float32)
    onehot[np.flatnonzero(known), codes[known]] = 1.0
    onehot[np.flatnonzero(present & ~known), width] = 1.0  # rare categories share one bucket
    names = [f"{label}={value}" for value in vocabulary]
    block = _scatter(onehot, index, num_rows)
    if onehot[:, width].any():
        names.append(f"{label}={OTHER}")
    else:
        block = block[:, :width]
    if not present.all() or len(index) < num_rows:
        block = np.concatenate([block, _missing_column(present, index, num_rows)], axis=1)
        names.append(f"{label}:{MISSING}")
    return block, names, None


def _tokens(cell: Any) -> list[str]:
    """The distinct values of one multi-valued cell (list-like, or text joined by ``|``), in order."""
    if cell is None or (not isinstance(cell, Iterable | str) and pd.isna(cell)):
        return []
    items: Iterable[Any] = cell.split(SEPARATOR) if isinstance(cell, str) else cell
    seen: dict[str, None] = {}
    for item in items:
        if item is None:
            continue
        token = str(item).strip()
        if token:
            seen.setdefault(token)
    return list(seen)


def _multi(
    series: pd.Series, index: np.ndarray, num_rows: int, label: str, min_count: int, top_k: int
) -> tuple[np.ndarray, list[str], str | None]:
    tokens = [_tokens(cell) for cell in series.to_numpy(dtype=object)]
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    flat = pd.Series([token for row in tokens for token in row], dtype="string")
    rows = np.repeat(np.arange(len(tokens)), lengths)
    vocabulary = _vocabulary(flat.value_counts(), min_count, top_k)
    if not vocabulary:
        return np.zeros((num_rows, 0)), [], f"no value appears in {min_count} or more rows"
    position = pd.Series(np.arange(len(vocabulary)), index=pd.Index(vocabulary, dtype="string"))
    codes = position.reindex(flat.to_numpy()).to_numpy()
    known = ~np.isnan(codes)
    width = len(vocabulary)
    multihot = np.zeros((len(tokens), width + 1), dtype=np.float32)
    multihot[rows[known], codes[known].astype(np.int64)] = 1.0
    present = lengths > 0
    only_rare = present & (multihot[:, :width].sum(1) == 0)
    multihot[only_rare, width] = 1.0
    names = [f"{label}={value}" for value in vocabulary]
    block = _scatter(multihot, index, num_rows)
    if only_rare.any():
        names.append(f"{label}={OTHER}")
    else:
        block = block[:, :width]
    if not present.all() or len(index) < num_rows:
        block = np.concatenate([block, _missing_column(present, index, num_rows)], axis=1)
        names.append(f"{label}:{MISSING}")
    return block, names, None
