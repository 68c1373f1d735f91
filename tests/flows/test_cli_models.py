import json

from typer.testing import CliRunner

from flows.cli import app
from models import MODELS


def test_models_json_lists_every_registered_model_with_needs_capabilities_defaults_and_space() -> None:
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == sorted(MODELS)
    for row in rows:
        needed = {"family", "requires", "inductive_users", "closed_form", "defaults", "search_space"}
        assert needed <= set(row)
        assert row["defaults"] == MODELS[row["name"]].default_hparams()
    lightgcn = next(row for row in rows if row["name"] == "lightgcn")
    assert lightgcn["search_space"]["num_layers"] == {"type": "int", "low": 1, "high": 4, "log": False}


def test_models_table_names_each_model() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    for name in MODELS:
        assert name in result.stdout
