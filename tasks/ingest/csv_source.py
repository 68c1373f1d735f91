"""Your own data as CSV files: the documented schema of the ``csv`` source.

Point ``--data-dir`` at a folder holding these files (or at a single CSV file, read as
``interactions.csv``). Every file has a header row; the separator is ``DataConfig.csv_sep`` (default ``,``);
values may be quoted; UTF-8 (with or without a BOM), falling back to latin-1.

=======================  ========  ===========================================================================
file                     needed    columns
=======================  ========  ===========================================================================
``interactions.csv``     yes       ``user``, ``item`` (integer ids); optional ``rating`` (number),
                                   ``timestamp`` (unix seconds, or an ISO 8601 date-time such as
                                   ``2024-05-01T12:00:00``), ``split`` (``train``/``valid``/``test``, for a
                                   fixed split)
``social.csv``           no        ``user``, ``friend`` (user ids; direction is ignored)
``kg.csv``               no        ``head``, ``relation``, ``tail`` (strings; a head or tail equal to an item
                                   id is that item, unless ``item_links.csv`` is given)
``item_links.csv``       no        ``item``, ``entity`` (which KG entity each item is)
``user_features.csv``    no        ``user`` and any feature columns
``item_features.csv``    no        ``item`` and any feature columns
=======================  ========  ===========================================================================

Other columns are ignored in ``interactions.csv`` and kept in the feature files. When your columns have
other names, map them with ``DataConfig.csv_columns`` (canonical name -> your column name, e.g.
``{"user": "customer_id", "item": "product_id", "rating": "stars"}``); the map applies to every file that
has the named column. Ids must be integers: map string ids (``"u123"``) to integers before loading.
Problems in the values (an empty id, a rating out of range, a duplicated row, a self-friendship) are not
load errors: they load as they are and the data contract reports them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError
from tasks.ingest.readers import read_delimited, to_ids, to_numbers
from tasks.ingest.tables import RawTables

NAME = "csv"

CANONICAL_COLUMNS = frozenset(
    {"user", "item", "rating", "timestamp", "split", "friend", "head", "relation", "tail", "entity"}
)


def _read(
    path: Path, what: str, sep: str, columns: tuple[str, ...], rename: Mapping[str, str], text: bool = False
) -> pd.DataFrame:
    """Read one CSV file, checking for ``columns`` under the user's names, then renaming to canonical.

    Column types are inferred (a non-numeric id then arrives as text and :func:`to_ids` reports its line);
    ``text=True`` keeps ``columns`` as written, for KG entities (an id column with a gap would otherwise
    become float and turn ``5`` into ``5.0``).
    """
    user_names = tuple(rename.get(c, c) for c in columns)
    frame = read_delimited(
        path,
        sep=sep,
        what=what,
        header=True,
        columns=user_names,
        quoting=csv.QUOTE_MINIMAL,
        text_columns=user_names if text else (),
    )
    return frame.rename(columns={v: k for k, v in rename.items() if v in frame.columns})


def _timestamps(series: pd.Series, path: Path) -> pd.Series:
    """Unix seconds, or ISO 8601 date-times converted to unix seconds."""
    try:
        return to_numbers(series, path=path, what="timestamp", integral=True)
    except DataFormatError:
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
        if (parsed.isna() & series.notna()).any():
            raise
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return seconds.astype("int64") if seconds.notna().all() else seconds.astype("float64")


def load_csv(data_dir: Path, *, columns: Mapping[str, str] | None = None, sep: str = ",") -> RawTables:
    """Load the CSV files in ``data_dir`` (schema in the module docstring).

    Args:
        data_dir: The folder with ``interactions.csv`` and the optional files, or one CSV file.
        columns: Canonical column -> your column name.
        sep: Field separator.

    Returns:
        The tables present.

    Raises:
        DatasetNotAvailableError: ``interactions.csv`` does not exist.
        DataFormatError: An unknown key in ``columns``, a missing column, or an unreadable file.
    """
    rename = dict(columns or {})
    unknown = sorted(set(rename) - CANONICAL_COLUMNS)
    if unknown:
        raise DataFormatError(
            f"csv_columns names unknown canonical column(s) {unknown}; the keys must be among "
            f"{sorted(CANONICAL_COLUMNS)} and the values your files' column names (e.g. "
            f'{{"user": "customer_id"}}).'
        )
    path = Path(data_dir).expanduser()
    folder, inter_path = (path.parent, path) if path.is_file() else (path, path / "interactions.csv")
    if not inter_path.is_file():
        raise DatasetNotAvailableError(
            f"CSV interactions not found: {inter_path} does not exist. Point --data-dir at a folder holding "
            f"interactions.csv (columns user,item[,rating][,timestamp]) or at the CSV file itself."
        )

    raw = _read(inter_path, "interactions", sep, ("user", "item"), rename)
    out = {
        "user": to_ids(raw["user"], path=inter_path, what="user id"),
        "item": to_ids(raw["item"], path=inter_path, what="item id"),
    }
    if "rating" in raw.columns:
        out["rating"] = to_numbers(raw["rating"], path=inter_path, what="rating")
    if "timestamp" in raw.columns:
        out["timestamp"] = _timestamps(raw["timestamp"], inter_path)
    if "split" in raw.columns:
        out["split"] = raw["split"].astype("str").str.strip().str.lower().where(raw["split"].notna())
    interactions = pd.DataFrame(out).reset_index(drop=True)
    files = {"interactions": str(inter_path)}

    social = None
    social_path = folder / "social.csv"
    if social_path.is_file():
        frame = _read(social_path, "social edges", sep, ("user", "friend"), rename)
        social = pd.DataFrame(
            {
                "user": to_ids(frame["user"], path=social_path, what="user id"),
                "friend": to_ids(frame["friend"], path=social_path, what="friend id"),
            }
        ).reset_index(drop=True)
        files["social"] = str(social_path)

    kg = None
    kg_path = folder / "kg.csv"
    if kg_path.is_file():
        frame = _read(kg_path, "knowledge graph", sep, ("head", "relation", "tail"), rename, text=True)
        kg = pd.DataFrame(
            {c: frame[c].astype("str").where(frame[c].notna()) for c in ("head", "relation", "tail")}
        ).reset_index(drop=True)
        files["kg"] = str(kg_path)

    item_links = None
    links_path = folder / "item_links.csv"
    if links_path.is_file():
        frame = _read(links_path, "item-entity links", sep, ("item", "entity"), rename, text=True)
        item_links = pd.DataFrame(
            {
                "item": to_ids(frame["item"], path=links_path, what="item id"),
                "entity": frame["entity"].astype("str").where(frame["entity"].notna()),
            }
        ).reset_index(drop=True)
        files["item_links"] = str(links_path)

    features: dict[str, pd.DataFrame | None] = {"user": None, "item": None}
    for kind in ("user", "item"):
        feature_path = folder / f"{kind}_features.csv"
        if feature_path.is_file():
            frame = _read(feature_path, f"{kind} features", sep, (kind,), rename)
            frame[kind] = to_ids(frame[kind], path=feature_path, what=f"{kind} id")
            features[kind] = frame.reset_index(drop=True)
            files[f"{kind}_features"] = str(feature_path)

    return RawTables(
        name=NAME,
        interactions=interactions,
        social=social,
        kg=kg,
        item_links=item_links,
        user_features=features["user"],
        item_features=features["item"],
        files=files,
    )
