"""MovieLens 100K loader on tiny files written in the upstream format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DataFormatError
from tasks.ingest.movielens import GENRES, load_movielens_100k, read_genre_names

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t302\t5\t881250950\n"


def flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def write_ml100k(folder: Path, *, u_data: str = U_DATA, newline: str = "\n", genre: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_bytes(u_data.replace("\n", newline).encode())
    items = [
        f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags(5)}",
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{flags(6, 10, 13, 16)}",
        f"377|Mis\xe9rables, Les (1995)|01-Jan-1995||http://x|{flags(8, 17)}",
        f"267|unknown||||{flags(0)}",
    ]
    (folder / "u.item").write_bytes((newline.join(items) + newline).encode("latin-1"))
    users = ["196|49|M|writer|55105", "186|39|F|executive|00000", "22|25|M|writer|T8H1N"]
    (folder / "u.user").write_bytes((newline.join(users) + newline).encode())
    if genre:
        names = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n"
        (folder / "u.genre").write_text(names, encoding="latin-1")
    return folder


def test_reads_interactions_features_and_kg(tmp_path: Path) -> None:
    raw = load_movielens_100k(write_ml100k(tmp_path / "ml"), download=False)
    inter = raw.interactions
    assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
    assert inter["user"].dtype == np.int64 and inter["timestamp"].dtype == np.int64
    assert inter["rating"].tolist() == [3.0, 3.0, 1.0, 5.0]
    assert raw.rating_scale == (1.0, 5.0)
    assert raw.files["interactions"].endswith("u.data") and raw.files["kg"].endswith("u.item")

    triples = set(map(tuple, raw.kg.to_numpy()))  # type: ignore[union-attr]
    assert ("242", "genre", "genre:Comedy") in triples
    assert ("302", "genre", "genre:Film-Noir") in triples
    assert ("377", "release_year", "year:1995") in triples
    assert ("267", "genre", "genre:unknown") in triples
    assert not any(h == "267" and r == "release_year" for h, r, _ in triples)  # no date, no year
    assert len(triples) == 1 + 4 + 2 + 1 + 3  # genres + years

    features = raw.item_features
    assert features is not None
    assert features.loc[features["item"] == 377, "title"].item() == "Misérables, Les (1995)"
    assert features.loc[features["item"] == 302, "release_year"].item() == 1997
    assert raw.user_features is not None
    assert raw.user_features["zip"].tolist() == ["55105", "00000", "T8H1N"]
    assert raw.user_features["age"].tolist() == [49, 39, 25]


def test_builds_a_dataset_with_items_as_kg_entities(tmp_path: Path) -> None:
    ds = build_dataset(load_movielens_100k(write_ml100k(tmp_path / "ml"), download=False))
    # Movie 267 is in u.item but nobody rated it: it keeps an id (features, no interactions).
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (3, 4, 4)
    assert ds.relation_names == ("genre", "release_year")
    assert ds.entity_ids is not None and list(ds.entity_ids[:4]) == ["242", "267", "302", "377"]
    # Item 242 (entity 0) is a comedy.
    comedy = list(ds.entity_ids).index("genre:Comedy")
    assert ((ds.kg[:, 0] == 0) & (ds.kg[:, 2] == comedy)).any()  # type: ignore[index]


def test_crlf_files_and_the_archive_subfolder(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "cache" / "ml-100k", newline="\r\n")
    raw = load_movielens_100k(tmp_path / "cache", download=False)
    assert len(raw.interactions) == 4
    assert raw.kg is not None and len(raw.kg) == 11


def test_genre_names_default_without_u_genre(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml", genre=False)
    assert read_genre_names(folder / "u.genre") == GENRES
    raw = load_movielens_100k(folder, download=False)
    assert ("242", "genre", "genre:Comedy") in set(map(tuple, raw.kg.to_numpy()))  # type: ignore[union-attr]


def test_contract_problems_load_for_validation(tmp_path: Path) -> None:
    data = U_DATA + "\t242\t4\t881250951\n196\t242\t99\t881250952\n196\t242\t99\t881250952\n7\t8"
    raw = load_movielens_100k(write_ml100k(tmp_path / "ml", u_data=data), download=False)
    inter = raw.interactions
    assert len(inter) == 8
    assert inter["user"].isna().sum() == 1
    assert (inter["rating"] == 99).sum() == 2
    assert np.isnan(inter["rating"].iloc[-1]) and inter["item"].iloc[-1] == 8


def test_non_numeric_id_is_reported_with_its_line(tmp_path: Path) -> None:
    data = U_DATA + "abc\t242\t4\t881250951\n"
    with pytest.raises(DataFormatError, match=r"u\.data, line 5, column 'user'.*'abc'"):
        load_movielens_100k(write_ml100k(tmp_path / "ml", u_data=data), download=False)


def test_comma_separated_u_data_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="comma-separated"):
        load_movielens_100k(write_ml100k(tmp_path / "ml", u_data="1,2,3,4\n"), download=False)
