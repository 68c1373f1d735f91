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

The option names and help texts are the same in every command, so ``gnnrec data stats``, ``gnnrec train``,
``gnnrec run`` and ``gnnrec retrain`` read the same data from the same flags, and exit with the same codes
(:data:`EXIT_OK` ... :data:`EXIT_INFRASTRUCTURE`), each failure as one paragraph on stderr, never a
traceback. Nothing here imports torch, GX, Prefect or MLflow at import time.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import urllib.error
import urllib.request
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
    from tasks.register import MlflowSettings

# Exit codes shared by every command (README, "Exit codes"): 0 success, 1 the data broke the contract,
# 2 a usage error or an input that cannot be read (unreadable files, missing dataset, invalid options),
# 3 the infrastructure failed (tracking server unreachable, store read-only, mlflow.yml not valid YAML).
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRASTRUCTURE = 3

#: Seconds the tracking-server probe waits for an answer.
PROBE_TIMEOUT_S = 5.0


class InfrastructureError(Exception):
    """The tracking server, the store or its settings cannot be used (exit :data:`EXIT_INFRASTRUCTURE`)."""


DatasetOption = Annotated[
    DatasetName,
    typer.Option(
        "--dataset",
        "-d",
        help=(
            "Which source to read: synthetic (seeded, needs no files), movielens-100k, lastfm-hetrec, "
            "movielens-100k-kg, lastfm-kg (with knowledge graphs), filmtrust (ratings + trust), recbole "
            "(atomic files), lightgcn "
            "(train.txt/test.txt), csv (your own files)."
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
RatingScaleOption = Annotated[
    tuple[float, float] | None,
    typer.Option(
        "--rating-scale",
        help=(
            "MIN MAX of a valid rating, e.g. 1 5: the data contract rejects ratings outside it (and any "
            "non-finite one); default: any finite rating."
        ),
        show_default=False,
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


#: Folders of the MLflow and Optuna stores in use: a write refused there is an infrastructure failure (3),
#: elsewhere an unusable input (2).
_STORE_ROOTS: list[Path] = []


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


#: What urllib3 says (inside MLflow's message) when a tracking server cannot be reached, and its short form.
_CONNECTION_FAILURES = {
    "Connection refused": "connection refused",
    "Connection reset": "connection reset",
    "Connection aborted": "connection aborted",
    "Read timed out": "no answer in time",
    "timed out": "no answer in time",
    "Max retries exceeded": "no answer",
}


def _server_gone(message: str) -> str | None:
    """The message for a tracking server that stopped answering, from MLflow's HTTP failure; else ``None``."""
    import re

    found = re.search(r"API request to (https?://[^/\s]+)", message)
    if found is None:
        return None
    reason = next((short for key, short in _CONNECTION_FAILURES.items() if key in message), None)
    if reason is None:
        return None
    return (
        f"The MLflow tracking server at {found.group(1)} stopped answering during the run ({reason}). "
        "What it "
        "recorded before stays in its store; runs left open are closed (KILLED) when the next run reaches "
        "it. Start the server again (or point tracking_uri in mlflow.yml at one that runs) and run the "
        "command again: finished Optuna trials are kept in the study storage and reused."
    )


def infrastructure_message(exc: BaseException) -> str | None:
    """The one-paragraph message of an infrastructure failure, or ``None`` when ``exc`` is not one.

    Infrastructure: :class:`InfrastructureError`; MLflow's errors (``MlflowException``, which wraps the
    tracking server's HTTP errors and the SQL store's); SQLAlchemy's (the Optuna storage); a connection
    error; a write refused (read-only file system, permission) inside a store folder.
    """
    import sys

    if isinstance(exc, InfrastructureError):
        return str(exc)
    if "mlflow" in sys.modules:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            return (
                _server_gone(exc.message)
                or f"The MLflow tracking store failed: {_one_line(exc.message)[:600]}"
            )
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            return f"The study store (Optuna storage) failed: {_one_line(exc)[:600]}"
    if isinstance(exc, ConnectionError):
        return f"A connection failed: {_one_line(exc)}"
    refused = (
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOSPC,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
    )
    if isinstance(exc, OSError) and exc.errno in refused and exc.filename:
        path = Path(str(exc.filename)).resolve()
        if any(path == root or root in path.parents for root in _STORE_ROOTS):
            return f"The store cannot be written: {exc.strerror} ({exc.filename}). Check its permissions."
    if "sqlite3" in sys.modules:
        import sqlite3

        if isinstance(exc, sqlite3.OperationalError):
            return f"The store failed: {_one_line(exc)}"
    return None


def input_message(exc: BaseException) -> str | None:
    """The one-paragraph message of an unusable input or option (exit 2), or ``None``."""
    from pydantic import ValidationError

    from tasks.compat import ModelDataMismatchError
    from tasks.pipeline_config import RunConfigError

    if isinstance(
        exc, DataFormatError | DatasetNotAvailableError | SplitError | RunConfigError | ModelDataMismatchError
    ):
        return _one_line(exc)
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    return None


@contextmanager
def error_boundary(*, as_json: bool = False) -> Iterator[None]:
    """Turn every failure a person can act on into one paragraph and its exit code (never a traceback).

    Caught: :class:`~tasks.prepare.DataContractError` (the data broke its contract: the GX summary, or with
    ``as_json`` the report as one JSON object, on stdout, exit 1); an infrastructure failure
    (:func:`infrastructure_message`, exit 3); :class:`DataFormatError` (a file cannot be parsed),
    :class:`DatasetNotAvailableError` (files missing or not downloadable), :class:`SplitError` (a split these
    data cannot give), :class:`~tasks.compat.ModelDataMismatchError` (a model needs data the dataset lacks,
    refused before any tuning), ``pydantic.ValidationError`` (an option out of range) and ``OSError`` (a path
    that cannot be read or written), exit 2. Anything else is a bug and keeps its traceback.

    Args:
        as_json: How a broken contract is printed (the command's ``--json``).

    Raises:
        typer.Exit: With the code of the failure.
    """
    from tasks.prepare import DataContractError

    try:
        yield
    except DataContractError as exc:
        contract_failed(exc.report, as_json)
    except Exception as exc:
        infrastructure = infrastructure_message(exc)
        if infrastructure is not None:
            fail(infrastructure, EXIT_INFRASTRUCTURE)
        message = input_message(exc)
        if message is not None:
            fail(message)
        raise


def probe_tracking_server(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Check that an ``http(s)://`` tracking server answers, within ``timeout_s`` (other URIs: nothing).

    MLflow retries a refused connection with backoff for minutes; one short request first turns an
    unreachable server into a message within seconds. Any HTTP answer counts as reachable.

    Raises:
        InfrastructureError: Nothing answers at ``uri``.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):  # noqa: S310 (the configured URI)
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise InfrastructureError(
            f"The MLflow tracking server at {uri} is unreachable ({reason}). Start it, or point tracking_uri "
            "in mlflow.yml at a running server or a local sqlite:/// store."
        ) from None


def probe_sqlite_store(uri: str) -> None:
    """Check that a local ``sqlite:///`` store can be opened and written (other URIs: nothing).

    MLflow retries an engine that cannot connect ten times with backoff (about 100 s); one write
    transaction here turns a store that is a folder, read-only or on a full disk into a message at once.

    Raises:
        InfrastructureError: The database cannot be opened or written.
    """
    import sqlite3

    path = uri.partition(":///")[2] if uri.startswith("sqlite") and ":///" in uri else ""
    if not path or path == ":memory:":
        return
    try:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30)
        try:
            connection.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only database
            connection.rollback()
        finally:
            connection.close()
    except (sqlite3.Error, OSError) as err:
        raise InfrastructureError(
            f"The store {path} cannot be opened for writing ({_one_line(err)}). Check that it is a writable "
            "SQLite file, or point mlflow.yml at another store."
        ) from None


#: Seconds a database server (the MLflow store) gets to accept the probe's connection.
DATABASE_CONNECT_TIMEOUT_S = 5


def probe_database_store(uri: str, what: str = "MLflow tracking store") -> None:
    """Check that a database server store (``postgresql+psycopg2://...``) accepts a connection.

    MLflow retries an engine that cannot connect ten times with backoff (minutes) before it says why; one
    connection with a short timeout here names the cause (no server, no such database, refused login) at
    once. SQLite files and tracking servers are probed elsewhere; nothing is created.

    Raises:
        InfrastructureError: The server does not answer or refuses the connection; the URL is malformed.
    """
    scheme = uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else ""
    if scheme in ("", "sqlite", "http", "https", "file"):
        return
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = uri
    try:
        url = sqlalchemy.make_url(uri)
        shown = url.render_as_string(hide_password=True)
        args = {"connect_timeout": DATABASE_CONNECT_TIMEOUT_S} if scheme in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise InfrastructureError(f"The {what} URL {shown} cannot be used: {_one_line(err)}.") from None
    except ImportError as err:
        raise InfrastructureError(
            f"The {what} {shown} needs a database driver that is not installed ({err}); gnnrec ships "
            "psycopg2 for postgresql+psycopg2:// URLs."
        ) from None
    except SQLAlchemyError as err:
        cause = _one_line(getattr(err, "orig", None) or err).removesuffix(".")
        database = uri.rpartition("/")[2].partition("?")[0]
        hint = (
            f"Create it (createdb -h HOST -U USER {database}; `gnnrec stack up` creates its own) or fix "
            if "does not exist" in cause
            else "Start the database server, or fix "
        )
        raise InfrastructureError(
            f"The {what} {shown} cannot be reached ({cause}). {hint}tracking_uri in mlflow.yml."
        ) from None


@contextmanager
def store_lock(settings: MlflowSettings) -> Iterator[None]:
    """Hold an exclusive file lock beside the local SQLite stores while their schemas are created.

    Two first runs on a fresh store would otherwise both create MLflow's (or Optuna's) tables and one
    crashes half-way (``table ... already exists``); the second now waits and finds them made. Nothing is
    locked for server URIs.
    """
    import fcntl

    folders = sorted(
        {
            Path(uri.partition(":///")[2]).expanduser().resolve().parent
            for uri in (settings.tracking_uri, settings.study_storage)
            if uri.startswith("sqlite") and ":///" in uri and uri.partition(":///")[2] not in ("", ":memory:")
        }
    )
    if not folders:
        yield
        return
    folders[0].mkdir(parents=True, exist_ok=True)
    with open(folders[0] / ".gnnrec-store.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_settings(mlflow_config: Path | None) -> MlflowSettings:
    """Load ``mlflow.yml``, check the tracking server answers, and create the stores' schemas once.

    A named file that does not exist exits 2 (a usage error); a file that is not valid YAML or holds
    invalid settings, an unreachable server or a store that cannot be written exits 3.
    """
    import yaml
    from pydantic import ValidationError

    from tasks.register import configure_mlflow, load_mlflow_settings

    try:
        settings = load_mlflow_settings(mlflow_config)
    except FileNotFoundError as err:
        fail(f"Cannot use the MLflow settings: {_one_line(err)}")
    except ValidationError as err:
        fail(f"The MLflow settings are invalid: {describe_validation_error(err)}", EXIT_INFRASTRUCTURE)
    except (yaml.YAMLError, ValueError, OSError) as err:
        fail(f"Cannot use the MLflow settings: {_one_line(err)}", EXIT_INFRASTRUCTURE)
    for uri in (settings.tracking_uri, settings.artifact_location or "", settings.study_storage):
        local = uri.partition(":///")[2] if ":///" in uri else uri.removeprefix("file://")
        if local and "://" not in local:
            _STORE_ROOTS.append(Path(local).expanduser().resolve().parent)
    # MLflow's HTTP client retries a refused connection for minutes; keep each request short.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # With a tracking server MLflow prints "View run ... at: URL" on stdout for every run it ends, which
    # would break `--json` (one JSON object on stdout); the summary names the server instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with error_boundary():
        probe_tracking_server(settings.tracking_uri)
        with store_lock(settings):
            for uri in (settings.tracking_uri, settings.study_storage):
                probe_sqlite_store(uri)
            probe_database_store(settings.tracking_uri)
            configure_mlflow(settings)
            if settings.study_storage.startswith("sqlite"):
                from tasks.study_storage import open_storage

                open_storage(settings.study_storage)  # creates the tables (no study) once
    return settings


class _OneLineFailures(logging.Filter):
    """Drop the traceback Prefect logs with a failed task or flow when the error is one a person can fix.

    The CLI prints such an error once, as a paragraph, after the flow returns; the engine's log line keeps
    its first line (what failed) without the stack.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (infrastructure_message(exc) or input_message(exc) or _is_contract(exc)):
            record.exc_info = None
            record.exc_text = None
            record.msg = _one_line(record.getMessage()).split(" Traceback")[0]
            record.args = None
        return True


def _is_contract(exc: BaseException) -> bool:
    from tasks.prepare import DataContractError

    return isinstance(exc, DataContractError)


def quiet_engine_tracebacks() -> None:
    """Install :class:`_OneLineFailures` on Prefect's flow-run and task-run loggers (idempotent)."""
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineFailures) for f in logger.filters):
            logger.addFilter(_OneLineFailures())


def load_champion_or_exit(settings: MlflowSettings) -> tuple[str, Any]:
    """``(uri, pyfunc model)`` of ``models:/NAME@champion``; exit 2 with the fix when there is none.

    Raises:
        typer.Exit: Code 2 when no version holds the alias (or it cannot be loaded); other tracking failures
            reach the error boundary (exit 3).
    """
    from mlflow.exceptions import MlflowException

    from tasks.register import check_champion

    uri = f"models:/{settings.registered_model_name}@{settings.promotion_alias}"
    try:
        champion = check_champion(settings)  # a missing or broken champion is reported with its fix
        if not champion.ok:
            fail(champion.message())
        return uri, champion.model
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            fail(f"No champion to use ({uri}): {_one_line(err.message).rstrip('.')}. Run `gnnrec run` first.")
        raise
    except OSError as err:
        fail(
            f"The champion ({uri}) cannot be loaded: {_one_line(err)}. Run `gnnrec run` to register another."
        )


def parse_user_ids(raw: list[str]) -> list[Any]:
    """Raw user ids from the command line: whole numbers as ints when all are, else every id as a string."""
    ids: list[Any] = [int(u) if u.lstrip("-").isdigit() else u for u in raw]
    return ids if all(isinstance(u, int) for u in ids) else [str(u) for u in raw]


def probe_study_storage(url: str) -> None:
    """Open the Optuna study storage at ``url`` once, creating its tables when new (any SQLAlchemy URL).

    A wrong PostgreSQL URL (a host or port where nothing answers, a database that does not exist, a driver
    that is not installed, a URL that does not parse) becomes one paragraph before any work starts.

    Raises:
        InfrastructureError: The storage cannot be opened.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.study_storage import open_storage

    try:
        open_storage(url)
    except (SQLAlchemyError, ValueError, ImportError) as err:
        from sqlalchemy.engine import make_url

        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 (a URL that does not parse: show it as given)
            shown = url
        reason = getattr(err, "orig", None) or err.__cause__ or err
        first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
        raise InfrastructureError(
            f"Cannot open the Optuna study storage {shown}: {_one_line(first)}. Check the URL "
            "(postgresql://USER@HOST:5432/DATABASE or sqlite:///PATH/studies.db), that the database server "
            "runs and answers there, and that the database exists (createdb DATABASE)."
        ) from None
