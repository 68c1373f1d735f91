"""The code version changes exactly when the source of the packages it covers changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks import code_version as cv


def make_package(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("def f():\n    return 1\n")
    (root / "sub" / "b.py").write_text("X = 2\n")
    return root


def test_digest_is_stable_for_a_copy_and_changes_with_any_edit(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "one" / "pkg")
    copy = tmp_path / "two" / "pkg"
    shutil.copytree(pkg, copy)
    before = cv.source_digest([pkg])
    assert cv.source_digest([copy]) == before  # where the tree lives does not matter, its content does

    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "b.cpython-311.py").write_text("cache")
    assert cv.source_digest([pkg]) == before  # caches are not source

    (copy / "sub" / "b.py").write_text("X = 3\n")
    assert cv.source_digest([copy]) != before
    shutil.copytree(pkg, tmp_path / "three" / "pkg")
    (tmp_path / "three" / "pkg" / "sub" / "b.py").rename(tmp_path / "three" / "pkg" / "sub" / "c.py")
    assert cv.source_digest([tmp_path / "three" / "pkg"]) != before  # a rename is a change


def test_code_version_names_the_package_version_and_follows_the_source(tmp_path: Path, monkeypatch) -> None:
    real = cv.code_version()
    data_only = cv.code_version(("tasks", "data_checks"))
    assert real.startswith(cv.package_version() + "+")
    assert cv.code_version() == real  # nothing changed, same version

    copies = {name: tmp_path / name for name in cv.SOURCE_PACKAGES}
    for name, folder in copies.items():
        shutil.copytree(cv.package_root(name), folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "package_root", lambda name: copies[name])
    assert cv.code_version() == real
    with (copies["models"] / "lightgcn.py").open("a") as handle:
        handle.write("\n# an edit\n")
    assert cv.code_version() != real
    assert cv.code_version(("tasks", "data_checks")) == data_only  # an edit to models/ leaves the data steps


def test_unknown_package_is_an_error() -> None:
    with pytest.raises(ModuleNotFoundError, match="not an importable package"):
        cv.package_root("no_such_package_here")
