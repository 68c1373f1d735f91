r"""LightGCN-style fixed train/test splits (``gusye1234/LightGCN-PyTorch``, ``kuandeng/LightGCN``, SocialLGN).

A folder with a training and a test file, and optionally a trust (social) file:

* train: ``train.txt``, ``data1.txt`` (LightGCN-PyTorch's Last.fm) or ``train_set.txt`` (SocialLGN's,
  ``leo0481/SocialLGN`` ``data/preprocessed/``); test: ``test.txt``, ``test1.txt`` or ``test_set.txt``.
* Three line layouts, detected per file from its first non-blank line:

  - *csv* (the line contains a comma): ``user,item`` per line after an optional header line naming the
    columns (SocialLGN's ``train_set.txt``/``test_set.txt``, 0-based);

  - *pairs* (the line contains a tab): ``user \t item [\t weight]``, one interaction per line; the weight
    (a float, possibly written ``3.2466e+05``) becomes ``rating``;
  - *adjacency* (no tab): ``user item item ...`` separated by spaces, one user per line (Gowalla, Yelp2018,
    Amazon-Book); a line with a user and no items adds nothing.

* trust: ``trustnetwork.txt`` or ``trust.txt``, ``user friend`` per line (tab, space, or comma with an
  optional header as in SocialLGN's; extra fields such as a trust value are ignored) -> ``social``.

Ids may be 0- or 1-based (``DataConfig.one_based``; ``None`` detects 1-based when no id 0 appears in any
file). 1-based ids are shifted to 0-based, as the upstream LightGCN loader does, so ids match the
upstream code's. Every interaction gets ``split`` ``"train"`` or ``"test"`` so the fixed split is kept.
CRLF line endings are handled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError
from tasks.ingest.readers import detect_encoding, first_line, read_delimited, to_ids, to_numbers
from tasks.ingest.tables import RawTables

NAME = "lightgcn"
TRAIN_FILES = ("train.txt", "data1.txt", "train_set.txt")
TEST_FILES = ("test.txt", "test1.txt", "test_set.txt")
TRUST_FILES = ("trustnetwork.txt", "trust.txt")


def _pick(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def read_interaction_file(path: Path) -> pd.DataFrame:
    """One LightGCN file -> ``user``, ``item`` (+ ``rating`` for weighted pairs), raw (un-shifted) ids."""
    encoding = detect_encoding(path)
    line = first_line(path, encoding)
    if "," in line:
        pairs = _read_csv_pairs(path, line, what="LightGCN interactions", columns=("user", "item"))
        return pd.DataFrame(
            {
                "user": to_ids(pairs["user"], path=path, what="user id", header_line=True),
                "item": to_ids(pairs["item"], path=path, what="item id", header_line=True),
            }
        )
    if "\t" in line:
        pairs = read_delimited(
            path, sep="\t", what="LightGCN interactions", columns=("user", "item"), optional=("weight",)
        )
        out = {
            "user": to_ids(pairs["user"], path=path, what="user id", header_line=True),
            "item": to_ids(pairs["item"], path=path, what="item id", header_line=True),
        }
        if "weight" in pairs.columns:
            out["rating"] = to_numbers(pairs["weight"], path=path, what="weight", header_line=True)
        return pd.DataFrame(out)
    return _read_adjacency(path, encoding)


def _read_csv_pairs(path: Path, line: str, *, what: str, columns: tuple[str, str]) -> pd.DataFrame:
    """A CSV file of two id columns; a first line that does not start with an id is a header (any names)."""
    encoding = detect_encoding(path)
    if line.split(",", 1)[0].strip().isdigit():
        return read_delimited(path, sep=",", what=what, columns=columns, encoding=encoding)
    frame = read_delimited(path, sep=",", what=what, header=True, encoding=encoding)
    if frame.shape[1] < 2:
        raise DataFormatError(
            f"{path} ({what}) has {frame.shape[1]} column(s); write {columns[0]},{columns[1]} per line.",
            path=str(path),
            line=1,
        )
    first, second = frame.columns[:2]
    return frame[[first, second]].set_axis(list(columns), axis=1)


def _read_adjacency(path: Path, encoding: str) -> pd.DataFrame:
    """``user item item ...`` lines -> one row per (user, item), indexed by line number."""
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path} (LightGCN interactions) is empty.", path=str(path))
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    users: list[str] = []
    items: list[str] = []
    counts: list[int] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if len(parts) < 2:
            continue
        users.append(parts[0])
        items.extend(parts[1:])
        counts.append(len(parts) - 1)
        line_numbers.append(number)
    if not users and not text.strip():
        raise DataFormatError(f"{path} (LightGCN interactions) is empty.", path=str(path))
    index = pd.Index(np.repeat(np.asarray(line_numbers, dtype=np.int64), counts), name="line")
    frame = pd.DataFrame(
        {"user": np.repeat(np.asarray(users, dtype=object), counts), "item": np.asarray(items, dtype=object)},
        index=index,
    )
    return pd.DataFrame(
        {
            "user": to_ids(frame["user"], path=path, what="user id"),
            "item": to_ids(frame["item"], path=path, what="item id"),
        }
    )


def read_trust_file(path: Path) -> pd.DataFrame:
    """``user friend`` lines (tab-, space- or comma-separated) -> ``user``, ``friend`` with raw ids."""
    line = first_line(path, detect_encoding(path))
    if "," in line:
        frame = _read_csv_pairs(path, line, what="LightGCN trust network", columns=("user", "friend"))
    else:
        sep = "\t" if "\t" in line else r"\s+"
        frame = read_delimited(path, sep=sep, what="LightGCN trust network", columns=("user", "friend"))
    return pd.DataFrame(
        {
            "user": to_ids(frame["user"], path=path, what="user id", header_line=True),
            "friend": to_ids(frame["friend"], path=path, what="friend id", header_line=True),
        }
    )


def _min_id(frame: pd.DataFrame, columns: tuple[str, ...]) -> float:
    values = [frame[c].min() for c in columns if len(frame)]
    values = [v for v in values if pd.notna(v)]
    return float(min(values)) if values else np.inf


def load_lightgcn(data_dir: Path, *, one_based: bool | None = None) -> RawTables:
    """Load a LightGCN-style fixed split from ``data_dir``.

    Args:
        data_dir: The folder with the train/test (and trust) files.
        one_based: Whether ids start at 1 (they are shifted to 0-based); ``None`` detects it.

    Returns:
        Interactions with ``split`` (and ``rating`` when both files carry weights) and, when a trust file is
        present, social edges.

    Raises:
        DatasetNotAvailableError: The folder, the train or the test file does not exist.
        DataFormatError: A file cannot be parsed, or ``one_based=True`` while an id 0 appears.
    """
    folder = Path(data_dir).expanduser()
    train_path = _pick(folder, TRAIN_FILES)
    test_path = _pick(folder, TEST_FILES)
    if train_path is None or test_path is None:
        wanted = " or ".join(TRAIN_FILES) if train_path is None else " or ".join(TEST_FILES)
        raise DatasetNotAvailableError(
            f"LightGCN split not found: {folder} has no {wanted}. Point --data-dir at the folder holding the "
            f"training file ({' or '.join(TRAIN_FILES)}) and the test file ({' or '.join(TEST_FILES)})."
        )
    train = read_interaction_file(train_path)
    test = read_interaction_file(test_path)
    trust_path = _pick(folder, TRUST_FILES)
    trust = read_trust_file(trust_path) if trust_path is not None else None

    lowest = min(
        _min_id(train, ("user", "item")),
        _min_id(test, ("user", "item")),
        _min_id(trust, ("user", "friend")) if trust is not None else np.inf,
    )
    if one_based is None:
        one_based = bool(lowest >= 1)
    elif one_based and lowest < 1:
        raise DataFormatError(
            f"one_based is set, but id {lowest:g} appears in the files in {folder}, so the ids are 0-based. "
            f"Leave one_based unset to detect the base, or set it to false.",
            path=str(folder),
        )

    train = train.assign(split="train")
    test = test.assign(split="test")
    if "rating" not in train.columns or "rating" not in test.columns:
        train = train.drop(columns="rating", errors="ignore")
        test = test.drop(columns="rating", errors="ignore")
    interactions = pd.concat([train, test], ignore_index=True)
    interactions["split"] = interactions["split"].astype("str")
    social = trust.reset_index(drop=True) if trust is not None else None
    if one_based:
        interactions[["user", "item"]] = interactions[["user", "item"]] - 1
        if social is not None:
            social = social - 1

    files = {"interactions": str(train_path), "interactions[test]": str(test_path)}
    if trust_path is not None:
        files["social"] = str(trust_path)
    return RawTables(name=NAME, interactions=interactions, social=social, files=files)
