"""The Run form's schema (what Prefect renders from PipelineParams) and the one-source-of-defaults loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.registry import MODELS
from tasks.pipeline_config import PipelineParams, effective_params


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref") or (node.get("allOf") or [{}])[0].get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def _flow_schema() -> dict[str, Any]:
    """The parameter schema Prefect builds for the flow's form, with pydantic's ``$defs`` naming."""
    from prefect.utilities.callables import parameter_schema

    from flows.train_and_promote import train_and_promote

    raw = parameter_schema(train_and_promote.fn).model_dump()
    return {**raw, "$defs": raw.get("definitions", {})}


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every property of PipelineParams and of its nested models, as (dotted name, schema)."""
    root = schema["$defs"]["PipelineParams"]
    out = []
    for name, prop in root["properties"].items():
        out.append((name, prop))
        nested = _resolve(schema, prop)
        if nested is not prop:
            out += [(f"{name}.{inner}", p) for inner, p in nested["properties"].items()]
    return out


def test_every_field_has_a_title_and_a_one_line_description() -> None:
    from tasks.config import DataConfig, SplitConfig

    for model in (PipelineParams, DataConfig, SplitConfig):  # set by hand, not pydantic's title-cased name
        assert all(f.title and f.description for f in model.model_fields.values()), model.__name__
    for name, prop in _properties(_flow_schema()):
        assert prop.get("title"), name
        description = prop.get("description", "")
        assert description and "\n" not in description and len(description) <= 110, name


def test_no_property_is_a_bare_or_optional_null_type() -> None:
    """Prefect shows 'Property is type "None"' for a null type or a null branch."""
    for name, prop in _properties(_flow_schema()):
        assert prop.get("type") != "null", name
        assert all(branch.get("type") != "null" for branch in prop.get("anyOf", [])), name


def test_models_is_a_multi_select_of_the_registered_models() -> None:
    models = _flow_schema()["$defs"]["PipelineParams"]["properties"]["models"]
    assert models["type"] == "array"
    assert sorted(models["items"]["enum"]) == sorted(MODELS)


def test_choices_are_enums() -> None:
    schema = _flow_schema()
    data = schema["$defs"]["DataConfig"]["properties"]
    split = schema["$defs"]["SplitConfig"]["properties"]
    assert "csv" in data["dataset"]["enum"] and "loo" in split["method"]["enum"]


def test_every_cross_field_error_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        PipelineParams.model_validate(
            {
                "split": {"ratios": [0.5, 0.1, 0.1]},
                "metric": "ndcg@50",
                "data": {"dataset": "csv"},
                "models": ["mf", "gcn-typo"],
            }
        )
    where = {tuple(err["loc"]) for err in caught.value.errors()}
    assert {("split", "ratios"), ("metric",), ("data", "data_dir"), ("models", 1)} <= where


def test_a_valid_model_passes_the_cross_checks_and_null_fields_still_validate() -> None:
    params = PipelineParams.model_validate({"metric": "ndcg@10", "data": {"dataset": "csv", "data_dir": "x"}})
    assert params.metric == "ndcg@10" and params.threads is None


def test_effective_params_merge_file_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "run.yml"
    config.write_text("data: {dataset: csv, data_dir: d}\nepochs: 3\n")
    params = effective_params(config, {"data": {"k_core": 2}, "epochs": 5})
    assert (params.data.dataset, params.data.data_dir, params.data.k_core) == ("csv", Path("d"), 2)
    assert params.epochs == 5 and params.lr == PipelineParams().lr
