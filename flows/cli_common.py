"""Pieces every ``gnnrec`` command shares: data-selection options, config builders and an error boundary.

A command that reads data declares the options it needs with the ``Annotated`` aliases below, builds its
configs with :func:`data_config` / :func:`split_config`, and runs its body inside :func:`error_boundary`::

    @app.command()
    def train(
        dataset: DatasetOption = "synthetic",
        data_dir: DataDirOption = None,
        split: SplitOption = "random",
        seed: SeedOption = 2020,
    ) -> None:
        \"\"\"Train one model.\"\"\"
        with error_boundary():
            config = data_config(dataset=dataset, data_dir=data_dir)
            ...

The option names, help texts and defaults are the same in every command, so ``gnnrec data stats``,
``gnnrec train``, ``gnnrec run`` and ``gnnrec retrain`` read the same data from the same flags, and exit with
the same codes: 0 ok, 1 the data broke its contract, 2 unusable input. Nothing here imports torch, GX,
Prefect or MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from tasks.config import DataConfig, DatasetName, SplitConfig, SplitMethod
from tasks.ingest.errors import DataFormatError, DatasetNotAvailableError, SplitError

if TYPE_CHECKING:
    from data_checks import ValidationReport

# Exit codes shared by every command: 0 success, 1 the data broke the contract (or a check failed),
# 2 the input could not be used at all (unreadable files, missing dataset, invalid options).
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2

DatasetOption = Annotated[
    DatasetName,
    typer.Option(
        "--dataset",
        "-d",
        help=(
            "Which source to read: synthetic (seeded, needs no files), movielens-100k, lastfm-hetrec, "
            "recbole (atomic files), lightgcn (train.txt/test.txt), csv (your own files)."
        ),
        show_default=True,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=(
            "Folder holding the source's files. For movielens-100k and lastfm-hetrec, the cache folder they "
            "are downloaded into when missing; required for recbole, lightgcn and csv."
        ),
        file_okay=False,
    ),
]
RecboleNameOption = Annotated[
    str | None,
    typer.Option(
        "--recbole-name",
        help=(
            "For recbole: the atomic files' stem (movie for movie.inter); default: the folder's single "
            "*.inter file."
        ),
    ),
]
MinRatingOption = Annotated[
    float | None,
    typer.Option(
        "--min-rating",
        help=(
            "Keep only interactions rated at least this (turns ratings into implicit feedback); default "
            "keeps all."
        ),
    ),
]
KCoreOption = Annotated[
    int,
    typer.Option(
        "--k-core",
        min=0,
        help="Keep the k-core: drop users and items with fewer than K interactions, repeatedly; 0 keeps all.",
        show_default=True,
    ),
]
AggregateDuplicatesOption = Annotated[
    bool,
    typer.Option(
        "--aggregate-duplicates/--reject-duplicates",
        help=(
            "Merge repeated (user, item) rows (ratings summed, latest timestamp kept) instead of failing "
            "the data contract on them."
        ),
        show_default=True,
    ),
]
NoDownloadOption = Annotated[
    bool,
    typer.Option(
        "--no-download",
        help="Never fetch a downloadable dataset; fail with a clear message when its files are not on disk.",
    ),
]
MinInteractionsOption = Annotated[
    int,
    typer.Option(
        "--min-interactions",
        min=0,
        help="The fewest interactions a usable dataset has; fewer fails the contract.",
        show_default=True,
    ),
]
SplitOption = Annotated[
    SplitMethod,
    typer.Option(
        "--split",
        help=(
            "How to split interactions: random (per-user ratios), temporal (per user, oldest for training), "
            "loo (leave one out for test and one for validation), fixed (the source's own split), "
            "cold-users (users held out of training, each revealing a history), cold-items (items held out "
            "of training)."
        ),
        show_default=True,
    ),
]
RatiosOption = Annotated[
    tuple[float, float, float],
    typer.Option(
        "--ratios",
        help="Train, validation and test fractions for random and temporal splits; they must sum to 1.",
        show_default=True,
    ),
]
ColdFractionOption = Annotated[
    float,
    typer.Option(
        "--cold-fraction",
        help=(
            "cold-users: fraction of users held out of training (half validate, half test); cold-items: "
            "fraction of items held out."
        ),
        show_default=True,
    ),
]
FoldInOption = Annotated[
    float,
    typer.Option(
        "--fold-in",
        help=(
            "cold-users: fraction of each new user's interactions revealed as its history at inference "
            "(oldest first when there are timestamps); the rest is evaluated."
        ),
        show_default=True,
    ),
]
SeedOption = Annotated[
    int,
    typer.Option("--seed", help="Seed for every random choice (split, synthetic data).", show_default=True),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object on stdout instead of a table for people."),
]


def data_config(
    *,
    dataset: DatasetName,
    data_dir: Path | None = None,
    recbole_name: str | None = None,
    min_rating: float | None = None,
    k_core: int = 0,
    aggregate_duplicates: bool = False,
    no_download: bool = False,
    seed: int | None = None,
    **extra: Any,
) -> DataConfig:
    """Build the :class:`DataConfig` from the shared options (pydantic validates the values).

    Args:
        dataset: ``--dataset``.
        data_dir: ``--data-dir``.
        recbole_name: ``--recbole-name``.
        min_rating: ``--min-rating``.
        k_core: ``--k-core``.
        aggregate_duplicates: ``--aggregate-duplicates``.
        no_download: ``--no-download``.
        seed: ``--seed``; also seeds the synthetic source when given.
        **extra: Any other :class:`DataConfig` field a command exposes (``csv_sep``, ``one_based``, ...).

    Returns:
        The frozen config.

    Raises:
        pydantic.ValidationError: A value is out of range (the error boundary reports it).
    """
    fields: dict[str, Any] = {
        "dataset": dataset,
        "data_dir": data_dir,
        "recbole_name": recbole_name,
        "min_rating": min_rating,
        "k_core": k_core,
        "aggregate_duplicates": aggregate_duplicates,
        "download": not no_download,
        **extra,
    }
    if seed is not None:
        fields.setdefault("synthetic_seed", seed)
    return DataConfig(**fields)


def split_config(
    *,
    method: SplitMethod = "random",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
    cold_fraction: float = 0.1,
    fold_in: float = 0.5,
) -> SplitConfig:
    """Build the :class:`SplitConfig` from ``--split``, ``--ratios``, ``--seed`` and the cold-start options.

    Args:
        method: ``--split``.
        ratios: ``--ratios``.
        seed: ``--seed``.
        cold_fraction: ``--cold-fraction``.
        fold_in: ``--fold-in``.

    Returns:
        The frozen config.

    Raises:
        pydantic.ValidationError: The ratios do not sum to 1 (the error boundary reports it).
    """
    return SplitConfig(method=method, ratios=ratios, seed=seed, cold_fraction=cold_fraction, fold_in=fold_in)


def stderr_console() -> Console:
    """A rich console on stderr (messages for people never mix with ``--json`` output on stdout)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``message`` as one paragraph on stderr and exit with ``code``, without a traceback.

    Args:
        message: What went wrong and how to fix it.
        code: The exit code (:data:`EXIT_BAD_INPUT` by default).

    Raises:
        typer.Exit: Always.
    """
    stderr_console().print(f"Error: {message}", markup=False)
    raise typer.Exit(code)


def describe_validation_error(exc: Exception) -> str:
    """One sentence per invalid field of a pydantic ``ValidationError``, joined into a paragraph.

    Args:
        exc: A ``pydantic.ValidationError``.

    Returns:
        E.g. ``"Invalid option: ratios: Value error, split ratios must ... sum to 1, got (0.5, 0.1, 0.1)."``
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{where}: {err.get('msg', 'invalid')} (got {err.get('input')!r})")
    return "Invalid option: " + "; ".join(parts) + "."


