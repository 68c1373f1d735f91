"""The data contract: one Great Expectations suite per table of :class:`~tasks.ingest.tables.RawTables`.

Each ``*_suite`` function returns a :class:`TableSuite`: the frame GX validates (the table, plus derived
columns where a rule needs a view of a column that GX cannot take natively) and the GX expectations. Nothing
here runs GX; :mod:`data_checks.validate` does.

The rules, table by table (``U`` is the set of interaction users, ``I`` the set of interaction items):

* ``interactions``: ``user`` and ``item`` exist, are not null and are whole numbers (a regex on their text,
  which GX takes with ``astype(str)`` after dropping missing values, so ``3``, ``3.0`` and ``"3"`` pass,
  ``"u3"`` and ``3.5`` fail); ``rating`` (when present) is not null and lies in ``rating_scale`` when the
  source (or the user, ``--rating-scale``) declares one, else is strictly positive and finite (listen
  counts, weights); ``timestamp`` (when present) is not null and lies between 1970-01-01 and now + 1 day
  (unix seconds); ``(user, item)`` pairs are unique unless duplicates are to be aggregated; at least
  ``min_interactions`` rows; ``split`` (when present) is
  one of ``train``/``valid``/``test``.
* ``social``: ``user`` and ``friend`` exist, are not null, are whole numbers; no row links a user to herself
  (an error); both ends are in ``U`` (a *warning*: edges to users without interactions are dropped when the
  dataset is built) (``expect_select_column_values_to_be_unique_within_record`` over the pair).
* ``kg``: ``head``, ``relation`` and ``tail`` exist and are not null; the KG is anchored to the items: at
  least one triple's head is an *item entity*. Item entities are the ``entity`` values of ``item_links``
  rows whose item is in ``I`` when ``item_links`` is given, and otherwise ``str(i)`` for every ``i`` in ``I``
  (the convention of :mod:`tasks.ingest.tables`). Heads that are not item entities are legitimate (e.g. a
  producer in ``producer -> film``), so the rule is "at least one", written as
  ``expect_column_values_to_be_null(head__not_an_item, mostly=1/len(kg))`` over the derived column that
  keeps the heads that are not item entities (a sample of them is reported when the rule fails).
* ``item_links``: ``item`` and ``entity`` exist and are not null; every linked item is in ``I`` (so every
  item-linked head resolves to a known item); every linked entity appears in the KG as a head or a tail
  (the ``item_links`` entities are present); an entity links at most one item (``entity`` unique).
* ``user_features`` / ``item_features``: the id column exists, is not null and is unique.
* ``split`` (:func:`split_suite`): user and item indices are in range, no (user, item) pair is in two parts
  (the parts are pairwise disjoint), and the train part is not empty.

Membership in a set drawn from the data (users, items, KG entities) is checked with
``expect_column_values_to_be_null`` on a derived column that keeps only the values outside the set (see
:func:`not_in` for why not ``expect_column_values_to_be_in_set``); reports map derived columns back to the
table's own column names.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from data_checks.parts import ALL_PARTS

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

    from data_checks.parts import Split
    from data_checks.tables import RawTables

# A whole number written as text: "3", "-3", "3.0" (pandas reads ids with a missing value as floats).
INTEGRAL_PATTERN = r"^[+-]?\d+(?:\.0*)?$"
SPLIT_PARTS = ("train", "valid", "test")
_DAY = 86_400


@dataclass(frozen=True, eq=False)
class TableSuite:
    """What to validate for one table.

    Attributes:
        table: The table's name in :class:`RawTables` (``interactions``, ``social``, ...).
        frame: The frame GX validates: the table plus derived columns.
        expectations: The GX expectations, in report order.
        derived: Derived column -> the table column it was made from, so reports speak the table's names.
        file: The file the table was read from, when known.
    """

    table: str
    frame: pd.DataFrame
    expectations: tuple[Expectation, ...]
    derived: Mapping[str, str] = field(default_factory=dict)
    file: str | None = None


def has_columns(columns: tuple[str, ...]) -> Expectation:
    """The table has (at least) ``columns``; a failure lists the missing ones.

    Args:
        columns: The required column names.

    Returns:
        ``expect_table_columns_to_match_set`` with ``exact_match=False``.
    """
    import great_expectations.expectations as gxe

    return gxe.ExpectTableColumnsToMatchSet(
        column_set=list(columns),
        exact_match=False,
        description=f"the table has the column(s) {', '.join(columns)}",
    )


def id_values(values: pd.Series) -> list[Any]:
    """The distinct non-null ids of a column as plain Python values, whole floats turned into ints.

    Args:
        values: An id column as read.

    Returns:
        A sorted list of ``int``, ``float`` or ``str``.
    """
    uniq = pd.unique(values.dropna())
    if uniq.dtype.kind == "f":
        whole = np.isfinite(uniq) & (np.floor(uniq) == uniq)
        return sorted([int(v) for v in uniq[whole]] + [float(v) for v in uniq[~whole]])
    if uniq.dtype.kind in "iub":
        return sorted(int(v) for v in uniq)
    return sorted((str(v) for v in uniq), key=str)


def not_in(values: pd.Series, allowed: Collection[Any]) -> pd.Series:
    """The values of ``values`` that are not in ``allowed``, and missing elsewhere.

    Membership in a set drawn from the data (users, items, KG entities) is checked as
    ``expect_column_values_to_be_null`` on this derived column rather than as
    ``expect_column_values_to_be_in_set``: GX re-serialises an expectation's kwargs many times per run, so a
    ``value_set`` of tens of thousands of ids costs seconds (measured: 5 s for the 34,628 entities of the
    MovieLens KG), while this costs one ``isin``. The offending values, their count and the GX report are
    the same; values already missing stay missing (the not-null rule counts them).

    Args:
        values: A column.
        allowed: The allowed values.

    Returns:
        ``values`` with every allowed value replaced by a missing value.
    """
    allowed_list = list(allowed)
    # object dtype keeps integer ids integers (a float column would report 99999 as 99999.0).
    return values.astype(object).where(~values.isin(allowed_list))


def interactions_suite(
    raw: RawTables,
    *,
    allow_duplicates: bool = False,
    min_interactions: int = 10,
    now: float | None = None,
) -> TableSuite:
    """The contract of the ``interactions`` table.

    Args:
        raw: The tables of one source.
        allow_duplicates: Skip the unique-(user, item) rule (the duplicates will be aggregated later).
        min_interactions: The fewest rows a usable dataset has.
        now: Unix seconds taken as "now" for the timestamp bound (default: the current time).

    Returns:
        The suite; see the module docstring for the rules.
    """
    import great_expectations.expectations as gxe

    inter = raw.interactions
    frame = inter.copy(deep=False)
    derived: dict[str, str] = {}
    exps: list[Expectation] = []
    exps.append(has_columns(("user", "item")))
    for col in ("user", "item"):
        if col not in inter.columns:
            continue
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col, description=f"every row has a {col} id"))
        exps.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column=col, regex=INTEGRAL_PATTERN, description=f"{col} ids are whole numbers"
            )
        )
    if "rating" in inter.columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="rating", description="every row has a rating"))
        if raw.rating_scale is not None:
            low, high = raw.rating_scale
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column="rating",
                    min_value=float(low),
                    max_value=float(high),
                    description=f"ratings lie in the declared scale [{low:g}, {high:g}]",
                )
            )
        else:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column="rating",
                    min_value=0.0,
                    strict_min=True,
                    max_value=sys.float_info.max,
                    description="weights are positive and finite (no rating scale is declared)",
                )
            )
    if "timestamp" in inter.columns:
        upper = int(time.time() if now is None else now) + _DAY
        exps.append(
            gxe.ExpectColumnValuesToNotBeNull(column="timestamp", description="every row has a timestamp")
        )
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="timestamp",
                min_value=0,
                max_value=upper,
                description="timestamps are unix seconds between 1970 and tomorrow",
            )
        )
    if not allow_duplicates and {"user", "item"} <= set(inter.columns):
        exps.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["user", "item"],
                description="no (user, item) pair appears twice",
            )
        )
    exps.append(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=min_interactions, description=f"at least {min_interactions} interactions"
        )
    )
    if "split" in inter.columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="split", description="every row names its part"))
        exps.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="split", value_set=list(SPLIT_PARTS), description="split is train, valid or test"
            )
        )
    return TableSuite("interactions", frame, tuple(exps), derived, raw.files.get("interactions"))


def social_suite(raw: RawTables) -> TableSuite:
    """The contract of the ``social`` table (requires ``raw.social``).

    Args:
        raw: The tables of one source.

    Returns:
        The suite; see the module docstring for the rules.
    """
    import great_expectations.expectations as gxe

    assert raw.social is not None
    social = raw.social
    frame = social.copy(deep=False)
    derived: dict[str, str] = {}
    users = id_values(raw.interactions["user"]) if "user" in raw.interactions.columns else []
    exps: list[Expectation] = [has_columns(("user", "friend"))]
    for col in ("user", "friend"):
        if col not in social.columns:
            continue
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col, description=f"every edge has a {col}"))
        exps.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column=col, regex=INTEGRAL_PATTERN, description=f"{col} ids are whole numbers"
            )
        )
        unknown = f"{col}__unknown_user"
        frame[unknown] = not_in(social[col], users)
        derived[unknown] = col
        # A warning, not an error: real social files (e.g. LightGCN-PyTorch's Last.fm trust network) name
        # users who have no interactions; build_dataset drops those edges, so they cannot corrupt a graph.
        exps.append(
            gxe.ExpectColumnValuesToBeNull(
                column=unknown,
                description=f"every {col} is a user of the interactions table (else the edge is dropped)",
                meta={"severity": "warning"},
            )
        )
    if {"user", "friend"} <= set(social.columns):
        exps.append(
            gxe.ExpectSelectColumnValuesToBeUniqueWithinRecord(
                column_list=["user", "friend"], description="no user is her own friend (no self-loops)"
            )
        )
    return TableSuite("social", frame, tuple(exps), derived, raw.files.get("social"))


def item_entities(raw: RawTables) -> list[str]:
    """The KG entities that *are* interaction items, as text (see the module docstring).

    Args:
        raw: The tables of one source.

    Returns:
        Sorted entity ids: linked entities of known items when ``item_links`` is given, else ``str(item)``.
    """
    if "item" not in raw.interactions.columns:
        return []
    items = id_values(raw.interactions["item"])
    if raw.item_links is None:
        return sorted(str(i) for i in items)
    links = raw.item_links
    if not {"item", "entity"} <= set(links.columns):
        return []
    known = links["item"].isin(items)
    return sorted(set(links.loc[known, "entity"].dropna().astype(str)))


def kg_suite(raw: RawTables) -> TableSuite:
    """The contract of the ``kg`` table (requires ``raw.kg``).

    Args:
        raw: The tables of one source.

    Returns:
        The suite; see the module docstring for the rules.
    """
    import great_expectations.expectations as gxe

    assert raw.kg is not None
    kg = raw.kg
    frame = kg.copy(deep=False)
    exps: list[Expectation] = [has_columns(("head", "relation", "tail"))]
    for col in ("head", "relation", "tail"):
        if col in kg.columns:
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(column=col, description=f"every triple has a {col}")
            )
    derived: dict[str, str] = {}
    if "head" in kg.columns and len(kg):
        frame["head__not_an_item"] = not_in(kg["head"].astype("string"), item_entities(raw))
        derived["head__not_an_item"] = "head"
        how = "an item_links entity of a known item" if raw.item_links is not None else "a known item id"
        exps.append(
            gxe.ExpectColumnValuesToBeNull(
                column="head__not_an_item",
                mostly=min(1.0, 1.0 / len(kg)),
                description=f"the KG is anchored: at least one triple's head is an item ({how})",
            )
        )
    return TableSuite("kg", frame, tuple(exps), derived, raw.files.get("kg"))


def item_links_suite(raw: RawTables) -> TableSuite:
    """The contract of the ``item_links`` table (requires ``raw.item_links``).

    Args:
        raw: The tables of one source.

    Returns:
        The suite; see the module docstring for the rules.
    """
    import great_expectations.expectations as gxe

    assert raw.item_links is not None
    links = raw.item_links
    frame = links.copy(deep=False)
    derived: dict[str, str] = {}
    exps: list[Expectation] = [has_columns(("item", "entity"))]
    if "item" in links.columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="item", description="every link has an item"))
        items = id_values(raw.interactions["item"]) if "item" in raw.interactions.columns else []
        frame["item__unknown_item"] = not_in(links["item"], items)
        derived["item__unknown_item"] = "item"
        exps.append(
            gxe.ExpectColumnValuesToBeNull(
                column="item__unknown_item", description="every linked item is an item of the interactions"
            )
        )
    if "entity" in links.columns:
        exps.append(
            gxe.ExpectColumnValuesToNotBeNull(column="entity", description="every link has an entity")
        )
        frame["entity__as_text"] = links["entity"].astype("string")
        derived["entity__as_text"] = "entity"
        exps.append(
            gxe.ExpectColumnValuesToBeUnique(
                column="entity__as_text", description="an entity links at most one item"
            )
        )
        if raw.kg is not None:
            kg_entities: set[str] = set()
            for col in ("head", "tail"):
                if col in raw.kg.columns:
                    kg_entities.update(raw.kg[col].dropna().astype(str))
            frame["entity__missing_from_kg"] = not_in(frame["entity__as_text"], kg_entities)
            derived["entity__missing_from_kg"] = "entity"
            exps.append(
                gxe.ExpectColumnValuesToBeNull(
                    column="entity__missing_from_kg",
                    description="every linked entity appears in the KG (as a head or a tail)",
                )
            )
    return TableSuite("item_links", frame, tuple(exps), derived, raw.files.get("item_links"))


def features_suite(raw: RawTables, table: str) -> TableSuite:
    """The contract of ``user_features`` or ``item_features``: one row per id.

    Args:
        raw: The tables of one source.
        table: ``user_features`` or ``item_features`` (must be present).

    Returns:
        The suite.
    """
    import great_expectations.expectations as gxe

    frame = getattr(raw, table)
    assert frame is not None
    col = "user" if table == "user_features" else "item"
    exps: list[Expectation] = [has_columns((col,))]
    if col in frame.columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col, description=f"every row has a {col} id"))
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=col, description=f"one row per {col}"))
    return TableSuite(table, frame, tuple(exps), {}, raw.files.get(table))


def table_suites(
    raw: RawTables, *, allow_duplicates: bool = False, min_interactions: int = 10, now: float | None = None
) -> list[TableSuite]:
    """Every suite that applies to ``raw``, in :meth:`RawTables.tables` order.

    Args:
        raw: The tables of one source.
        allow_duplicates: See :func:`interactions_suite`.
        min_interactions: See :func:`interactions_suite`.
        now: See :func:`interactions_suite`.

    Returns:
        One suite per present table.
    """
    builders = {
        "interactions": lambda: interactions_suite(
            raw, allow_duplicates=allow_duplicates, min_interactions=min_interactions, now=now
        ),
        "social": lambda: social_suite(raw),
        "kg": lambda: kg_suite(raw),
        "item_links": lambda: item_links_suite(raw),
        "user_features": lambda: features_suite(raw, "user_features"),
        "item_features": lambda: features_suite(raw, "item_features"),
    }
    return [builders[name]() for name in raw.tables() if name in builders]


def split_frame(split: Split) -> pd.DataFrame:
    """All (user, item, part) rows of a split, each pair once per part.

    Args:
        split: The split to check.

    Returns:
        Columns ``user``, ``item`` (int64) and ``part`` (``train``/``valid``/``test``/``history``; the
        revealed history of new users in a cold-users split is a part of its own, so it is checked disjoint
        from the others, train included).
    """
    parts: list[pd.DataFrame] = []
    for part in ALL_PARTS:
        pairs = np.asarray(getattr(split, part), dtype=np.int64).reshape(-1, 2)
        frame = pd.DataFrame({"user": pairs[:, 0], "item": pairs[:, 1]})
        frame["part"] = part
        # Repeats inside one part are not a leak; only a pair in two parts is.
        parts.append(frame.drop_duplicates(["user", "item"]))
    return pd.concat(parts, ignore_index=True)


def split_suite(split: Split) -> TableSuite:
    """The contract of a split: indices in range, parts pairwise disjoint, train not empty.

    Args:
        split: The split to check.

    Returns:
        The suite over :func:`split_frame`.
    """
    import great_expectations.expectations as gxe

    exps: list[Expectation] = [
        gxe.ExpectColumnValuesToBeBetween(
            column="user",
            min_value=0,
            max_value=max(split.num_users - 1, 0),
            description="user indices in range",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="item",
            min_value=0,
            max_value=max(split.num_items - 1, 0),
            description="item indices in range",
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["user", "item"],
            description="train, valid, test and history are pairwise disjoint (no pair in two parts)",
        ),
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="part", value_set=["train"], description="the train part is not empty"
        ),
    ]
    return TableSuite("split", split_frame(split), tuple(exps))


def columns_of(kwargs: Mapping[str, Any], derived: Mapping[str, str]) -> tuple[str, ...]:
    """The table columns an expectation reads, from its kwargs, with derived columns mapped back.

    Args:
        kwargs: The expectation's configuration kwargs.
        derived: Derived column -> source column.

    Returns:
        Column names in the table's own vocabulary.
    """
    cols: Iterable[str]
    if "column" in kwargs:
        cols = [kwargs["column"]]
    elif "column_list" in kwargs:
        cols = list(kwargs["column_list"])
    elif "column_set" in kwargs:
        cols = list(kwargs["column_set"])
    elif "column_A" in kwargs:
        cols = [kwargs["column_A"], kwargs["column_B"]]
    else:
        cols = []
    return tuple(derived.get(c, c) for c in cols)
