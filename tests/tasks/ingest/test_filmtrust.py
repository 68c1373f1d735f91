"""FilmTrust on tiny files in its upstream format (QRec's copy), the download and the pipeline's refusal."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from data_checks import validate
from tasks.config import DataConfig
from tasks.ingest import download, filmtrust, load_raw
from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DatasetNotAvailableError
from tests.tasks.ingest.test_kg_sources import FakeResponse

# Space-separated, no header; user 3 rates film 2 twice (the later line wins, as in QRec); user 9 has
# trust but no ratings; the last trust line has no trailing newline, as upstream.
FILES = {
    "ratings.txt": "1 1 2\n1 2 4\n2 1 3.5\n3 2 0.5\n3 3 1\n3 2 3\n4 1 1\n4 2 1.5\n4 3 2.5\n4 4 3\n4 5 4\n",
    "trust.txt": "1 2 1\n2 3 1\n3 1 1\n9 1 1",
}


def write(folder: Path, files: dict[str, str] = FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_reads_ratings_and_directed_trust(tmp_path: Path) -> None:
    raw = load_raw(DataConfig(dataset="filmtrust", data_dir=write(tmp_path), download=False))
    assert raw.rating_scale == (0.5, 4.0)
    rows = raw.interactions.sort_values(["user", "item"]).values.tolist()
    assert rows[:5] == [[1, 1, 2.0], [1, 2, 4.0], [2, 1, 3.5], [3, 2, 3.0], [3, 3, 1.0]]
    assert len(rows) == 10
    assert raw.social is not None
    assert raw.social.values.tolist() == [[1, 2], [2, 3], [3, 1], [9, 1]]
    report = validate(raw)
    assert report.success  # the unknown trustor 9 is a warning: its edge is dropped
    dataset = build_dataset(raw)
    assert dataset.summary()["users"] == 4 and dataset.summary()["social_edges"] == 3


def test_missing_files_are_downloaded_from_the_pinned_commit_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sums = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in FILES.items()}
    monkeypatch.setattr(filmtrust, "REMOTE", dataclasses.replace(filmtrust.REMOTE, sha256=sums))
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float = 0) -> FakeResponse:
        calls.append(url)
        return FakeResponse(FILES[url.rsplit("/", 1)[-1]].encode())

    monkeypatch.setattr(download, "urlopen", fake_urlopen)
    folder = tmp_path / "cache"
    raw = filmtrust.load_filmtrust(folder)
    assert sorted(url.rsplit("/", 1)[-1] for url in calls) == ["ratings.txt", "trust.txt"]
    assert all(
        "Coder-Yu/QRec/a141bb37cb7706b2f53b2eed5843de3269f9f37f/dataset/FilmTrust/" in u for u in calls
    )
    assert len(raw.interactions) == 10
    filmtrust.load_filmtrust(folder)
    assert len(calls) == 2  # present now: nothing fetched again


def test_a_checksum_mismatch_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = {name: "0" * 64 for name in FILES}
    monkeypatch.setattr(filmtrust, "REMOTE", dataclasses.replace(filmtrust.REMOTE, sha256=sums))
    monkeypatch.setattr(download, "urlopen", lambda url, timeout=0: FakeResponse(b"1 1 1\n"))
    folder = tmp_path / "cache"
    with pytest.raises(DatasetNotAvailableError, match="failed its checksum"):
        filmtrust.load_filmtrust(folder)
    assert not any(p.is_file() for p in folder.rglob("*"))


def test_offline_without_files_names_the_urls(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotAvailableError, match="downloading is turned off") as err:
        load_raw(DataConfig(dataset="filmtrust", data_dir=tmp_path, download=False))
    assert "raw.githubusercontent.com/Coder-Yu/QRec" in str(err.value) and "trust.txt" in str(err.value)