def contract_failed(report: ValidationReport, as_json: bool = False) -> NoReturn:
    """Print a broken data contract on stdout and exit with :data:`EXIT_CHECK_FAILED`.

    Args:
        report: The failed report.
        as_json: Print ``{"contract": report.to_dict()}`` instead of the summary for people.

    Raises:
        typer.Exit: Always, with code 1.
    """
    from data_checks.report import to_plain

    if as_json:
        typer.echo(json.dumps({"contract": to_plain(report.to_dict())}, indent=2))
    else:
        typer.echo(report.summary())
        typer.echo("Fix the rows above (or the loader options) and run the command again.")
    raise typer.Exit(EXIT_CHECK_FAILED)


@contextmanager
def error_boundary(*, as_json: bool = False) -> Iterator[None]:
    """Turn a broken contract into exit 1 and the errors a person can fix into one paragraph and exit 2.

    Caught: :class:`~tasks.prepare.DataContractError` (the data broke its contract: the GX summary, or with
    ``as_json`` the report as one JSON object, on stdout, exit 1); :class:`DataFormatError` (a file cannot
    be parsed), :class:`DatasetNotAvailableError` (files missing or not downloadable), :class:`SplitError`
    (a split these data cannot give), ``pydantic.ValidationError`` (an option out of range) and ``OSError``
    (a path that cannot be read or written), each as one paragraph on stderr with exit 2. Anything else is a
    bug and keeps its traceback.

    Args:
        as_json: How a broken contract is printed (the command's ``--json``).

    Raises:
        typer.Exit: With code :data:`EXIT_CHECK_FAILED` or :data:`EXIT_BAD_INPUT` for the errors above.
    """
    from pydantic import ValidationError

    from tasks.prepare import DataContractError

    try:
        yield
    except DataContractError as exc:
        contract_failed(exc.report, as_json)
    except (DataFormatError, DatasetNotAvailableError, SplitError) as exc:
        fail(" ".join(str(exc).split()))
    except ValidationError as exc:
        fail(describe_validation_error(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc))
