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


def find_recbole_name(folder: Path, name: str | None) -> str:
    """The atomic files' stem: ``name`` if given, else that of the folder's only ``*.inter`` file."""
    if not folder.is_dir():
        raise DatasetNotAvailableError(
            f"RecBole folder not found: {folder} is not a folder. Point --data-dir at the folder that holds "
            f"<name>.inter and its companion files."
        )
    if name is not None:
        return name
    inters = sorted(p.stem for p in folder.glob("*.inter"))
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


def load_recbole(data_dir: Path, name: str | None = None) -> RawTables:
    """Load the RecBole atomic files ``<name>.*`` in ``data_dir``.

    Args:
        data_dir: The folder with the atomic files.
        name: The files' stem; ``None`` picks the folder's only ``*.inter``.

    Returns:
        Interactions and whichever of KG, item links, social edges and features are present.

    Raises:
        DatasetNotAvailableError: The folder or ``<name>.inter`` does not exist.
        DataFormatError: A file cannot be parsed, or several datasets are present and none is named.
    """
    folder = Path(data_dir).expanduser()
    stem = find_recbole_name(folder, name)
    inter_path = folder / f"{stem}.inter"
    if not inter_path.is_file():
        raise DatasetNotAvailableError(
            f"RecBole interaction file not found: {inter_path}. Check --data-dir and the recbole name "
            f"(the files must be called <name>.inter, <name>.kg, ...)."
        )
    inter, _ = read_atomic(inter_path, "RecBole interactions", ("user_id", "item_id"))
    columns = {
        "user": to_ids(inter["user_id"], path=inter_path, what="user id"),
        "item": to_ids(inter["item_id"], path=inter_path, what="item id"),
    }
    if "rating" in inter.columns:
        columns["rating"] = to_numbers(inter["rating"], path=inter_path, what="rating")
    if "timestamp" in inter.columns:
        columns["timestamp"] = to_numbers(
            inter["timestamp"], path=inter_path, what="timestamp", integral=True
        )
    interactions = pd.DataFrame(columns).reset_index(drop=True)
    files = {"interactions": str(inter_path)}

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
