"""The outcome of a contract check, in a form for people (``summary``) and for artifacts (``to_dict``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# At most this many offending values are kept per expectation: enough to find the rows, small in a log.
SAMPLE_SIZE = 5


def to_plain(value: Any) -> Any:
    """Turn numpy/pandas scalars and containers into JSON-friendly Python values (NaN becomes ``None``).

    Args:
        value: Anything GX may put in a result (numpy scalars, dicts of row values, lists).

    Returns:
        The same value built from ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``.
    """
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:  # pandas' NA and NaT
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation on one table.

    Attributes:
        table: The table checked (``interactions``, ``social``, ``kg``, ``item_links``, ``split``, ...).
        file: The file the table was read from (``RawTables.files``), or ``None`` for in-memory tables.
        expectation: The GX expectation type, e.g. ``expect_column_values_to_not_be_null``.
        columns: The column(s) it looks at, in the table's own names (empty for table-level checks).
        rule: The rule in plain words, e.g. ``"user ids are whole numbers"``.
        success: Whether the table met it.
        unexpected_count: Rows that broke it (``None`` for aggregate expectations such as the row count).
        element_count: Rows looked at (``None`` when GX does not report it).
        unexpected_sample: Up to five offending values (a dict per row for multi-column expectations).
        observed_value: The aggregate GX measured (row count, sum, ...), or ``None``.
        error: GX's error message when the expectation could not be evaluated (e.g. a missing column).
        severity: ``"error"`` (a failure fails the contract) or ``"warning"`` (reported, does not fail it);
            set by an expectation's ``meta={"severity": ...}``.
    """

    table: str
    file: str | None
    expectation: str
    columns: tuple[str, ...]
    rule: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    unexpected_sample: tuple[Any, ...] = ()
    observed_value: Any = None
    error: str | None = None
    severity: str = "error"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field."""
        return {
            "table": self.table,
            "file": self.file,
            "expectation": self.expectation,
            "columns": list(self.columns),
            "rule": self.rule,
            "success": self.success,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "unexpected_sample": to_plain(list(self.unexpected_sample)),
            "observed_value": to_plain(self.observed_value),
            "error": self.error,
            "severity": self.severity,
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every expectation's outcome for one dataset (or one split), and where the Data Docs were written.

    Attributes:
        dataset: The dataset's name.
        success: ``True`` when every error-severity expectation passed (warnings do not fail a contract).
        results: One outcome per expectation, in suite order (tables in ``RawTables.tables()`` order).
        docs_path: The Data Docs ``index.html`` when ``docs_dir`` was given, else ``None``.
    """

    dataset: str
    success: bool
    results: tuple[ExpectationOutcome, ...]
    docs_path: Path | None = None

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        """The error-severity outcomes that failed."""
        return tuple(r for r in self.results if not r.success and r.severity != "warning")

    @property
    def warnings(self) -> tuple[ExpectationOutcome, ...]:
        """The warning-severity outcomes that failed (reported, but the contract holds)."""
        return tuple(r for r in self.results if not r.success and r.severity == "warning")

    def summary(self) -> str:
        """A plain-text report for people: a verdict line, then one table row per failed expectation.

        Each row names the table, the column(s), the rule and GX expectation, the number of bad rows and a
        sample of bad values; the files the tables came from and the Data Docs path follow.
        """
        total, failed = len(self.results), len(self.failures)
        if self.success:
            head = f"Data contract for '{self.dataset}': PASSED ({total} expectations"
            head += f", {len(self.warnings)} warnings)." if self.warnings else ")."
        else:
            head = f"Data contract for '{self.dataset}': FAILED ({failed} of {total} expectations failed)."
        lines = [head]
        for title, outcomes in (("", self.failures), ("Warnings (the contract still holds):", self.warnings)):
            if not outcomes:
                continue
            rows = [("table", "column(s)", "rule [expectation]", "bad rows", "sample of bad values")]
            for r in outcomes:
                bad = "-" if r.unexpected_count is None else str(r.unexpected_count)
                if r.error:
                    sample = f"error: {r.error}"
                elif r.unexpected_sample:
                    sample = ", ".join(_short(v) for v in to_plain(list(r.unexpected_sample)))
                else:
                    sample = f"observed: {_short(to_plain(r.observed_value))}"
                rows.append(
                    (r.table, ", ".join(r.columns) or "-", f"{r.rule} [{r.expectation}]", bad, sample)
                )
            widths = [max(len(row[i]) for row in rows) for i in range(4)]
            lines.append("")
            if title:
                lines.append(title)
            for row in rows:
                cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
                lines.append("  ".join(cells).rstrip())
            files = {r.table: r.file for r in outcomes if r.file}
            if files:
                lines.append("")
                lines.extend(f"{table} read from {path}" for table, path in files.items())
        if self.docs_path is not None:
            lines.append(f"Data Docs: {self.docs_path}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for ``--json`` and for pipeline artifacts)."""
        return {
            "dataset": self.dataset,
            "success": self.success,
            "evaluated": len(self.results),
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            "docs_path": None if self.docs_path is None else str(self.docs_path),
            "results": [r.to_dict() for r in self.results],
        }


def _short(value: Any, limit: int = 60) -> str:
    """One value as text, cut to ``limit`` characters."""
    text = "null" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
