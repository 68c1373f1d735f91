"""Prepare a dataset for training: load -> data contract -> index -> split -> split contract -> graphs.

One chain shared by ``gnnrec data stats``, ``gnnrec train`` and the pipeline flows. :func:`prepare_data` runs
it in one call and returns a :class:`PreparedData`; the Prefect flows call the single steps
(:func:`validate_raw`, :func:`index_raw`, :func:`validate_parts`) through their ``@task`` wrappers in
:mod:`flows.steps`, so that each step keeps its own cache key and retries. A contract failure is a
:class:`DataContractError` that carries the Great Expectations report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from data_checks import ValidationReport
    from tasks.config import DataConfig, SplitConfig
    from tasks.graphs import Graphs
    from tasks.ingest.dataset import Dataset
    from tasks.ingest.tables import RawTables
    from tasks.split import Split

T = TypeVar("T")


class DataContractError(RuntimeError):
    """The data broke its contract; nothing downstream (indexing, training, MLflow) may run on it.

    Attributes:
        report: Every expectation's outcome; ``report.summary()`` is the plain-text table for people.
    """

    def __init__(self, report: ValidationReport, message: str | None = None) -> None:
        """Keep the report and build the message from its summary.

        Args:
            report: The failed validation report.
            message: The first line of the message; the report's summary follows it.
        """
        self.report = report
        head = message or "The data failed its contract; stopped before training."
        super().__init__(f"{head} Summary:\n{report.summary()}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with its report (Prefect may persist a failed task's exception).
        return (_rebuild_contract_error, (self.report, str(self)))


def _rebuild_contract_error(report: ValidationReport, text: str) -> DataContractError:
    err = DataContractError(report)
    err.args = (text,)
    return err


@dataclass(frozen=True)
class PreparedData:
    """Everything the data steps produced, ready for training.

    Attributes:
        raw: The tables as the loader read them.
        report: The data contract's report on ``raw`` (passed).
        dataset: The indexed dataset (after rating/k-core filtering and duplicate aggregation).
        split: The train/valid/test split.
        split_report: The contract's report on the split (passed: parts disjoint, ids in range).
        graphs: The training graphs (built from the train part only).
        timings: Wall seconds per step: ``load``, ``validate``, ``build_dataset``, ``split``,
            ``validate_split``, ``build_graphs``.
    """

    raw: RawTables
    report: ValidationReport
    dataset: Dataset
    split: Split
    split_report: ValidationReport
    graphs: Graphs
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def expectations(self) -> int:
        """How many expectations the data and split contracts evaluated together."""
        return len(self.report.results) + len(self.split_report.results)


def validate_raw(
    raw: RawTables,
    data: DataConfig,
    *,
    allow_duplicates: bool = False,
    min_interactions: int = 10,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Check the raw tables against the data contract (Great Expectations); never raises on a failure.

    Repeated (user, item) rows pass when ``allow_duplicates`` is set or the config asks to aggregate them
    (:func:`index_raw` merges them in both cases).

    Args:
        raw: The loader's tables.
        data: The data config (for ``aggregate_duplicates``).
        allow_duplicates: Let repeated (user, item) rows through.
        min_interactions: The fewest interactions a usable dataset has.
        docs_dir: When given, the GX Data Docs HTML is written there.

    Returns:
        The report; check ``report.success`` (or call :func:`require_passed`).
    """
    from data_checks import validate

    return validate(
        raw,
        allow_duplicates=allow_duplicates or data.aggregate_duplicates,
        min_interactions=min_interactions,
        docs_dir=docs_dir,
    )


def index_raw(raw: RawTables, data: DataConfig, *, allow_duplicates: bool = False) -> Dataset:
    """Index validated tables into a :class:`Dataset` with the config's filters.

    Args:
        raw: Tables that passed :func:`validate_raw`.
        data: ``min_rating``, ``k_core`` and ``aggregate_duplicates``.
        allow_duplicates: Duplicates the contract let through are merged as with ``aggregate_duplicates``.

    Returns:
        The indexed dataset.
    """
    from tasks.ingest.dataset import build_dataset

    return build_dataset(
        raw,
        min_rating=data.min_rating,
        k_core=data.k_core,
        aggregate_duplicates=data.aggregate_duplicates or allow_duplicates,
    )


def validate_parts(split: Split, *, name: str, docs_dir: Path | None = None) -> ValidationReport:
    """Check the split against the contract (parts disjoint, ids in range, train non-empty).

    Args:
        split: The split.
        name: The dataset's name, for the report.
        docs_dir: When given, the GX Data Docs HTML is written there.

    Returns:
        The report; check ``report.success`` (or call :func:`require_passed`).
    """
    from data_checks import validate_split

    return validate_split(split, name=name, docs_dir=docs_dir)


def require_passed(report: ValidationReport) -> ValidationReport:
    """Return ``report`` when the contract held.

    Raises:
        DataContractError: When it failed (the error carries ``report``).
    """
    if not report.success:
        raise DataContractError(report)
    return report


def _timed(timings: dict[str, float], step: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    out = fn()
    timings[step] = round(time.perf_counter() - start, 3)
    return out


def prepare_data(
    data: DataConfig,
    split: SplitConfig,
    *,
    allow_duplicates: bool = False,
    min_interactions: int = 10,
    docs_dir: Path | None = None,
) -> PreparedData:
    """Load, validate, index, split, validate the split and build the graphs.

    Args:
        data: Which source to read and how to filter it.
        split: How to split the interactions.
        allow_duplicates: Let repeated (user, item) rows through the contract (they are merged).
        min_interactions: The contract's minimum number of interactions.
        docs_dir: When given, the GX Data Docs HTML of the raw-table contract is written there.

    Returns:
        The tables, reports, dataset, split, graphs and per-step timings.

    Raises:
        DataContractError: The raw tables or the split broke the contract (nothing after that step ran).
        tasks.ingest.errors.DataFormatError: A file could not be parsed.
        tasks.ingest.errors.DatasetNotAvailableError: The source's files are missing.
    """
    from tasks.graphs import build_graphs
    from tasks.ingest import load_raw
    from tasks.split import split_dataset

    timings: dict[str, float] = {}
    raw = _timed(timings, "load", lambda: load_raw(data))
    report = _timed(
        timings,
        "validate",
        lambda: validate_raw(
            raw, data, allow_duplicates=allow_duplicates, min_interactions=min_interactions, docs_dir=docs_dir
        ),
    )
    require_passed(report)
    dataset = _timed(
        timings, "build_dataset", lambda: index_raw(raw, data, allow_duplicates=allow_duplicates)
    )
    parts = _timed(timings, "split", lambda: split_dataset(dataset, split))
    split_report = _timed(timings, "validate_split", lambda: validate_parts(parts, name=raw.name))
    require_passed(split_report)
    graphs = _timed(timings, "build_graphs", lambda: build_graphs(dataset, parts))
    return PreparedData(
        raw=raw,
        report=report,
        dataset=dataset,
        split=parts,
        split_report=split_report,
        graphs=graphs,
        timings=timings,
    )
