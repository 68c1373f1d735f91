"""Lineage: what a run or registered version was trained on, as MLflow tags (dataset, split, code)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.code_version import code_version as _code_version
from tasks.code_version import source_digest as _source_digest

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
    """:func:`tasks.code_version.source_digest` of ``roots`` (every ``.py`` file, with its path)."""
    return _source_digest(roots)


@functools.cache
def code_version() -> str:
    """What code trains and serves a model: :func:`tasks.code_version.code_version` of its packages.

    The same function keys the Prefect caches, so a registered version and a cache entry agree on what
    "the same code" means. Read once per process: a long-lived process (``gnnrec ui`` serving the
    deployments) runs the modules it imported, so a later edit on disk does not change what it claims to run.
    Registration tags every version with it and reuses a version only when it matches.
    """
    return _code_version()


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
