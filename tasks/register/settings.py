"""Where runs are tracked and models registered: ``mlflow.yml`` as :class:`MlflowSettings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: Environment variable naming the ``mlflow.yml`` to use when none is passed.
CONFIG_ENV = "GNNREC_MLFLOW_CONFIG"


class MlflowSettings(BaseModel):
    """Where and how runs are tracked and models registered and promoted (the contents of ``mlflow.yml``).

    Paths in the file are resolved against the file's folder by :func:`load_mlflow_settings`, so the values
    held here are absolute (``sqlite:////abs/path/mlflow.db``, ``file:///abs/path/artifacts``).

    Three kinds of store are accepted: an embedded SQLite file (the default, for ``make run``), a database
    server reached directly (``postgresql+psycopg2://user@host:5432/db``, also ``mysql+pymysql://``) and an
    MLflow tracking server (``http://127.0.0.1:5000``). The registry lives in the same store.

    Attributes:
        tracking_uri: MLflow tracking (and registry) URI.
        artifact_location: Artifact root of the experiment, as a URI. ``None`` (``artifact_location: null``)
            lets a tracking server choose (its ``--artifacts-destination``, proxied as ``mlflow-artifacts:``,
            so workers on other machines need no shared folder): the default with an ``http(s)://`` tracking
            URI; a database or SQLite store needs a location.
        experiment_name: The experiment every pipeline run logs to.
        registered_model_name: The registered model every family registers versions of.
        selection_metric: Validation metric (``ndcg@20``) that tunes, selects and promotes.
        promotion_alias: Alias moved to the promoted version.
        registry_stage: Stage set as well on promotion (previous holders archived); ``None`` skips it.
        min_margin: How much (absolute) the challenger must beat the champion by.
        on_incomparable: What the gate does when the champion cannot be scored on the challenger's data
            (users unknown to it, another dataset, an export it cannot re-score): ``keep`` the champion
            (default) or ``promote`` the challenger. A broken champion (artifacts missing or unloadable) is
            always replaced by a challenger that passes the popularity floor.
        study_storage: SQLAlchemy URL of the Optuna study storage.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tracking_uri: str = "sqlite:///data/mlflow/mlflow.db"
    artifact_location: str | None = None
    experiment_name: str = "gnnrec"
    registered_model_name: str = "gnnrec-recommender"
    selection_metric: str = "ndcg@20"
    promotion_alias: str = Field(default="champion", pattern=r"^[\w\-]+$")
    registry_stage: str | None = "Production"
    min_margin: float = Field(default=0.001, ge=0.0)
    on_incomparable: Literal["keep", "promote"] = "keep"
    study_storage: str = "sqlite:///data/optuna/studies.db"

    @field_validator("tracking_uri")
    @classmethod
    def _known_store(cls, uri: str) -> str:
        """Refuse a tracking URI MLflow would misread, naming the accepted forms."""
        scheme = uri.partition("://")[0].lower() if "://" in uri else ""
        if not scheme:
            return uri  # a bare path: a SQLite file next to mlflow.yml
        if scheme in ("postgres", "postgres+psycopg2"):
            raise ValueError(
                f"{uri!r}: SQLAlchemy names PostgreSQL 'postgresql', write "
                f"postgresql+psycopg2://{uri.partition('://')[2]}"
            )
        if scheme.partition("+")[0] in DATABASE_SCHEMES:
            if scheme.partition("+")[0] != "sqlite" and not uri.partition("://")[2].partition("/")[2]:
                raise ValueError(f"{uri!r} names no database: add /DATABASE after the host")
            return uri
        if scheme in ("http", "https"):
            if not uri.partition("://")[2].strip("/"):
                raise ValueError(f"{uri!r} names no host: write e.g. http://127.0.0.1:5000")
            return uri.rstrip("/")
        raise ValueError(
            f"{uri!r} is not a store gnnrec can use: write sqlite:///path/mlflow.db (embedded), "
            "postgresql+psycopg2://USER@HOST:5432/DATABASE (a database server) or http://HOST:PORT (an "
            "MLflow "
            "tracking server)"
        )

    @model_validator(mode="before")
    @classmethod
    def _artifacts_for_database_stores(cls, data: Any) -> Any:
        """A database store has no artifact root of its own (MLflow would write ``./mlruns``): the default."""
        if isinstance(data, dict) and data.get("artifact_location") is None:
            uri = str(data.get("tracking_uri", cls.model_fields["tracking_uri"].default))
            if not is_tracking_server(uri):
                return {**data, "artifact_location": DEFAULT_ARTIFACT_LOCATION}
        return data

    def resolved(self, base: Path) -> MlflowSettings:
        """A copy with relative paths in URIs made absolute against ``base``."""
        location = self.artifact_location
        return self.model_copy(
            update={
                "tracking_uri": _resolve_db_uri(self.tracking_uri, base),
                "artifact_location": None if location is None else _resolve_location(location, base),
                "study_storage": _resolve_db_uri(self.study_storage, base),
            }
        )


#: URI schemes (before any ``+driver``) of the SQLAlchemy databases MLflow can use as its store.
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
#: Artifact root of a database store when ``mlflow.yml`` names none (relative to the file's folder).
DEFAULT_ARTIFACT_LOCATION = "data/mlflow/artifacts"


def is_tracking_server(uri: str) -> bool:
    """Whether ``uri`` is an MLflow tracking server (``http(s)://``), not a store MLflow opens itself."""
    return uri.startswith(("http://", "https://"))


def _resolve_db_uri(uri: str, base: Path) -> str:
    """``sqlite:///rel/x.db`` -> ``sqlite:////base/rel/x.db``; a bare path -> ``sqlite:///`` of it."""
    if "://" not in uri:
        return "sqlite:///" + str((base / uri).resolve())
    scheme, _, rest = uri.partition(":///")
    if scheme.startswith("sqlite") and rest and not rest.startswith("/") and rest != ":memory:":
        return f"{scheme}:///{(base / rest).resolve()}"
    return uri


def _resolve_location(location: str, base: Path) -> str:
    """A folder (relative to ``base`` or absolute) becomes a ``file://`` URI; other URIs pass through."""
    if "://" in location:
        return location
    return (base / location).resolve().as_uri()


def load_mlflow_settings(path: str | Path | None = None) -> MlflowSettings:
    """Read ``mlflow.yml``, resolving relative paths against its folder.

    Args:
        path: The file; ``None`` uses ``$GNNREC_MLFLOW_CONFIG`` or else ``./mlflow.yml``. When the default
            file does not exist the built-in defaults apply, resolved against the current folder.

    Returns:
        The settings, with absolute URIs.

    Raises:
        FileNotFoundError: When an explicitly named file does not exist.
        ValueError: When the file is not a mapping or has unknown keys.
    """
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    file = Path(path if path is not None else os.environ.get(CONFIG_ENV) or "mlflow.yml").expanduser()
    if not file.exists():
        if explicit:
            raise FileNotFoundError(f"MLflow settings file {file} does not exist.")
        return MlflowSettings().resolved(Path.cwd())
    content = yaml.safe_load(file.read_text()) or {}
    if not isinstance(content, dict):
        raise ValueError(f"{file} must hold a mapping of settings, found {type(content).__name__}.")
    return MlflowSettings(**content).resolved(file.resolve().parent)


def configure_mlflow(settings: MlflowSettings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists with its artifact root.

    Both the tracking URI and the experiment's artifact location are always set, so MLflow never falls
    back to writing ``./mlruns``; with a tracking server and no ``artifact_location`` the server's own
    artifact store (``--artifacts-destination``) is the experiment's.

    Returns:
        The experiment id.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tasks.study_storage import ensure_sqlite_dir

    ensure_sqlite_dir(settings.tracking_uri)  # nothing for a database server or a tracking server
    if settings.artifact_location is not None and settings.artifact_location.startswith("file://"):
        Path(settings.artifact_location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return client.create_experiment(
            settings.experiment_name, artifact_location=settings.artifact_location
        )
    return str(experiment.experiment_id)


def mlflow_client(settings: MlflowSettings) -> MlflowClient:
    """A client of the configured tracking and registry store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
