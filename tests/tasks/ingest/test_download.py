"""Download, checksum and atomic extraction, against a zip served by a fake urlopen (never the network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any
from urllib.error import URLError

import pytest

from tasks.ingest import download
from tasks.ingest.errors import DatasetNotAvailableError
from tasks.ingest.movielens import load_movielens_100k

FILES = {
    "ml-100k/u.data": "1\t2\t3\t881250949\n2\t2\t4\t881250950\n",
    "ml-100k/u.item": "2|Movie (1995)|01-Jan-1995||http://x|"
    + "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    + "\n",
    "ml-100k/u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
    "ml-100k/README": "readme\n",
}


def make_zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Serve ``payload`` for the movielens URL, with the archive's checksum set to ``sha256``."""
    calls: list[str] = []

    def setup(payload: bytes, sha256: str | None = None) -> list[str]:
        spec = download.ARCHIVES["movielens-100k"]
        digest = sha256 or hashlib.sha256(payload).hexdigest()
        monkeypatch.setitem(download.ARCHIVES, "movielens-100k", dataclasses.replace(spec, sha256=digest))

        def fake_urlopen(url: str, timeout: float = 0) -> FakeResponse:
            calls.append(url)
            return FakeResponse(payload)

        monkeypatch.setattr(download, "urlopen", fake_urlopen)
        return calls

    return setup


def test_download_verifies_and_extracts_into_the_cache(tmp_path: Path, serve: Any) -> None:
    calls = serve(make_zip(FILES))
    target = tmp_path / "cache" / "movielens-100k"
    raw = load_movielens_100k(target, download=True)
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert (target / "u.data").is_file() and (target / "README").is_file()  # archive folder flattened
    assert len(raw.interactions) == 2 and raw.kg is not None
    assert [p.name for p in target.parent.iterdir()] == ["movielens-100k"]  # no staging folder left
    # Present now: the second load does not fetch again.
    load_movielens_100k(target, download=True)
    assert len(calls) == 1


def test_download_into_an_existing_empty_folder(tmp_path: Path, serve: Any) -> None:
    serve(make_zip(FILES))
    target = tmp_path / "data"
    target.mkdir()
    assert download.ensure_dataset("movielens-100k", target) == target
    assert sorted(p.name for p in target.iterdir()) == ["README", "u.data", "u.item", "u.user"]


def test_checksum_failure_leaves_nothing_behind(tmp_path: Path, serve: Any) -> None:
    serve(make_zip(FILES), sha256="0" * 64)
    target = tmp_path / "cache" / "movielens-100k"
    with pytest.raises(DatasetNotAvailableError) as info:
        load_movielens_100k(target, download=True)
    message = str(info.value)
    assert "checksum" in message and "ml-100k.zip" in message and "--data-dir" in message
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_offline_names_the_url_and_data_dir(tmp_path: Path, serve: Any) -> None:
    calls = serve(make_zip(FILES))
    with pytest.raises(DatasetNotAvailableError) as info:
        load_movielens_100k(tmp_path / "nothing", download=False)
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in message
    assert "--data-dir" in message and "downloading is turned off" in message
    assert calls == []


def test_network_failure_becomes_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, timeout: float = 0) -> None:
        raise URLError("no route to host")

    monkeypatch.setattr(download, "urlopen", no_network)
    with pytest.raises(DatasetNotAvailableError, match="download failed.*no route to host"):
        download.ensure_dataset("lastfm-hetrec", tmp_path / "fm")


def test_archive_without_the_files(tmp_path: Path, serve: Any) -> None:
    serve(make_zip({"other/readme.txt": "x"}))
    with pytest.raises(DatasetNotAvailableError, match="holds none of u.data"):
        download.ensure_dataset("movielens-100k", tmp_path / "ml")
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert download.default_cache_dir("lastfm-hetrec") == tmp_path / "gnnrec" / "lastfm-hetrec"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert download.default_cache_dir("x") == Path.home() / ".cache" / "gnnrec" / "x"


def test_published_checksums_are_sha256() -> None:
    for archive in download.ARCHIVES.values():
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0
        assert archive.url.startswith("https://files.grouplens.org/datasets/")
