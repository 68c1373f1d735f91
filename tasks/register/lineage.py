"""Lineage: what a run or registered version was trained on, as MLflow tags (dataset, split, code)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.ingest.dataset import Dataset
    from tasks.split import Split

TAG_PREFIX = "gnnrec."
TAG_DATASET = TAG_PREFIX + "dataset"
TAG_FINGERPRINT = TAG_PREFIX + "dataset_fingerprint"
TAG_SPLIT = TAG_PREFIX + "split"
TAG_FAMILY = TAG_PREFIX + "model_family"
TAG_HPARAMS = TAG_PREFIX + "hparams"
TAG_ROLE = TAG_PREFIX + "role"
TAG_GIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_CODE = TAG_PREFIX + "code_version"

#: The installed distribution whose version is part of :func:`code_version`.
PACKAGE = "gnnrec"


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (default: the current folder), or ``None`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def source_digest(*roots: Path) -> str:
    """sha256 (first 12 hex chars) of every ``.py`` file under ``roots``: relative path and content, sorted.

    Args:
        roots: Folders (packages) to hash; the folder's own name is part of each path.

    Returns:
        The digest; it changes when any file is edited, added, removed or renamed.
    """
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(f"|{root.name}/{path.relative_to(root).as_posix()}|".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


@functools.cache
def code_version() -> str:
    """What code trains and serves a model: ``<package version>+<digest of models/ and tasks/>``.

    The digest (:func:`source_digest`) covers the ``models`` and ``tasks`` packages, every model, step and
    export they hold. It is read once per process: a long-lived process (``gnnrec ui`` serving the
    deployments) runs the modules it imported, so a later edit on disk does not change what it claims to run.
    Registration tags every version with it and reuses a version only when it matches; cache keys can use it
    so that a code change invalidates them.
    """
    from importlib.metadata import PackageNotFoundError, version

    import models
    import tasks

    try:
        package = version(PACKAGE)
    except PackageNotFoundError:
        package = "0+unknown"
    roots = [Path(next(iter(pkg.__path__))) for pkg in (models, tasks)]
    return f"{package}+{source_digest(*roots)}"


def split_key(split: Split) -> str:
    """A short, stable identity of a split: ``random-seed2020-<content hash>``.

    Uses ``split.fingerprint`` when the split provides one; otherwise hashes the three parts.
    """
    fp = getattr(split, "fingerprint", None)
    if not isinstance(fp, str) or not fp:
        h = hashlib.sha256()
        for part in (split.train, split.valid, split.test):
            h.update(b"|")
            h.update(part.tobytes())
        fp = h.hexdigest()[:16]
    return f"{split.method}-seed{split.seed}-{fp}"


@dataclass(frozen=True)
class Lineage:
    """What a run was trained on, written as tags on every run and registered version.

    Attributes:
        dataset: Dataset name.
        fingerprint: Dataset content fingerprint.
        split: Split key (method, seed, content hash), see :func:`split_key`.
        git_commit: Commit of the code, when known.
    """

    dataset: str
    fingerprint: str
    split: str
    git_commit: str | None = None

    @classmethod
    def of(cls, dataset: Dataset, split: Split) -> Lineage:
        """The lineage of a dataset and split, with the current git commit."""
        return cls(dataset.name, dataset.fingerprint, split_key(split), git_commit())

    def tags(self) -> dict[str, str]:
        """As MLflow tags."""
        tags = {TAG_DATASET: self.dataset, TAG_FINGERPRINT: self.fingerprint, TAG_SPLIT: self.split}
        if self.git_commit:
            tags[TAG_GIT] = self.git_commit
        return tags
