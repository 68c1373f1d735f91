"""HetRec 2011 Last.fm 2K (``hetrec2011-lastfm-2k``): play counts, friendships, and tags as a KG.

Files (tab-separated, one header line each; official archive
https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip):

* ``user_artists.dat``: ``userID artistID weight`` -> ``interactions`` with the play count as ``rating``
  (unbounded, so no ``rating_scale``; the data contract requires it to be positive).
* ``user_friends.dat``: ``userID friendID`` -> ``social`` (every friendship is listed in both directions;
  :func:`build_dataset` keeps each pair once).
* ``user_taggedartists.dat``: ``userID artistID tagID day month year`` and ``tags.dat``: ``tagID tagValue``
  (latin-1) -> KG triples ``(artist, "tagged", "tag:<value>")``, one per distinct artist and tag
  (``"tagid:<id>"`` when the tag id is not in ``tags.dat``). Tags carry the prefix because some tag values
  are numbers (``2008``) that would otherwise be read as artist ids.
* ``artists.dat`` (optional): ``id name url pictureURL`` -> ``item_features``, with a ``tags`` column: the
  distinct tags each artist was given in ``user_taggedartists.dat`` (a tuple of tag values, empty when it
  has none), so that tags reach the models as item features as well as KG triples (the feature encoder
  keeps the most common ones as multi-hot columns). Without ``artists.dat`` the tag table alone becomes
  ``item_features``, for the artists that have plays.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.ingest.download import ensure_dataset
from tasks.ingest.readers import dedupe_triples, item_key, read_delimited, to_ids, to_numbers
from tasks.ingest.tables import RawTables

NAME = "lastfm-hetrec"


def load_lastfm_hetrec(data_dir: Path | None, *, download: bool = True) -> RawTables:
    """Load HetRec Last.fm 2K from ``data_dir`` (or the cache), downloading it first if needed and allowed.

    Args:
        data_dir: Folder with the ``.dat`` files; ``None`` uses ``~/.cache/gnnrec/lastfm-hetrec``.
        download: Whether the official archive may be fetched when the files are missing.

    Returns:
        Interactions (``rating`` = play count), social edges, the tag KG and artist features.

    Raises:
        DatasetNotAvailableError: The files are missing and cannot be fetched.
        DataFormatError: A file cannot be parsed.
    """
    return read_lastfm_hetrec(ensure_dataset(NAME, data_dir, download=download))


def read_lastfm_plays(path: Path) -> pd.DataFrame:
    """HetRec's ``user_artists.dat`` as the ``user``, ``item``, ``rating`` (play count) interactions.

    The file is tab-separated ``userID artistID weight`` with a header line.

    Raises:
        DataFormatError: The file cannot be parsed.
    """
    plays = read_delimited(
        path,
        sep="\t",
        what="Last.fm play counts",
        columns=("userID", "artistID", "weight"),
        header=True,
    )
    return pd.DataFrame(
        {
            "user": to_ids(plays["userID"], path=path, what="user id"),
            "item": to_ids(plays["artistID"], path=path, what="artist id"),
            "rating": to_numbers(plays["weight"], path=path, what="play count"),
        }
    )


def read_lastfm_hetrec(folder: Path) -> RawTables:
    """Read the HetRec Last.fm files in ``folder`` (no download; see :func:`load_lastfm_hetrec`)."""
    plays_path = folder / "user_artists.dat"
    interactions = read_lastfm_plays(plays_path)
    files = {"interactions": str(plays_path)}

    social = None
    friends_path = folder / "user_friends.dat"
    if friends_path.is_file():
        friends = read_delimited(
            friends_path, sep="\t", what="Last.fm friendships", columns=("userID", "friendID"), header=True
        )
        social = pd.DataFrame(
            {
                "user": to_ids(friends["userID"], path=friends_path, what="user id"),
                "friend": to_ids(friends["friendID"], path=friends_path, what="friend id"),
            }
        ).reset_index(drop=True)
        files["social"] = str(friends_path)

    kg = None
    tagged_path = folder / "user_taggedartists.dat"
    if tagged_path.is_file():
        kg = _read_tags(tagged_path, folder / "tags.dat")
        files["kg"] = str(tagged_path)

    item_features = None
    artists_path = folder / "artists.dat"
    if artists_path.is_file():
        artists = read_delimited(
            artists_path,
            sep="\t",
            what="Last.fm artists",
            columns=("id", "name"),
            header=True,
            text_columns=("name", "url", "pictureURL"),
        )
        item_features = pd.DataFrame(
            {
                "item": to_ids(artists["id"], path=artists_path, what="artist id"),
                "name": artists["name"],
                **({"url": artists["url"]} if "url" in artists.columns else {}),
            }
        ).reset_index(drop=True)
        files["item_features"] = str(artists_path)

    if kg is not None:
        item_features = _with_tags(item_features, kg, interactions["item"])

    return RawTables(
        name=NAME,
        interactions=interactions,
        social=social,
        kg=kg,
        item_features=item_features,
        files=files,
    )


def _with_tags(item_features: pd.DataFrame | None, kg: pd.DataFrame, played: pd.Series) -> pd.DataFrame:
    """Add each artist's distinct tags (sorted tuple of values) as a ``tags`` column of the artist table."""
    tags = kg["tail"].str.replace(r"^tag:", "", regex=True)
    per_artist = (
        pd.Series(tags.to_numpy(), index=kg["head"].to_numpy())
        .groupby(level=0)
        .agg(lambda values: tuple(sorted(set(values))))
    )
    if item_features is None:
        artists = pd.Series(pd.unique(played.dropna()))
        item_features = pd.DataFrame({"item": artists}).reset_index(drop=True)
    keys = item_features["item"].map(lambda v: str(int(v)) if pd.notna(v) else "")
    item_features = item_features.copy()
    item_features["tags"] = [per_artist.get(key, ()) for key in keys]
    return item_features


def _read_tags(tagged_path: Path, tags_path: Path) -> pd.DataFrame:
    """``user_taggedartists.dat`` + ``tags.dat`` -> distinct (artist, "tagged", tag) triples."""
    tagged = read_delimited(
        tagged_path, sep="\t", what="Last.fm tag assignments", columns=("artistID", "tagID"), header=True
    )
    artist = to_ids(tagged["artistID"], path=tagged_path, what="artist id")
    tag_id = to_ids(tagged["tagID"], path=tagged_path, what="tag id")
    pairs = pd.DataFrame({"artist": artist, "tag": tag_id}).dropna().drop_duplicates()
    pairs = pairs.astype("int64")

    names = pd.Series(dtype="str")
    if tags_path.is_file():
        tags = read_delimited(
            tags_path,
            sep="\t",
            what="Last.fm tag names",
            columns=("tagID", "tagValue"),
            header=True,
            encoding="latin-1",
            text_columns=("tagValue",),
        )
        ids = to_ids(tags["tagID"], path=tags_path, what="tag id")
        ok = ids.notna() & tags["tagValue"].notna()
        names = pd.Series(tags["tagValue"][ok].to_numpy(), index=ids[ok].astype("int64").to_numpy())
        names = names[~names.index.duplicated()]
    value = pairs["tag"].map(names)
    tail = ("tag:" + value.astype("str")).where(value.notna(), "tagid:" + pairs["tag"].astype("str"))
    kg = pd.DataFrame({"head": item_key(pairs["artist"]), "relation": "tagged", "tail": tail})
    return dedupe_triples(kg)
