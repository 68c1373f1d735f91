"""``gnnrec recommend`` and ``gnnrec serve`` with no champion, or a champion whose artifacts are gone.

Both ask :func:`tasks.register.check_champion` first, so a broken champion is reported with its fix, in one
paragraph and a non-zero exit, before anything tries to load or serve it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.register import load_mlflow_settings, promote_if_better
from tests.tasks.register_helpers import (
    delete_artifacts,
    planted_dataset,
    planted_model,
    register_model,
    split_of,
)

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mlflow.yml"
    path.write_text(
        "tracking_uri: sqlite:///store/mlflow.db\nartifact_location: store/artifacts\n"
        "registered_model_name: cli\nstudy_storage: sqlite:///store/optuna.db\n"
    )
    return path


def test_recommend_and_serve_without_a_champion(config: Path) -> None:
    for command in (["recommend", "--user", "1000"], ["serve", "--port", "5999"]):
        result = runner.invoke(app, [*command, "--mlflow-config", str(config)])
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert "no champion" in result.stderr and "gnnrec run" in result.stderr


def test_recommend_and_serve_report_a_broken_champion_with_the_fix(config: Path) -> None:
    settings = load_mlflow_settings(config)
    dataset = planted_dataset()
    split = split_of(dataset)
    version = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=1)
    promote_if_better(settings, [version], dataset=dataset, split=split)
    ok = runner.invoke(app, ["recommend", "--user", "1000", "--k", "3", "--mlflow-config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "Top-3 from models:/cli@champion" in ok.stdout

    delete_artifacts(settings, version.version)
    for command in (["recommend", "--user", "1000"], ["serve", "--port", "5999"]):
        result = runner.invoke(app, [*command, "--mlflow-config", str(config)])
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert f"models:/cli@champion (v{version.version}) is broken" in result.stderr
        assert "does not load" in result.stderr and "gnnrec run" in result.stderr
        assert "Serving" not in result.stdout  # serve stopped before starting a server
