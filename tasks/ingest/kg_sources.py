r"""Knowledge-aware benchmark datasets: MovieLens 100K with Freebase, Last.fm with Satori (files, verified).

Both come as loose files in a public repository (no archive), fetched file by file into the cache when
missing and checked against the SHA-256 of the copies the figures in ``benchmarks/RESULTS.md`` were made on.

* ``movielens-100k-kg``: RecBole's knowledge-aware ``ml-100k`` atomic files (``movie.inter``, ``.item``,
  ``.user``, ``.kg``, ``.link``; Freebase ids after KB4Rec) as kept in the CKAN repository
  (https://github.com/Hank-Kuo/CKAN, ``data/movie/``). Read by :func:`tasks.ingest.recbole.load_recbole`:
  every rating an interaction, 24 Freebase relations, items linked to their ``m.xxxx`` entities.
* ``lastfm-kg``: the KGCN "music" data (Wang et al., WWW 2019, https://github.com/hwwang55/KGCN,
  ``data/music/``): HetRec Last.fm ``user_artists.dat``, the Satori KG ``kg.txt`` (``head \t relation \t
  tail``, CRLF) and ``item_index2entity_id.txt`` (``artistID \t entity``, which KG entity each artist is).
  As KGCN's own preprocessing does, only plays of the artists that have a KG entity are kept (every one a
  positive: KGCN's threshold for music is 0), with the play count as ``rating``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import pandas as pd

from tasks.ingest.download import _download, default_cache_dir
from tasks.ingest.errors import DatasetNotAvailableError
from tasks.ingest.lastfm import read_lastfm_plays
from tasks.ingest.readers import read_delimited, to_ids
from tasks.ingest.recbole import load_recbole
from tasks.ingest.tables import RawTables


@dataclass(frozen=True)
class RemoteFiles:
    """Loose files of one source in a public repository, pinned to a commit.

    Attributes:
        name: The source name.
        base_url: URL prefix; a file's URL is ``base_url + file name``.
        sha256: SHA-256 (hex) of each file, by name.
    """

    name: str
    base_url: str
    sha256: dict[str, str]


_CKAN = "https://raw.githubusercontent.com/Hank-Kuo/CKAN/479bbea5b8dfccda7cd884c0b076e6e3a8cfbb97/data/movie/"
_KGCN = "https://raw.githubusercontent.com/hwwang55/KGCN/2363ca2ddc66a79860629b2e0ec6ad23c57697c8/data/music/"

REMOTE: dict[str, RemoteFiles] = {
    # Checksums of the byte-for-byte copies in /work/shared/datasets (see their SOURCE.md).
    "movielens-100k-kg": RemoteFiles(
        name="movielens-100k-kg",
        base_url=_CKAN,
        sha256={
            "movie.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "movie.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            "movie.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
            "movie.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
            "movie.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
        },
    ),
    "lastfm-kg": RemoteFiles(
        name="lastfm-kg",
        base_url=_KGCN,
        sha256={
            "user_artists.dat": "254272fa721c3935e8be286d28c051b206844307128698ab4eaa41d483379416",
            "kg.txt": "f62bbc8f717c9f68e66dff6faeaa71025092acc11a0f1b4878b953eb05f946a9",
            "item_index2entity_id.txt": "f9693bdde538f755d09b9931b0be662a98965e538658a00c2050912c0adf487b",
        },
    ),
}


def ensure_files(name: str, data_dir: Path | None, *, download: bool = True) -> Path:
    """The folder holding every file of source ``name`` (:data:`REMOTE`); see :func:`ensure_remote_files`."""
    return ensure_remote_files(REMOTE[name], data_dir, download=download)


def ensure_remote_files(remote: RemoteFiles, data_dir: Path | None, *, download: bool = True) -> Path:
    """The folder holding every file of ``remote``, fetching the missing ones if allowed.

    Files already present are used as they are (a local copy may differ in line endings); fetched files
    must match their SHA-256, else nothing is kept.

    Raises:
        DatasetNotAvailableError: Files are missing and downloading is off, fails or a checksum differs.
    """
    name = remote.name
    folder = Path(data_dir).expanduser() if data_dir is not None else default_cache_dir(name)
    missing = [f for f in remote.sha256 if not (folder / f).is_file()]
    if not missing:
        return folder
    hint = (
        f"Dataset '{name}' is not in {folder} (missing {', '.join(missing)}) and {{reason}}. Download "
        f"{', '.join(remote.base_url + f for f in missing)} and point --data-dir at their folder."
    )
    if not download:
        raise DatasetNotAvailableError(hint.format(reason="downloading is turned off"))
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=folder))
    try:
        for file in missing:
            try:
                digest = _download(remote.base_url + file, staging / file)
            except (OSError, URLError, ValueError) as exc:
                raise DatasetNotAvailableError(hint.format(reason=f"the download failed ({exc})")) from exc
            if digest != remote.sha256[file]:
                raise DatasetNotAvailableError(
                    hint.format(
                        reason=f"{file} failed its checksum (SHA-256 {digest}, expected "
                        f"{remote.sha256[file]})"
                    )
                )
        for file in missing:  # only once every file is verified
            os.replace(staging / file, folder / file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_movielens_100k_kg(data_dir: Path | None, *, download: bool = True) -> RawTables:
    """RecBole's knowledge-aware MovieLens 100K (Freebase KG) from ``data_dir`` or the cache."""
    raw = load_recbole(ensure_files("movielens-100k-kg", data_dir, download=download), "movie")
    return RawTables(
        name="movielens-100k-kg",
        interactions=raw.interactions,
        kg=raw.kg,
        item_links=raw.item_links,
        user_features=raw.user_features,
        item_features=raw.item_features,
        files=raw.files,
        rating_scale=(1.0, 5.0),
    )


def load_lastfm_kg(data_dir: Path | None, *, download: bool = True) -> RawTables:
    """KGCN's Last.fm with the Satori KG from ``data_dir`` or the cache (see the module docstring)."""
    return read_lastfm_kg(ensure_files("lastfm-kg", data_dir, download=download))


def read_lastfm_kg(folder: Path) -> RawTables:
    """Read KGCN's music files in ``folder``: plays of KG-linked artists, the KG, and the item links."""
    links_path = folder / "item_index2entity_id.txt"
    links = read_delimited(
        links_path,
        sep="\t",
        what="KGCN artist -> entity links",
        columns=("artist", "entity"),
        text_columns=("entity",),
    )
    artist = to_ids(links["artist"], path=links_path, what="artist id")
    item_links = pd.DataFrame({"item": artist, "entity": links["entity"].astype(str).str.strip()})

    kg_path = folder / "kg.txt"
    triples = read_delimited(
        kg_path,
        sep="\t",
        what="KGCN knowledge graph",
        columns=("head", "relation", "tail"),
        text_columns=("head", "relation", "tail"),
    )
    kg = pd.DataFrame(
        {name: triples[name].astype(str).str.strip() for name in ("head", "relation", "tail")}
    ).drop_duplicates(ignore_index=True)

    plays_path = folder / "user_artists.dat"
    interactions = read_lastfm_plays(plays_path)  # KGCN ships HetRec's own file
    interactions = interactions[interactions["item"].isin(set(artist.dropna()))].reset_index(drop=True)
    return RawTables(
        name="lastfm-kg",
        interactions=interactions,
        kg=kg,
        item_links=item_links.reset_index(drop=True),
        files={"interactions": str(plays_path), "kg": str(kg_path), "item_links": str(links_path)},
    )
