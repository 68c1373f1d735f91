"""``gnnrec recommend``: known users and new users' histories from the champion; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tests.tasks.test_recommend import (  # noqa: F401  (the module-scoped fixtures)
    champion_store,
    kg_champion_store,
)

runner = CliRunner()


@pytest.fixture
def config(champion_store, tmp_path: Path) -> Path:  # noqa: F811
    settings, _, _ = champion_store
    path = tmp_path / "mlflow.yml"
    path.write_text(yaml.safe_dump(settings.model_dump()))
    return path


def invoke(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_history_recommends_for_a_new_user(champion_store, config: Path) -> None:  # noqa: F811
    _, dataset, _ = champion_store
    raw = [str(i) for i in dataset.item_ids[[1, 4]]]
    result = invoke("recommend", "--history", ",".join(raw), "--k", "4", "--mlflow-config", str(config))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "history 1" in line]
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in rows]
    assert [c[1] for c in cells] == ["1", "2", "3", "4"] and all(c[4] == "False" for c in cells)
    items = {c[2] for c in cells}
    assert len(items) == 4 and not items & set(raw)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--history", "999999"], "history item(s) 999999 (row 0) are not in this model's catalogue"),
        (["--history", ""], "--history is empty"),
        (["--history", " , "], "--history is empty"),
        ([], "Give --user ID (a known user) or --history"),
    ],
)
def test_bad_histories_exit_2_with_one_line(config: Path, args: list[str], message: str) -> None:
    result = invoke("recommend", *args, "--mlflow-config", str(config))
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_explain_prints_the_kg_paths_behind_each_recommendation(kg_champion_store, tmp_path: Path) -> None:  # noqa: F811
    settings, dataset, split, _, _ = kg_champion_store
    config = tmp_path / "mlflow.yml"
    config.write_text(yaml.safe_dump(settings.model_dump()))
    user = str(dataset.user_ids[0])
    result = invoke("recommend", "--user", user, "--k", "3", "--explain", "--mlflow-config", str(config))
    assert result.exit_code == 0, result.output
    assert "Why" in result.stdout
    headers = [line for line in result.stdout.splitlines() if line.startswith(f"  user {user}, #")]
    assert len(headers) == 3
    internal = int(dataset.user_ids.tolist().index(dataset.user_ids[0]))
    history = {str(dataset.item_ids[i]) for u, i in split.train.tolist() if u == internal}
    paths = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ") and " -[" in line]
    assert paths and all(p.partition(" -[")[0] in history for p in paths)


def test_explain_is_refused_by_a_champion_that_cannot_explain(config: Path) -> None:
    result = invoke("recommend", "--user", "1", "--explain", "--mlflow-config", str(config))
    assert result.exit_code == 2
    assert "cannot explain" in result.output
