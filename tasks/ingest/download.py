"""Fetching the downloadable sources (MovieLens 100K, HetRec Last.fm 2K) into a local cache, verified.

A source is looked for in ``data_dir`` (or ``~/.cache/gnnrec/<name>``, under ``$XDG_CACHE_HOME`` when that
is set), either directly or in a single sub-folder (the archives' own top folder, e.g. ``ml-100k/``). When
its files are missing and downloading is allowed, the official archive is fetched, its SHA-256 checked
against the published value, and it is extracted atomically: into a temporary folder next to the target,
then renamed into place, so that an interrupted download never leaves a half-extracted dataset behind.
Offline, or when the download or the checksum fails, :class:`DatasetNotAvailableError` says where to get
the archive and how to point ``--data-dir`` at a local copy.

Retrying is left to the orchestration layer (the Prefect task wrapping the load step).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from tasks.ingest.errors import DatasetNotAvailableError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteArchive:
    """An official zip archive of one source.

    Attributes:
        name: The source name (``movielens-100k``).
        url: Official download address.
        sha256: SHA-256 of the archive, hex.
        required: Files that must exist in the dataset folder for the source to count as present.
    """

    name: str
    url: str
    sha256: str
    required: tuple[str, ...]


ARCHIVES: dict[str, RemoteArchive] = {
    # SHA-256 as recorded by ISG-Siegen/OmniRec, src/omnirec/data_loaders/movielens_100k.py (commit 79cb116),
    # and by several independent projects. GroupLens itself publishes only an MD5
    # (https://files.grouplens.org/datasets/movielens/ml-100k.zip.md5: 0e33842e24a9c977be4e0107933c0723).
    "movielens-100k": RemoteArchive(
        name="movielens-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        required=("u.data", "u.item", "u.user"),
    ),
    # SHA-256 as recorded by ISG-Siegen/OmniRec, src/omnirec/data_loaders/hetrec_lastfm.py (commit 79cb116).
    # GroupLens publishes no checksum file for the HetRec archives.
    "lastfm-hetrec": RemoteArchive(
        name="lastfm-hetrec",
        url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        sha256="6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
        required=("user_artists.dat", "user_friends.dat", "user_taggedartists.dat", "tags.dat"),
    ),
}


def default_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/gnnrec/<name>``, by default ``~/.cache/gnnrec/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gnnrec" / name


def find_dataset_folder(folder: Path, required: tuple[str, ...]) -> Path | None:
    """The folder holding every ``required`` file: ``folder`` itself or one of its direct sub-folders."""
    if not folder.is_dir():
        return None
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in required):
            return candidate
    return None


def _not_available(archive: RemoteArchive, folder: Path, reason: str) -> DatasetNotAvailableError:
    return DatasetNotAvailableError(
        f"Dataset '{archive.name}' is not in {folder} (it needs {', '.join(archive.required)}) and {reason}. "
        f"Download {archive.url} yourself, unzip it, and point --data-dir at the folder that holds "
        f"{archive.required[0]} (or at the folder you unzipped it into); or allow downloading on a machine "
        f"with network access."
    )


def ensure_dataset(name: str, data_dir: Path | None, *, download: bool = True) -> Path:
    """Return the folder holding source ``name``'s files, downloading them first if needed and allowed.

    Args:
        name: A key of :data:`ARCHIVES`.
        data_dir: Where the files are or should go; ``None`` uses :func:`default_cache_dir`.
        download: Whether fetching the official archive is allowed.

    Returns:
        The folder with every required file (``data_dir`` or its sub-folder).

    Raises:
        DatasetNotAvailableError: The files are missing and downloading is off, fails, or the archive's
            checksum does not match.
    """
    archive = ARCHIVES[name]
    folder = Path(data_dir).expanduser() if data_dir is not None else default_cache_dir(name)
    found = find_dataset_folder(folder, archive.required)
    if found is not None:
        return found
    if not download:
        raise _not_available(archive, folder, "downloading is turned off")
    try:
        fetch_archive(archive, folder)
    except DatasetNotAvailableError:
        raise
    except (OSError, URLError, zipfile.BadZipFile, ValueError) as exc:
        raise _not_available(archive, folder, f"the download failed ({exc})") from exc
    found = find_dataset_folder(folder, archive.required)
    if found is None:
        raise _not_available(archive, folder, "the downloaded archive does not contain those files")
    return found


def _download(url: str, target: Path) -> str:
    """Stream ``url`` into ``target``; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with urlopen(url, timeout=60) as response, open(target, "wb") as out:
        headers = getattr(response, "headers", None)
        total = int(headers.get("Content-Length") or 0) if headers is not None else 0
        progress = None
        task = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            progress = Progress(transient=True)
            progress.start()
            task = progress.add_task(f"Downloading {url.rsplit('/', 1)[-1]}", total=total or None)
        try:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                if progress is not None and task is not None:
                    progress.advance(task, len(chunk))
        finally:
            if progress is not None:
                progress.stop()
    return digest.hexdigest()


def fetch_archive(archive: RemoteArchive, folder: Path) -> None:
    """Download ``archive``, check its SHA-256 and extract it atomically into ``folder``.

    The archive is unpacked into a temporary folder beside ``folder``; the sub-folder holding the required
    files is then renamed to ``folder`` (one atomic rename when ``folder`` does not exist yet; file by file
    into an existing, e.g. empty, ``folder``).

    Raises:
        DatasetNotAvailableError: The checksum does not match (the partial files are removed).
        OSError, URLError, zipfile.BadZipFile: The download or the extraction failed.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-download-", dir=folder.parent))
    try:
        zip_path = staging / "archive.zip"
        actual = _download(archive.url, zip_path)
        if actual != archive.sha256:
            raise _not_available(
                archive,
                folder,
                f"the downloaded archive failed its checksum (SHA-256 {actual}, expected {archive.sha256}); "
                f"the download was corrupted or the file changed upstream",
            )
        unpacked = staging / "unpacked"
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():
                resolved = (unpacked / member).resolve()
                if not resolved.is_relative_to(unpacked.resolve()):
                    raise zipfile.BadZipFile(f"archive member {member!r} would be written outside the target")
            zf.extractall(unpacked)
        root = find_dataset_folder(unpacked, archive.required)
        if root is None:
            raise zipfile.BadZipFile(f"the archive holds none of {', '.join(archive.required)}")
        if not folder.exists():
            os.replace(root, folder)
        else:
            # Required files last, so a crash midway leaves the folder looking incomplete, not complete.
            entries = sorted(root.iterdir(), key=lambda p: p.name in archive.required)
            for entry in entries:
                destination = folder / entry.name
                if destination.is_dir():
                    shutil.rmtree(destination)
                os.replace(entry, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
