r"""MovieLens 100K (GroupLens ``ml-100k``): ratings, user demographics, and genres/years as a small KG.

Files (as in the official archive, https://files.grouplens.org/datasets/movielens/ml-100k.zip):

* ``u.data``: ``user \t item \t rating \t unix timestamp``, no header -> ``interactions`` (ratings 1-5).
* ``u.item``: 24 ``|``-separated fields, latin-1: ``item|title|release date|video release date|IMDb URL``
  and 19 genre flags (0/1) in ``u.genre`` order -> KG triples ``(item, "genre", "genre:<name>")`` for each
  set flag and ``(item, "release_year", "year:<yyyy>")`` from the release date (``01-Jan-1995``), plus
  ``item_features`` (title, release date and year, genre flags).
* ``u.user``: ``user|age|gender|occupation|zip`` -> ``user_features``.
* ``u.genre`` (optional): ``name|index`` lines naming the genre flags; the standard 19 names otherwise.

KG tails carry a ``genre:``/``year:`` prefix so that no attribute value can ever be mistaken for an item id
(a head or tail equal to ``str(item id)`` *is* that item, see :mod:`tasks.ingest.tables`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.ingest.download import ensure_dataset
from tasks.ingest.readers import dedupe_triples, item_key, read_delimited, to_ids, to_numbers
from tasks.ingest.tables import RawTables

NAME = "movielens-100k"

GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_ITEM_FIELDS = ("item", "title", "release_date", "video_release_date", "imdb_url")


def load_movielens_100k(data_dir: Path | None, *, download: bool = True) -> RawTables:
    """Load MovieLens 100K from ``data_dir`` (or the cache), downloading it first if needed and allowed.

    Args:
        data_dir: Folder with ``u.data``, ``u.item``, ``u.user`` (or the folder the archive was unzipped
            into); ``None`` uses ``~/.cache/gnnrec/movielens-100k``.
        download: Whether the official archive may be fetched when the files are missing.

    Returns:
        Interactions with ``rating`` and ``timestamp``, the genre/year KG, user and item features, and
        ``rating_scale`` (1, 5).

    Raises:
        DatasetNotAvailableError: The files are missing and cannot be fetched.
        DataFormatError: A file cannot be parsed.
    """
    return read_movielens_100k(ensure_dataset(NAME, data_dir, download=download))


def read_genre_names(path: Path) -> tuple[str, ...]:
    """Genre names by flag position from ``u.genre`` (``name|index`` lines), or the standard list."""
    if not path.is_file():
        return GENRES
    names: dict[int, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        name, _, index = line.strip().rpartition("|")
        if name and index.strip().isdigit():
            names[int(index)] = name
    if sorted(names) != list(range(len(names))) or not names:
        return GENRES
    return tuple(names[i] for i in range(len(names)))


def read_movielens_100k(folder: Path) -> RawTables:
    """Read the MovieLens 100K files in ``folder`` (no download; see :func:`load_movielens_100k`)."""
    data_path = folder / "u.data"
    ratings = read_delimited(
        data_path, sep="\t", what="MovieLens ratings", columns=("user", "item", "rating", "timestamp")
    )
    interactions = pd.DataFrame(
        {
            "user": to_ids(ratings["user"], path=data_path, what="user id", header_line=True),
            "item": to_ids(ratings["item"], path=data_path, what="item id", header_line=True),
            "rating": to_numbers(ratings["rating"], path=data_path, what="rating", header_line=True),
            "timestamp": to_numbers(
                ratings["timestamp"], path=data_path, what="timestamp", integral=True, header_line=True
            ),
        }
    ).reset_index(drop=True)
    files = {"interactions": str(data_path)}

    kg = None
    item_features = None
    item_path = folder / "u.item"
    if item_path.is_file():
        genres = read_genre_names(folder / "u.genre")
        item_features, kg = _read_items(item_path, genres)
        files["kg"] = str(item_path)
        files["item_features"] = str(item_path)

    user_features = None
    user_path = folder / "u.user"
    if user_path.is_file():
        users = read_delimited(
            user_path,
            sep="|",
            what="MovieLens users",
            columns=("user", "age", "gender", "occupation", "zip"),
            encoding="latin-1",
            text_columns=("gender", "occupation", "zip"),
        )
        user_features = pd.DataFrame(
            {
                "user": to_ids(users["user"], path=user_path, what="user id", header_line=True),
                "age": to_numbers(users["age"], path=user_path, what="age", integral=True, header_line=True),
                "gender": users["gender"],
                "occupation": users["occupation"],
                "zip": users["zip"],
            }
        ).reset_index(drop=True)
        files["user_features"] = str(user_path)

    return RawTables(
        name=NAME,
        interactions=interactions,
        kg=kg,
        user_features=user_features,
        item_features=item_features,
        rating_scale=(1.0, 5.0),
        files=files,
    )


def _read_items(path: Path, genres: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``u.item`` -> (item features, KG triples)."""
    flag_columns = tuple(f"genre_{i}" for i in range(len(genres)))
    raw = read_delimited(
        path,
        sep="|",
        what="MovieLens movies",
        columns=_ITEM_FIELDS + flag_columns,
        encoding="latin-1",
        text_columns=_ITEM_FIELDS[1:],
    )
    item = to_ids(raw["item"], path=path, what="item id", header_line=True)
    flags = pd.DataFrame(
        {
            genre: to_numbers(raw[col], path=path, what=f"'{genre}' genre flag", header_line=True)
            for genre, col in zip(genres, flag_columns, strict=True)
        }
    )
    year = pd.to_numeric(raw["release_date"].str.extract(r"(\d{4})\s*$", expand=False), errors="coerce")
    features = pd.concat(
        [
            pd.DataFrame(
                {
                    "item": item,
                    "title": raw["title"],
                    "release_date": raw["release_date"],
                    "release_year": year.astype("Int64"),
                }
            ),
            flags.fillna(0).astype("int8"),
        ],
        axis=1,
    ).reset_index(drop=True)

    known = item.notna().to_numpy()
    keys = item_key(item[known]).to_numpy()
    flag_values = flags.to_numpy()[known] == 1
    rows, cols = np.nonzero(flag_values)
    genre_triples = pd.DataFrame(
        {
            "head": keys[rows],
            "relation": "genre",
            "tail": np.array([f"genre:{g}" for g in genres], dtype=object)[cols],
        }
    )
    has_year = year[known].notna().to_numpy()
    year_triples = pd.DataFrame(
        {
            "head": keys[has_year],
            "relation": "release_year",
            "tail": ["year:" + str(int(y)) for y in year[known].to_numpy()[has_year]],
        }
    )
    kg = dedupe_triples(pd.concat([genre_triples, year_triples], ignore_index=True))
    return features, kg
