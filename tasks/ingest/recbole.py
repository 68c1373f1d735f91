"""RecBole atomic files (https://recbole.io/docs/user_guide/data/atomic_files.html).

A dataset ``<name>`` is a folder of tab-separated files whose header names each field with its type,
``field:type`` (``token``, ``float``, ``token_seq``, ``float_seq``):

* ``<name>.inter`` (required): ``user_id``, ``item_id``, optional ``rating``, ``timestamp`` ->
  ``interactions``; other fields (e.g. ``label``) are ignored.
* ``<name>.kg``: ``head_id``, ``relation_id``, ``tail_id`` -> ``kg`` (entities and relations as strings).
* ``<name>.link``: ``item_id``, ``entity_id`` -> ``item_links`` (which KG entity each item is).
* ``<name>.net``: social edges, ``source_id``/``target_id`` or else the first two fields -> ``social``.
* ``<name>.user`` / ``<name>.item``: features keyed by ``user_id`` / ``item_id`` -> ``user_features`` /
  ``item_features`` (``float`` fields numeric, the others strings).

``<name>`` is ``DataConfig.recbole_name``, or the stem of the folder's only ``*.inter`` file. User and item
tokens must be integers (RecBole allows any string; map such ids to integers first).

A pre-split dataset in RecBole's ``benchmark_filename`` layout, ``<name>.train.inter``,
``<name>.valid.inter`` (optional) and ``<name>.test.inter``, is read as the union of its parts with each
interaction's ``split`` kept: ``SplitConfig(method="fixed")`` then trains, validates and tests on exactly
those parts (e.g. a split that RecBole itself made), and the other methods re-split the union. When the parts
are present they are used and a ``<name>.inter`` beside them is ignored.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError
from tasks.ingest.readers import (
    delimiter_hint,
    detect_encoding,
    first_line,
    read_delimited,
    to_ids,
    to_numbers,
)
from tasks.ingest.tables import RawTables

NAME = "recbole"
BENCHMARK_PARTS = ("train", "valid", "test")
"""RecBole's ``benchmark_filename`` suffixes, read as the fixed split's parts."""


def _stem(path: Path) -> str:
    """``lastfm`` for ``lastfm.inter`` and for the benchmark parts ``lastfm.train.inter``, ...."""
    stem = path.stem
    base, dot, part = stem.rpartition(".")
    return base if dot and part in BENCHMARK_PARTS else stem


def find_recbole_name(folder: Path, name: str | None) -> str:
    """The atomic files' stem: ``name`` if given, else that of the folder's only ``*.inter`` file."""
    if not folder.is_dir():
        raise DatasetNotAvailableError(
            f"RecBole folder not found: {folder} is not a folder. Point --data-dir at the folder that holds "
            f"<name>.inter and its companion files."
        )
    if name is not None:
        return name
    inters = sorted({_stem(p) for p in folder.glob("*.inter")})
    if not inters:
        raise DatasetNotAvailableError(
            f"No RecBole interaction file (*.inter) in {folder}. Point --data-dir at the folder that holds "
            f"<name>.inter."
        )
    if len(inters) > 1:
        raise DataFormatError(
            f"{folder} holds several RecBole datasets ({', '.join(inters)}); say which one with "
            f"recbole_name (e.g. --recbole-name {inters[0]}).",
            path=str(folder),
        )
    return inters[0]


def read_atomic(path: Path, what: str, required: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read one atomic file; return the frame with bare field names and the field -> type map."""
    header = first_line(path, detect_encoding(path)).lstrip("\ufeff").split("\t")
    types: dict[str, str] = {}
    renames: dict[str, str] = {}
    for field in header:
        bare, _, kind = field.strip().partition(":")
        types[bare] = kind or "token"
        renames[field.strip()] = bare
    text = [field.strip() for field in header if types[renames[field.strip()]] != "float"]
    frame = read_delimited(
        path,
        sep="\t",
        what=what,
        header=True,
        text_columns=text,
    )
    frame = frame.rename(columns=renames)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = delimiter_hint(path, "\t")
        raise DataFormatError(
            f"{path} ({what}) has no field {', '.join(repr(m) for m in missing)}; its header has "
            f"{header}.{hint} RecBole headers name each tab-separated field as name:type, e.g. "
            f"'user_id:token\\titem_id:token\\trating:float'.",
            path=str(path),
            line=1,
        )
    return frame, types


def _features(
    frame: pd.DataFrame, types: dict[str, str], id_field: str, id_name: str, path: Path
) -> pd.DataFrame:
    out = {id_name: to_ids(frame[id_field], path=path, what=f"{id_name} id")}
    for column in frame.columns:
        if column == id_field:
            continue
        if types.get(column) == "float":
            out[column] = to_numbers(frame[column], path=path, what=column)
        else:
            out[column] = frame[column]
    return pd.DataFrame(out).reset_index(drop=True)


