"""The served deployments' definitions (no server: what ``flows.deploy.deployments`` builds)."""

from __future__ import annotations

import pytest

from flows.deploy import DEFAULT_RETRAIN_CRON, deployments
from flows.retrain import RETRAIN_DEFAULTS


def _by_name(threads: int | None = None) -> dict[str, object]:
    return {d.name: d for d in deployments(threads)}


def test_deployments_keep_the_flows_defaults_without_a_thread_count(monkeypatch) -> None:
    monkeypatch.delenv("GNNREC_THREADS", raising=False)
    found = _by_name()
    assert set(found) == {"manual", "weekly"}
    assert found["manual"].parameters == {} and found["weekly"].parameters == {}
    assert found["weekly"].schedules[0].schedule.cron == DEFAULT_RETRAIN_CRON


@pytest.mark.parametrize("from_env", [False, True])
def test_thread_count_becomes_a_default_parameter_of_both_deployments(monkeypatch, from_env: bool) -> None:
    if from_env:  # what `gnnrec ui --threads 3` sets for the `python -m flows.deploy` process
        monkeypatch.setenv("GNNREC_THREADS", "3")
    found = _by_name(None if from_env else 3)
    manual, weekly = found["manual"].parameters["params"], found["weekly"].parameters["params"]
    assert manual["threads"] == 3 and weekly["threads"] == 3
    # the weekly retrain keeps its own defaults (one warm-started trial), only the thread count is added
    assert weekly["n_trials"] == RETRAIN_DEFAULTS.n_trials == 1 and weekly["warm_start"] is True
    assert manual["n_trials"] != weekly["n_trials"]


def test_deploy_and_prefect_yaml_agree_with_the_one_source_of_defaults(monkeypatch) -> None:
    from pathlib import Path

    import yaml

    from flows.deploy import DEFAULT_RETRAIN_TIMEZONE
    from tasks.pipeline_config import PipelineParams, retrain_defaults

    for name in ("GNNREC_THREADS", "GNNREC_RETRAIN_CRON", "GNNREC_RETRAIN_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    spec = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    served = _by_name()
    assert set(declared) == set(served) == {"manual", "weekly"}
    for name in ("manual", "weekly"):  # no parameter that could contradict PipelineParams
        assert declared[name]["parameters"] == {} and served[name].parameters == {}
    (yaml_schedule,) = declared["weekly"]["schedules"]
    schedule = served["weekly"].schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == (yaml_schedule["cron"], yaml_schedule["timezone"])
    assert schedule.timezone == DEFAULT_RETRAIN_TIMEZONE == "UTC"
    # the flows' own defaults are the one definition
    from flows.retrain import retrain
    from flows.train_and_promote import train_and_promote

    assert train_and_promote.parameters.properties["params"]["default"] == PipelineParams().model_dump(
        mode="json"
    )
    assert retrain.parameters.properties["params"]["default"] == retrain_defaults().model_dump(mode="json")


def test_a_configured_timezone_is_stored_with_the_schedule(monkeypatch) -> None:
    monkeypatch.setenv("GNNREC_RETRAIN_TIMEZONE", "Europe/Paris")
    assert _by_name()["weekly"].schedules[0].schedule.timezone == "Europe/Paris"
