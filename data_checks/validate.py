"""Run the contract's GX suites on raw tables (or on a split) and turn GX's results into a report.

One ephemeral GX context per call: a pandas data source with one dataframe asset, batch definition, suite
and validation definition per table. With ``docs_dir`` the context also gets a local Data Docs site whose
store lives in that folder, and the report carries the path to its ``index.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_checks.report import SAMPLE_SIZE, ExpectationOutcome, ValidationReport, to_plain
from data_checks.suites import TableSuite, columns_of, split_suite, table_suites

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.data_context import AbstractDataContext

    from data_checks.parts import Split
    from data_checks.tables import RawTables

_SITE = "gnnrec"
# GX keeps this many offending values; the report keeps the first SAMPLE_SIZE distinct ones.
_PARTIAL = 20


def validate(
    raw: RawTables,
    *,
    allow_duplicates: bool = False,
    min_interactions: int = 10,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Check every table of ``raw`` against the data contract (see :mod:`data_checks.suites`).

    Args:
        raw: The tables of one source, as a loader returned them.
        allow_duplicates: Accept repeated (user, item) rows (they will be aggregated by ``build_dataset``).
        min_interactions: The fewest interactions a usable dataset has.
        docs_dir: When given, GX Data Docs HTML is written there and ``docs_path`` points to its index.

    Returns:
        The report; ``success`` is ``False`` when any expectation failed.
    """
    suites = table_suites(raw, allow_duplicates=allow_duplicates, min_interactions=min_interactions)
    return _run(raw.name, suites, docs_dir)


def validate_split(split: Split, *, name: str = "split", docs_dir: Path | None = None) -> ValidationReport:
    """Check that a split's parts are pairwise disjoint, its indices in range and its train part non-empty.

    Args:
        split: The split to check.
        name: The name the report carries (e.g. the dataset's).
        docs_dir: When given, GX Data Docs HTML is written there.

    Returns:
        The report over the single table ``split``.
    """
    return _run(name, [split_suite(split)], docs_dir)


def _context(docs_dir: Path | None) -> AbstractDataContext:
    """An in-memory GX context without progress bars, with a local Data Docs site in ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name=_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _run(name: str, suites: list[TableSuite], docs_dir: Path | None) -> ValidationReport:
    """Validate each table suite in one context and collect the outcomes."""
    import great_expectations as gx

    context = _context(docs_dir)
    source = context.data_sources.add_pandas(name=f"{name}-tables")
    outcomes: list[ExpectationOutcome] = []
    for suite_def in suites:
        batch = source.add_dataframe_asset(name=suite_def.table).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.{suite_def.table}"))
        for expectation in suite_def.expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}.{suite_def.table}", data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": suite_def.frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL},
        )
        outcomes.extend(_outcome(suite_def, r) for r in result.results)
    docs_path = None
    if docs_dir is not None:
        context.build_data_docs(site_names=[_SITE])
        docs_path = Path(docs_dir).resolve() / "index.html"
    return ValidationReport(
        dataset=name,
        success=all(o.success or o.severity == "warning" for o in outcomes),
        results=tuple(outcomes),
        docs_path=docs_path,
    )


def _outcome(suite: TableSuite, result: ExpectationValidationResult) -> ExpectationOutcome:
    """One GX expectation result in the report's terms."""
    config = result.expectation_config
    assert config is not None
    details: dict[str, Any] = dict(result.result or {})
    error = None
    info = result.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "the expectation could not be evaluated").splitlines()[0]
    sample: list[Any] = []
    seen: set[str] = set()
    for value in details.get("partial_unexpected_list") or []:
        key = repr(to_plain(value))
        if key not in seen:
            seen.add(key)
            sample.append(value)
        if len(sample) == SAMPLE_SIZE:
            break
    columns = columns_of(config.kwargs, suite.derived)
    mismatched = (details.get("details") or {}).get("mismatched") or {}
    if mismatched.get("missing"):
        # expect_table_columns_to_match_set: name the missing columns, not the whole required set.
        columns = tuple(str(c) for c in mismatched["missing"])
        sample = [f"missing column {c!r}" for c in columns]
    count = details.get("unexpected_count")
    elements = details.get("element_count")
    return ExpectationOutcome(
        table=suite.table,
        file=suite.file,
        expectation=config.type,
        columns=columns,
        rule=config.description or config.type.replace("_", " "),
        success=bool(result.success) and error is None,
        unexpected_count=None if count is None else int(count),
        element_count=None if elements is None else int(elements),
        unexpected_sample=tuple(to_plain(v) for v in sample),
        observed_value=to_plain(details.get("observed_value")),
        error=error,
        severity=str((config.meta or {}).get("severity", "error")),
    )
