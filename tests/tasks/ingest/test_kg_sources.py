"""The knowledge-aware sources on tiny files in their upstream formats (no network, no shared data)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import pytest

from data_checks import validate
from tasks.config import DataConfig
from tasks.ingest import download, kg_sources, load_raw
from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DatasetNotAvailableError

# KGCN's music files: kg.txt and the links with CRLF line endings, as upstream.
KGCN = {
    "user_artists.dat": "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t5\n3\t99\t7\n",
    "item_index2entity_id.txt": "51\t0\r\n52\t1\r\n",
    "kg.txt": "0\tmusic.artist.genre\t7\r\n1\tmusic.artist.genre\t7\r\n1\tmusic.artist.origin\t8\r\n",
}

# RecBole's knowledge-aware ml-100k atomic files (as in CKAN's data/movie/).
RECBOLE = {
    "movie.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t5\t881250949\n1\t11\t3\t881250950\n2\t10\t4\t881250951\n",
    "movie.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Comedy\n11\tHeat\t1995\tAction\n",
    "movie.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n",
    "movie.link": "item_id:token\tentity_id:token\n10\tm.0dyb1\n11\tm.0f4yh\n",
    "movie.kg": "head_id:token\trelation_id:token\ttail_id:token\n"
    "m.0dyb1\tfilm.film.genre\tm.0hcr\nm.0f4yh\tfilm.film.genre\tm.0hcr\nm.0hcr\tfilm.genre.films\tm.0dyb1\n",
}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode())
    return folder


def test_lastfm_kg_keeps_plays_of_linked_artists_and_links_them_to_their_entities(tmp_path: Path) -> None:
    folder = write(tmp_path / "music", KGCN)
    raw = load_raw(DataConfig(dataset="lastfm-kg", data_dir=folder, download=False))
    validate(raw)
    # Artist 99 has no KG entity: its play is dropped, as KGCN's preprocessing drops it.
    assert sorted(raw.interactions["item"].tolist()) == [51, 51, 52]
    dataset = build_dataset(raw)
    assert dataset.num_items == 2 and dataset.num_relations == 2
    assert dataset.relation_names == ("music.artist.genre", "music.artist.origin")
    # Entity 0 is artist 51 (item 0), entity 1 artist 52 (item 1); "7" and "8" follow.
    assert dataset.entity_ids.tolist() == ["0", "1", "7", "8"]
    assert sorted(map(tuple, dataset.kg.tolist())) == [(0, 0, 2), (1, 0, 2), (1, 1, 3)]


def test_movielens_100k_kg_reads_the_kg_and_link_files(tmp_path: Path) -> None:
    folder = write(tmp_path / "movie", RECBOLE)
    raw = load_raw(DataConfig(dataset="movielens-100k-kg", data_dir=folder, download=False))
    validate(raw)
    assert raw.name == "movielens-100k-kg" and raw.rating_scale == (1.0, 5.0)
    dataset = build_dataset(raw)
    # Items 10 and 11 are entities 0 and 1 through movie.link; the genre m.0hcr is entity 2.
    assert dataset.entity_ids.tolist() == ["m.0dyb1", "m.0f4yh", "m.0hcr"]
    names = dataset.relation_names
    kg = {(int(h), names[int(r)], int(t)) for h, r, t in dataset.kg}
    assert kg == {(0, "film.film.genre", 2), (1, "film.film.genre", 2), (2, "film.genre.films", 0)}
    assert dataset.encoded_user_features is not None


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, str], corrupt: str | None = None) -> list[str]:
    """Serve ``files`` for lastfm-kg's URLs, their checksums set to the served bytes (but ``corrupt``)."""
    spec = kg_sources.REMOTE["lastfm-kg"]
    sums = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()}
    if corrupt is not None:
        sums[corrupt] = "0" * 64
    monkeypatch.setitem(kg_sources.REMOTE, "lastfm-kg", dataclasses.replace(spec, sha256=sums))
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float = 0) -> FakeResponse:
        calls.append(url)
        return FakeResponse(files[url.rsplit("/", 1)[-1]].encode())

    monkeypatch.setattr(download, "urlopen", fake_urlopen)
    return calls


def test_missing_files_are_downloaded_from_the_pinned_commit_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = serve(monkeypatch, KGCN)
    folder = tmp_path / "cache"
    raw = kg_sources.load_lastfm_kg(folder)
    assert len(calls) == 3 and all(url.startswith(kg_sources._KGCN) for url in calls)
    assert (folder / "kg.txt").read_bytes() == KGCN["kg.txt"].encode()
    assert len(raw.interactions) == 3
    kg_sources.load_lastfm_kg(folder)
    assert len(calls) == 3  # present now: nothing fetched again


def test_a_checksum_mismatch_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, KGCN, corrupt="kg.txt")
    folder = tmp_path / "cache"
    with pytest.raises(DatasetNotAvailableError, match=r"kg\.txt failed its checksum"):
        kg_sources.load_lastfm_kg(folder)
    assert not any(p.is_file() for p in folder.rglob("*"))


def test_offline_without_files_says_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError, match="downloading is turned off") as err:
        kg_sources.load_movielens_100k_kg(tmp_path, download=False)
    assert "movie.kg" in str(err.value) and "raw.githubusercontent.com/Hank-Kuo/CKAN" in str(err.value)
