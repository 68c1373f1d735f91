"""RecBole atomic-file loader on tiny files written in the upstream format."""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError
from tasks.ingest.recbole import load_recbole

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t302\t5\t881250950\n"
)
KG = (
    "head_id:token\trelation_id:token\ttail_id:token\n"
    "m.a\tfilm.film.actor\tm.x\nm.b\tfilm.film.actor\tm.x\nm.a\tfilm.film.genre\tm.y\nm.x\tpeople.person.sibling\tm.z\n"
)
LINK = "item_id:token\tentity_id:token\n242\tm.a\n302\tm.b\n"
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tscore:float\n242\tKolya\t1996\t0.5\n"
USER = "user_id:token\tage:token\tgender:token\tzip_code:token\n196\t49\tM\t00000\n"


def write_atomic(folder: Path, name: str = "movie", **extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"inter": INTER, "kg": KG, "link": LINK, "item": ITEM, "user": USER, **extra}
    for suffix, text in files.items():
        if text:
            (folder / f"{name}.{suffix}").write_text(text, encoding="utf-8")
    return folder


def test_reads_every_atomic_file(tmp_path: Path) -> None:
    raw = load_recbole(write_atomic(tmp_path / "rb"))
    assert raw.name == "recbole-movie"
    assert list(raw.interactions.columns) == ["user", "item", "rating", "timestamp"]
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.kg is not None and len(raw.kg) == 4
    assert raw.item_links is not None and raw.item_links["entity"].tolist() == ["m.a", "m.b"]
    assert raw.item_features is not None
    assert raw.item_features["score"].dtype == np.float64
    assert raw.item_features["release_year"].tolist() == ["1996"]
    assert raw.user_features is not None and raw.user_features["zip_code"].tolist() == ["00000"]
    assert raw.files["item_links"].endswith("movie.link")


def test_linked_entities_become_items_in_the_dataset(tmp_path: Path) -> None:
    ds = build_dataset(load_recbole(write_atomic(tmp_path / "rb"), "movie"))
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (3, 3, 4)
    assert ds.num_relations == 3 and ds.kg is not None and len(ds.kg) == 4
    assert ds.entity_ids is not None and list(ds.entity_ids[:2]) == ["m.a", "m.b"]
    # m.a (item 242 -> index 0) and m.b (item 302 -> index 1) share the actor m.x.
    actor = ds.relation_names.index("film.film.actor")
    heads = set(ds.kg[ds.kg[:, 1] == actor, 0].tolist())
    assert heads == {0, 1}


def test_social_net_file(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "rb", net="source_id:token\ttarget_id:token\n196\t186\n22\t22\n")
    raw = load_recbole(folder)
    assert raw.social is not None and raw.social.to_numpy().tolist() == [[196, 186], [22, 22]]
    other = write_atomic(tmp_path / "rb2", net="a:token\tb:token\tweight:float\n196\t22\t1\n")
    assert load_recbole(other).social.to_numpy().tolist() == [[196, 22]]  # type: ignore[union-attr]


def test_name_is_required_when_several_datasets_share_a_folder(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "rb")
    write_atomic(folder, name="book")
    with pytest.raises(DataFormatError, match="book, movie.*recbole_name"):
        load_recbole(folder)
    assert load_recbole(folder, "book").name == "recbole-book"


def test_missing_folder_or_inter_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError, match="not a folder"):
        load_recbole(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotAvailableError, match=r"\*\.inter"):
        load_recbole(tmp_path / "empty")


def test_bom_and_crlf(tmp_path: Path) -> None:
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "x.inter").write_bytes(codecs.BOM_UTF8 + INTER.replace("\n", "\r\n").encode())
    raw = load_recbole(folder)
    assert raw.interactions["user"].tolist() == [196, 186, 22, 196]


def test_missing_field_names_the_header(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "rb", inter="user_id:token\trating:float\n1\t3\n")
    with pytest.raises(DataFormatError, match=r"movie\.inter.*no field 'item_id'.*name:type"):
        load_recbole(folder)


def test_comma_separated_atomic_file_is_explained(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "rb", inter="user_id:token,item_id:token\n1,2\n")
    with pytest.raises(DataFormatError, match="comma-separated"):
        load_recbole(folder)


def test_string_tokens_are_a_format_error(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "rb", inter="user_id:token\titem_id:token\nA1B\t2\n")
    with pytest.raises(DataFormatError, match=r"line 2, column 'user_id'.*'A1B'"):
        load_recbole(folder)


def _write_benchmark(folder: Path, parts: dict[str, str], name: str = "lastfm") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        (folder / f"{name}.{part}.inter").write_text(
            f"user_id:token\titem_id:token\n{rows}", encoding="utf-8"
        )
    return folder


def test_benchmark_files_become_a_fixed_split(tmp_path: Path) -> None:
    from tasks.config import SplitConfig
    from tasks.split import split_dataset

    folder = _write_benchmark(
        tmp_path / "rb",
        {"train": "2\t51\n2\t52\n3\t51\n3\t53\n", "valid": "2\t53\n3\t52\n", "test": "2\t54\n3\t54\n"},
    )
    raw = load_recbole(folder)  # the stem comes from the parts' names, and they are one dataset, not three
    assert raw.name == "recbole-lastfm"
    assert raw.interactions["split"].tolist() == ["train"] * 4 + ["valid"] * 2 + ["test"] * 2
    assert set(raw.files) == {"interactions_train", "interactions_valid", "interactions_test"}
    ds = build_dataset(raw)
    split = split_dataset(ds, SplitConfig(method="fixed"))
    raw_pairs = {  # back to raw ids: each part holds exactly its file's pairs
        part: {(int(ds.user_ids[u]), int(ds.item_ids[i])) for u, i in getattr(split, part)}
        for part in ("train", "valid", "test")
    }
    assert raw_pairs == {
        "train": {(2, 51), (2, 52), (3, 51), (3, 53)},
        "valid": {(2, 53), (3, 52)},
        "test": {(2, 54), (3, 54)},
    }
    # A random split re-splits the union of the parts.
    assert len(split_dataset(ds, SplitConfig(method="random")).train) > 0


def test_benchmark_without_valid_and_incomplete_benchmark(tmp_path: Path) -> None:
    folder = _write_benchmark(tmp_path / "a", {"train": "1\t1\n1\t2\n", "test": "1\t3\n"})
    assert load_recbole(folder).interactions["split"].tolist() == ["train", "train", "test"]
    broken = _write_benchmark(tmp_path / "b", {"train": "1\t1\n", "valid": "1\t2\n"})
    with pytest.raises(DatasetNotAvailableError, match=r"lastfm\.test\.inter not found.*optional"):
        load_recbole(broken)


def test_benchmark_parts_take_precedence_over_a_whole_file(tmp_path: Path) -> None:
    folder = write_atomic(tmp_path / "rb", name="lastfm")
    _write_benchmark(folder, {"train": "196\t242\n", "test": "196\t302\n"})
    raw = load_recbole(folder)
    assert raw.interactions[["user", "item", "split"]].values.tolist() == [
        [196, 242, "train"],
        [196, 302, "test"],
    ]
    assert raw.kg is not None  # the companion files are still read
