"""``gnnrec data``: check a dataset against the data contract and describe it.

``validate`` loads a source and runs the GX suites (:mod:`data_checks`); ``stats`` goes on to index, split
and build the graphs, and prints the counts and graph statistics. Both exit 0 on success, 1 when the data
breaks the contract, and 2 when the files cannot be read at all (one paragraph, never a traceback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_common import (
    AggregateDuplicatesOption,
    ColdFractionOption,
    DataDirOption,
    DatasetOption,
    FoldInOption,
    JsonOption,
    KCoreOption,
    MinInteractionsOption,
    MinRatingOption,
    NoDownloadOption,
    RatingScaleOption,
    RatiosOption,
    RecboleNameOption,
    SeedOption,
    SplitOption,
    contract_failed,
    data_config,
    error_boundary,
    split_config,
    stderr_console,
)

app = typer.Typer(
    help="Check a dataset against the data contract (Great Expectations) and describe its graphs.",
    no_args_is_help=True,
)

DocsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--docs-dir",
        help="Also write the Great Expectations Data Docs (HTML) into this folder and print its index.html.",
        file_okay=False,
    ),
]


def _print_json(payload: dict[str, Any]) -> None:
    """One JSON object on stdout."""
    from data_checks.report import to_plain

    typer.echo(json.dumps(to_plain(payload), indent=2))


# Command help as whole paragraphs: Typer's rich help keeps the docstring's line breaks.
VALIDATE_HELP = (
    "Load a dataset and check every table against the data contract (Great Expectations).\n\n"
    "Exit 0 when it passes; 1 with a table of the broken rules (table, column, rule, number of bad rows, "
    "sample of bad values), the files and the Data Docs path when it fails; 2 with one paragraph when the "
    "files cannot be read."
)
STATS_HELP = (
    "Load, validate, index, split and build the graphs of a dataset, then print its statistics.\n\n"
    "Prints users, items, interactions, social edges (undirected pairs), KG triples and relations, the "
    "split's part sizes and each graph's statistics (nodes, edges, density, degrees, components). Fails "
    "like 'gnnrec data validate' when the data breaks the contract (exit 1) or cannot be read (exit 2)."
)


@app.command("validate", help=VALIDATE_HELP)
def validate_command(
    dataset: DatasetOption = "synthetic",
    data_dir: DataDirOption = None,
    recbole_name: RecboleNameOption = None,
    rating_scale: RatingScaleOption = None,
    aggregate_duplicates: AggregateDuplicatesOption = False,
    min_interactions: MinInteractionsOption = 10,
    no_download: NoDownloadOption = False,
    seed: SeedOption = 2020,
    docs_dir: DocsDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a dataset and check every table against the data contract.

    Exit 0 when it passes; 1 with a table of the broken rules (table, column, rule, number of bad rows,
    sample of bad values) and the Data Docs path when it fails; 2 with one paragraph when the files
    cannot be read.
    """
    from tasks.ingest import load_raw
    from tasks.prepare import validate_raw

    with error_boundary():
        config = data_config(
            dataset=dataset,
            data_dir=data_dir,
            recbole_name=recbole_name,
            aggregate_duplicates=aggregate_duplicates,
            no_download=no_download,
            seed=seed,
            rating_scale=rating_scale,
        )
        with stderr_console().status(f"Loading and checking {dataset}..."):
            raw = load_raw(config)
            report = validate_raw(raw, config, min_interactions=min_interactions, docs_dir=docs_dir)
    if not report.success:
        contract_failed(report, as_json)
    if as_json:
        _print_json({"contract": report.to_dict()})
    else:
        typer.echo(report.summary())


@app.command("stats", help=STATS_HELP)
def stats_command(
    dataset: DatasetOption = "synthetic",
    data_dir: DataDirOption = None,
    recbole_name: RecboleNameOption = None,
    min_rating: MinRatingOption = None,
    rating_scale: RatingScaleOption = None,
    k_core: KCoreOption = 0,
    aggregate_duplicates: AggregateDuplicatesOption = False,
    min_interactions: MinInteractionsOption = 10,
    no_download: NoDownloadOption = False,
    split: SplitOption = "random",
    ratios: RatiosOption = (0.8, 0.1, 0.1),
    cold_fraction: ColdFractionOption = 0.1,
    fold_in: FoldInOption = 0.5,
    seed: SeedOption = 2020,
    as_json: JsonOption = False,
) -> None:
    """Load, validate, index, split and build the graphs of a dataset, then print its statistics.

    Prints users, items, interactions, social edges (undirected pairs), KG triples and relations, the
    split's part sizes and each graph's statistics (nodes, edges, density, degrees, components). Fails
    like ``validate`` when the data breaks the contract.
    """
    from tasks.prepare import prepare_data

    with error_boundary(as_json=as_json):
        config = data_config(
            dataset=dataset,
            data_dir=data_dir,
            recbole_name=recbole_name,
            min_rating=min_rating,
            k_core=k_core,
            aggregate_duplicates=aggregate_duplicates,
            no_download=no_download,
            seed=seed,
            rating_scale=rating_scale,
        )
        splitting = split_config(
            method=split, ratios=ratios, seed=seed, cold_fraction=cold_fraction, fold_in=fold_in
        )
        with stderr_console().status(f"Loading, checking, splitting {dataset} and building graphs..."):
            prepared = prepare_data(config, splitting, min_interactions=min_interactions)
    payload: dict[str, Any] = {
        **prepared.dataset.summary(),
        "contract": {"success": True, "expectations": prepared.expectations},
        "split": prepared.split.describe(),
        "graphs": prepared.graphs.stats,
        "files": prepared.raw.files,
        "seconds": prepared.timings,
    }
    if as_json:
        _print_json(payload)
    else:
        _print_tables(payload)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Nested dicts as ``a.b.c`` keys (for the readable table)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _fmt(value: Any) -> str:
    """Numbers for people: thousands separators, four significant digits for fractions."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _print_tables(payload: dict[str, Any]) -> None:
    """The stats as rich tables on stdout: dataset counts, split, then one table per graph."""
    from data_checks.report import to_plain

    plain = to_plain(payload)
    console = Console()
    counts = Table(title=f"Dataset {plain['dataset']}")
    counts.add_column("quantity")
    counts.add_column("value", justify="right")
    counts.add_row("fingerprint", str(plain["fingerprint"]))
    for key in (
        "users",
        "items",
        "interactions",
        "social_edges",
        "kg_triples",
        "kg_relations",
        "kg_entities",
    ):
        counts.add_row(key.replace("_", " "), _fmt(plain.get(key)))
    console.print(counts)
    sections = {"split": plain["split"], **{f"graph: {k}": v for k, v in (plain["graphs"] or {}).items()}}
    for title, section in sections.items():
        if not section:
            continue
        flat: dict[str, Any] = {}
        _flatten("", section, flat)
        table = Table(title=title)
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for key, value in flat.items():
            table.add_row(key, str(value) if key == "seed" else _fmt(value))
        console.print(table)
    console.print(
        "Contract passed ({} expectations). Seconds: {}.".format(
            plain["contract"]["expectations"], ", ".join(f"{k} {v}" for k, v in plain["seconds"].items())
        ),
        markup=False,
    )
