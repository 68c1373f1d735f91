"""HetRec Last.fm 2K loader on tiny files written in the upstream format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.dataset import build_dataset
from tasks.ingest.errors import DataFormatError
from tasks.ingest.lastfm import load_lastfm_hetrec

PLAYS = "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t5\n4\t2008\t7\n"
FRIENDS = "userID\tfriendID\n2\t3\n3\t2\n2\t4\n4\t2\n"
TAGGED = (
    "userID\tartistID\ttagID\tday\tmonth\tyear\n"
    "2\t52\t13\t1\t4\t2009\n"
    "3\t52\t13\t1\t5\t2009\n"  # the same (artist, tag) from another user: one triple
    "2\t51\t706\t1\t4\t2009\n"
    "2\t51\t999\t1\t4\t2009\n"  # tag id missing from tags.dat
)
TAGS = "tagID\ttagValue\n13\tmetal\n706\t2008\n15\tn\xe9o-soul\n"


def write_lastfm(folder: Path, *, plays: str = PLAYS, newline: str = "\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text, encoding in (
        ("user_artists.dat", plays, "ascii"),
        ("user_friends.dat", FRIENDS, "ascii"),
        ("user_taggedartists.dat", TAGGED, "ascii"),
        ("tags.dat", TAGS, "latin-1"),
        ("artists.dat", "id\tname\turl\tpictureURL\n51\tDuran Duran\thttp://a\thttp://b\n", "utf-8"),
    ):
        (folder / name).write_bytes(text.replace("\n", newline).encode(encoding))
    return folder


def test_reads_plays_friends_tags_and_artists(tmp_path: Path) -> None:
    raw = load_lastfm_hetrec(write_lastfm(tmp_path / "fm"), download=False)
    assert raw.rating_scale is None
    inter = raw.interactions
    assert inter["user"].dtype == np.int64
    assert inter["rating"].tolist() == [13883.0, 11690.0, 5.0, 7.0]
    assert raw.social is not None and len(raw.social) == 4
    assert raw.kg is not None
    triples = sorted(map(tuple, raw.kg.to_numpy()))
    assert triples == [
        ("51", "tagged", "tag:2008"),
        ("51", "tagged", "tagid:999"),
        ("52", "tagged", "tag:metal"),
    ]
    assert raw.item_features is not None and raw.item_features["name"].tolist() == ["Duran Duran"]
    assert raw.files["social"].endswith("user_friends.dat")


def test_numeric_tag_is_not_confused_with_the_artist_of_that_id(tmp_path: Path) -> None:
    ds = build_dataset(load_lastfm_hetrec(write_lastfm(tmp_path / "fm"), download=False))
    assert ds.entity_ids is not None
    artist_2008 = list(ds.item_ids).index(2008)
    tag_2008 = list(ds.entity_ids).index("tag:2008")
    assert tag_2008 >= ds.num_items and tag_2008 != artist_2008
    # Friendships listed both ways become one undirected pair each.
    assert ds.social is not None and len(ds.social) == 2


def test_latin1_tag_names_and_crlf(tmp_path: Path) -> None:
    folder = write_lastfm(tmp_path / "fm", newline="\r\n")
    (folder / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\r\n2\t51\t15\t1\t4\t2009\r\n", encoding="ascii"
    )
    raw = load_lastfm_hetrec(folder, download=False)
    assert raw.kg is not None and raw.kg["tail"].tolist() == ["tag:néo-soul"]
    assert len(raw.interactions) == 4


def test_missing_weight_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"user_artists\.dat.*no column 'weight'"):
        load_lastfm_hetrec(write_lastfm(tmp_path / "fm", plays="userID\tartistID\n2\t51\n"), download=False)


def test_zero_and_self_friendship_load_for_the_contract(tmp_path: Path) -> None:
    folder = write_lastfm(tmp_path / "fm", plays=PLAYS + "5\t51\t0\n")
    (folder / "user_friends.dat").write_text("userID\tfriendID\n2\t2\n3\t\n")
    raw = load_lastfm_hetrec(folder, download=False)
    assert raw.interactions["rating"].iloc[-1] == 0
    assert raw.social is not None
    assert raw.social["user"].iloc[0] == raw.social["friend"].iloc[0] == 2
    assert np.isnan(raw.social["friend"].iloc[1])


def test_artists_carry_their_tags_as_a_multi_valued_feature(tmp_path: Path) -> None:
    from data_checks import validate

    raw = load_lastfm_hetrec(write_lastfm(tmp_path / "fm"), download=False)
    assert raw.item_features is not None
    assert raw.item_features["tags"].tolist() == [("2008", "tagid:999")]  # artist 51, tags sorted
    report = validate(raw)  # the toy tables are too small for the interactions suite; the artists pass
    assert any(r.table == "item_features" for r in report.results)
    assert [r for r in report.failures if r.table == "item_features"] == []
    ds = build_dataset(raw)
    assert ds.encoded_item_features is None  # two tags seen once each: nothing frequent enough to encode


def test_without_artists_dat_the_played_artists_get_their_tags(tmp_path: Path) -> None:
    folder = write_lastfm(tmp_path / "fm")
    (folder / "artists.dat").unlink()
    raw = load_lastfm_hetrec(folder, download=False)
    assert raw.item_features is not None
    tags = dict(zip(raw.item_features["item"], raw.item_features["tags"], strict=True))
    assert tags == {51: ("2008", "tagid:999"), 52: ("metal",), 2008: ()}
