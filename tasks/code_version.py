"""The version of the code a step runs: the package version plus a hash of the source it executes.

A cache key or a registry deduplication that only looks at a step's inputs returns a stale result after the
code changed: editing ``models/lightgcn.py`` changes what ``train()`` produces for the very same data and
configuration. :func:`code_version` folds the package version and a content hash of every ``*.py`` file of
the packages a step runs (``models``, ``tasks``, ``data_checks`` by default) into one short string, so keys
built on it change exactly when that code changes (a whitespace edit counts: the hash cannot tell).

The files are read on every call (about a millisecond for this project), so a long-lived process notices
an edit made while it runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path

#: The packages whose source decides what a pipeline step computes (``flows/`` only wires them).
SOURCE_PACKAGES: tuple[str, ...] = ("models", "tasks", "data_checks")

#: The distribution whose version is part of the code version.
DISTRIBUTION = "gnnrec"


def package_version() -> str:
    """The installed ``gnnrec`` version, or ``0+unknown`` when running from a checkout without metadata."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def package_root(name: str) -> Path:
    """The folder of the importable package ``name`` (found without importing it).

    Raises:
        ModuleNotFoundError: When ``name`` is not an importable package.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name!r} is not an importable package")
    return Path(next(iter(spec.submodule_search_locations)))


def source_digest(roots: Iterable[Path]) -> str:
    """A sha256 (first 16 hex characters) of every ``*.py`` file under ``roots``, with their paths.

    Files are visited in a fixed order (root name, then the path relative to it), and each path is hashed
    with its content, so renaming, adding or removing a file changes the digest as editing one does.
    Caches (``__pycache__``) are ignored.

    Args:
        roots: Package folders.

    Returns:
        The digest, 16 hex characters.
    """
    digest = hashlib.sha256()
    for root in sorted({Path(r) for r in roots}, key=lambda p: (p.name, str(p))):
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        for file in files:
            digest.update(f"|{root.name}/{file.relative_to(root).as_posix()}|".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def code_version(packages: Iterable[str] = SOURCE_PACKAGES) -> str:
    """``<package version>+<source digest>`` of ``packages``, e.g. ``0.1.0+3f2a9c0d1e4b5a67``.

    Args:
        packages: Importable package names whose source the caller runs.

    Returns:
        A string that changes when the version or any source file of those packages changes.
    """
    return f"{package_version()}+{source_digest(package_root(p) for p in packages)}"