def _interactions(path: Path) -> pd.DataFrame:
    """``user``, ``item`` and, when the file has them, ``rating`` and ``timestamp`` of one ``.inter`` file."""
    inter, _ = read_atomic(path, "RecBole interactions", ("user_id", "item_id"))
    columns = {
        "user": to_ids(inter["user_id"], path=path, what="user id"),
        "item": to_ids(inter["item_id"], path=path, what="item id"),
    }
    if "rating" in inter.columns:
        columns["rating"] = to_numbers(inter["rating"], path=path, what="rating")
    if "timestamp" in inter.columns:
        columns["timestamp"] = to_numbers(inter["timestamp"], path=path, what="timestamp", integral=True)
    return pd.DataFrame(columns).reset_index(drop=True)


def load_recbole(data_dir: Path, name: str | None = None) -> RawTables:
    """Load the RecBole atomic files ``<name>.*`` in ``data_dir``.

    Args:
        data_dir: The folder with the atomic files.
        name: The files' stem; ``None`` picks the folder's only ``*.inter``.

    Returns:
        Interactions (with ``split`` for a benchmark split) and whichever of KG, item links, social edges and
        features are present.

    Raises:
        DatasetNotAvailableError: The folder does not exist, or neither ``<name>.inter`` nor a complete
            benchmark split (``<name>.train.inter`` and ``<name>.test.inter``) does.
        DataFormatError: A file cannot be parsed, or several datasets are present and none is named.
    """
    folder = Path(data_dir).expanduser()
    stem = find_recbole_name(folder, name)
    files: dict[str, str] = {}
    parts = {part: folder / f"{stem}.{part}.inter" for part in BENCHMARK_PARTS}
    present = {part: path for part, path in parts.items() if path.is_file()}
    if present:
        missing = [str(parts[part]) for part in ("train", "test") if part not in present]
        if missing:
            raise DatasetNotAvailableError(
                f"RecBole benchmark split incomplete: {', '.join(missing)} not found beside "
                f"{', '.join(str(p) for p in present.values())}. A pre-split dataset needs "
                f"<name>.train.inter and <name>.test.inter (<name>.valid.inter is optional)."
            )
        frames = []
        for part, path in present.items():
            frames.append(_interactions(path).assign(split=part))
            files[f"interactions_{part}"] = str(path)
        interactions = pd.concat(frames, ignore_index=True)
        interactions["split"] = interactions["split"].astype("str")
    else:
        inter_path = folder / f"{stem}.inter"
        if not inter_path.is_file():
            raise DatasetNotAvailableError(
                f"RecBole interaction file not found: {inter_path}. Check --data-dir and the recbole name "
                f"(the files must be called <name>.inter, <name>.kg, ..., or <name>.train.inter and "
                f"<name>.test.inter for a pre-split dataset)."
            )
        interactions = _interactions(inter_path)
        files["interactions"] = str(inter_path)

    kg = None
    kg_path = folder / f"{stem}.kg"
    if kg_path.is_file():
        triples, _ = read_atomic(kg_path, "RecBole knowledge graph", ("head_id", "relation_id", "tail_id"))
        kg = pd.DataFrame(
            {"head": triples["head_id"], "relation": triples["relation_id"], "tail": triples["tail_id"]}
        ).reset_index(drop=True)
        files["kg"] = str(kg_path)

    item_links = None
    link_path = folder / f"{stem}.link"
    if link_path.is_file():
        links, _ = read_atomic(link_path, "RecBole item-entity links", ("item_id", "entity_id"))
        item_links = pd.DataFrame(
            {"item": to_ids(links["item_id"], path=link_path, what="item id"), "entity": links["entity_id"]}
        ).reset_index(drop=True)
        files["item_links"] = str(link_path)

    social = None
    net_path = folder / f"{stem}.net"
    if net_path.is_file():
        net, _ = read_atomic(net_path, "RecBole social network")
        if {"source_id", "target_id"} <= set(net.columns):
            source, target = "source_id", "target_id"
        elif net.shape[1] >= 2:
            source, target = str(net.columns[0]), str(net.columns[1])
        else:
            raise DataFormatError(
                f"{net_path} (RecBole social network) has {net.shape[1]} field(s); it needs two "
                f"(source_id:token\\ttarget_id:token).",
                path=str(net_path),
                line=1,
            )
        social = pd.DataFrame(
            {
                "user": to_ids(net[source], path=net_path, what="user id"),
                "friend": to_ids(net[target], path=net_path, what="user id"),
            }
        ).reset_index(drop=True)
        files["social"] = str(net_path)

    user_features = None
    user_path = folder / f"{stem}.user"
    if user_path.is_file():
        users, types = read_atomic(user_path, "RecBole user features", ("user_id",))
        user_features = _features(users, types, "user_id", "user", user_path)
        files["user_features"] = str(user_path)

    item_features = None
    item_path = folder / f"{stem}.item"
    if item_path.is_file():
        items, types = read_atomic(item_path, "RecBole item features", ("item_id",))
        item_features = _features(items, types, "item_id", "item", item_path)
        files["item_features"] = str(item_path)

    return RawTables(
        name=f"{NAME}-{stem}",
        interactions=interactions,
        social=social,
        kg=kg,
        item_links=item_links,
        user_features=user_features,
        item_features=item_features,
        files=files,
    )
