r"""FilmTrust: film ratings and a directed trust network (Guo, Zhang & Yorke-Smith, IJCAI 2013).

Crawled from the FilmTrust website by Guibing Guo; the files as kept in QRec (Yu et al.,
https://github.com/Coder-Yu/QRec, ``dataset/FilmTrust/``), the copy the social-recommendation papers
(MHCN, SEPT) use. Fetched file by file into the cache when missing, pinned to a commit and checked against
the SHA-256 of the copy the figures in ``benchmarks/RESULTS.md`` were made on.

* ``ratings.txt``: ``user item rating``, space-separated, no header; ratings 0.5 to 4.0 in steps of 0.5.
  Every rating is an interaction (as in QRec's social models), with the rating kept as ``rating``. User
  308 rated three films twice; as QRec's reader (a dict keyed by user and item) does, the later line wins.
* ``trust.txt``: ``trustor trustee value`` (the value is always 1) -> ``social``; the graphs treat a tie as
  undirected. Trust edges naming a user without ratings are dropped, with a warning, by the data contract.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.ingest.kg_sources import RemoteFiles, ensure_remote_files
from tasks.ingest.readers import read_delimited, to_ids, to_numbers
from tasks.ingest.tables import RawTables

NAME = "filmtrust"
RATING_SCALE = (0.5, 4.0)

REMOTE = RemoteFiles(
    name=NAME,
    base_url="https://raw.githubusercontent.com/Coder-Yu/QRec/a141bb37cb7706b2f53b2eed5843de3269f9f37f/"
    "dataset/FilmTrust/",
    sha256={
        # The byte-for-byte copy in /work/shared/datasets/filmtrust (see its SOURCE.md).
        "ratings.txt": "241167424e24d588e8871d68641e94ead98d5b3a4f0db01ef3181a74ad35e7a1",
        "trust.txt": "64573a033add72b988a0fb140fdbc0ad3464cb9821f940007aff6fda44b09603",
    },
)


def load_filmtrust(data_dir: Path | None, *, download: bool = True) -> RawTables:
    """FilmTrust from ``data_dir`` or the cache, fetched and verified when missing (module docstring)."""
    return read_filmtrust(ensure_remote_files(REMOTE, data_dir, download=download))


def read_filmtrust(folder: Path) -> RawTables:
    """Read ``ratings.txt`` and ``trust.txt`` in ``folder`` (no download)."""
    ratings_path = folder / "ratings.txt"
    ratings = read_delimited(
        ratings_path, sep=" ", what="FilmTrust ratings", columns=("user", "item", "rating")
    )
    interactions = pd.DataFrame(
        {
            "user": to_ids(ratings["user"], path=ratings_path, what="user id", header_line=True),
            "item": to_ids(ratings["item"], path=ratings_path, what="item id", header_line=True),
            "rating": to_numbers(ratings["rating"], path=ratings_path, what="rating", header_line=True),
        }
    )
    interactions = interactions.drop_duplicates(["user", "item"], keep="last").reset_index(drop=True)
    trust_path = folder / "trust.txt"
    trust = read_delimited(
        trust_path, sep=" ", what="FilmTrust trust", columns=("trustor", "trustee"), optional=("value",)
    )
    social = pd.DataFrame(
        {
            "user": to_ids(trust["trustor"], path=trust_path, what="trustor id", header_line=True),
            "friend": to_ids(trust["trustee"], path=trust_path, what="trustee id", header_line=True),
        }
    ).reset_index(drop=True)
    return RawTables(
        name=NAME,
        interactions=interactions,
        social=social,
        rating_scale=RATING_SCALE,
        files={"interactions": str(ratings_path), "social": str(trust_path)},
    )
