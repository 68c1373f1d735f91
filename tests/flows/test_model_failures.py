"""One model failing does not sink the others; progress and MLflow hygiene of a real run.

A real train-and-promote run (Prefect engine, MLflow and Optuna stores in a temporary folder) with three
models: ``mf``, ``nanmf`` (an MF whose loss is NaN: ``train()`` raises ``FloatingPointError``) and ``badmf``
(an MF whose search space suggests a hyperparameter it does not take: ``TypeError``). ``mf`` must be
registered and promoted; the two others are failed rows of the leaderboard with their reason, and their MLflow
runs are closed FAILED. The same run's logs, artifacts and MLflow records check progress reporting and the
tracking hygiene (real trial times, shared plot names, per-epoch metric names, links between the two UIs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from models.base import MODELS
from models.mf import MFBPR
from tasks.register import TAG_FAMILY, TAG_ROLE, load_mlflow_settings
from tests.flows.test_train_and_promote import tiny_params, write_settings

pytestmark = pytest.mark.slow


class NanMF(MFBPR):
    """MF whose loss is NaN from the first batch."""

    name = "nanmf"

    def loss(self, *args: Any, **kwargs: Any) -> Any:
        return super().loss(*args, **kwargs) * float("nan")


class BadHparamsMF(MFBPR):
    """MF whose search space suggests a hyperparameter the model does not take."""

    name = "badmf"

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**MFBPR.search_space(trial), "depth": trial.suggest_int("depth", 1, 3)}


@dataclass
class FailingRun:
    state: Any
    outcome: Any
    tracking_uri: str
    storage: str
    client: MlflowClient
    runs: dict[str, Any]  # by family for model runs, "pipeline" for the parent


@pytest.fixture(scope="module")
def failing_run(prefect_harness, tmp_path_factory) -> FailingRun:
    from flows.train_and_promote import train_and_promote

    tmp = tmp_path_factory.mktemp("failing-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setitem(MODELS, "nanmf", NanMF)
        mp.setitem(MODELS, "badmf", BadHparamsMF)
        config = write_settings(tmp)
        params = tiny_params(config).model_copy(update={"models": ("nanmf", "mf", "badmf"), "epochs": 12})
        state = train_and_promote(params, return_state=True)
    settings = load_mlflow_settings(config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name("gnnrec-test")
    runs: dict[str, Any] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        role = run.data.tags.get(TAG_ROLE)
        if role == "pipeline":
            runs["pipeline"] = run
        elif role == "model":
            runs[run.data.tags[TAG_FAMILY]] = run
        else:
            runs.setdefault("trials", []).append(run)
    outcome = state.result() if state.is_completed() else None
    return FailingRun(state, outcome, settings.tracking_uri, settings.study_storage, client, runs)


def test_one_failing_model_does_not_sink_the_others(failing_run: FailingRun) -> None:
    assert failing_run.state.is_completed(), failing_run.state.message
    outcome = failing_run.outcome
    assert set(outcome.failed) == {"nanmf", "badmf"}
    assert outcome.failed["nanmf"].startswith("FloatingPointError: the training loss of nanmf became nan")
    assert outcome.failed["badmf"].startswith("TypeError: badmf does not take hyperparameter(s) ['depth']")

    rows = {row["model"]: row for row in outcome.leaderboard}
    assert [row["model"] for row in outcome.leaderboard][0] == "mf"  # the failed rows rank last
    assert rows["mf"]["status"] == "registered" and rows["mf"]["version"] == "1"
    for family in ("nanmf", "badmf"):
        assert rows[family]["status"] == "failed"
        assert rows[family]["reason"] == outcome.failed[family]
        assert rows[family]["mlflow run"] == failing_run.runs[family].info.run_id

    # Only mf was registered, and it is the champion.
    assert [v.family for v in outcome.versions] == ["mf"]
    assert outcome.decision.promoted and outcome.decision.challenger_family == "mf"
    champion = failing_run.client.get_model_version_by_alias("recsys", "champion")
    assert champion.tags[TAG_FAMILY] == "mf"

    # The failed models' runs are closed FAILED with the reason; mf's and the parent finished.
    runs = failing_run.runs
    assert runs["pipeline"].info.status == "FINISHED" and runs["mf"].info.status == "FINISHED"
    for family in ("nanmf", "badmf"):
        assert runs[family].info.status == "FAILED"
        assert runs[family].data.tags["gnnrec.failure"] == outcome.failed[family]
    experiment = failing_run.client.get_experiment_by_name("gnnrec-test")
    assert failing_run.client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    for family, state in (("nanmf", "FAIL"), ("badmf", "FAIL")):
        study = next(s for s in optuna.get_all_study_names(failing_run.storage) if s.startswith(family + "-"))
        trials = optuna.load_study(study_name=study, storage=failing_run.storage).trials
        assert [t.state.name for t in trials] == [state]  # the first trial failed, and the model with it


def flow_logs(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return [log.message for log in logs]


def test_every_trial_and_evaluation_logs_one_line(failing_run: FailingRun) -> None:
    messages = flow_logs(failing_run.state.state_details.flow_run_id)
    mf_trials = [m for m in messages if m.startswith("mf trial") and ("COMPLETE" in m or "PRUNED" in m)]
    assert [m.split(" done)")[0] for m in mf_trials] == ["mf trial 0 (1/2", "mf trial 1 (2/2"]
    trial_epochs = [m for m in messages if m.startswith("mf trial") and " done) epoch " in m]
    history = [len(t.user_attrs["history"]) for t in _study_trials(failing_run.storage, "mf")]
    assert len(trial_epochs) == sum(history)  # one line per validation of every trial
    assert any(m.startswith("nanmf trial 0 (1/2 done) FAIL") for m in messages)
    final = [m for m in messages if m.startswith("mf final training epoch")]
    kept = [m for m in messages if m.startswith("mf: the best trial trained this very configuration")]
    # Either the best trial's model is kept (one line, no final training), or the final training logs one
    # line per evaluation (epochs=12); never both.
    if kept:
        assert len(kept) == 1 and final == [], (kept, final)
    else:
        assert 1 <= len(final) <= 12, final
    assert any(m.startswith("mf on test: hit@10 ") for m in messages)


def _study_trials(storage: str, family: str) -> list[optuna.trial.FrozenTrial]:
    study = next(s for s in optuna.get_all_study_names(storage) if s.startswith(family + "-"))
    return optuna.load_study(study_name=study, storage=storage).trials


def test_tuning_publishes_a_progress_artifact(failing_run: FailingRun) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flow_run_id = failing_run.state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=["tune-mf", "tune-nanmf", "mlflow-runs"]),
            )
        )
    by_key = {a.key: a for a in artifacts}
    assert by_key["tune-mf"].type == "progress" and float(by_key["tune-mf"].data) == 100.0
    assert by_key["tune-nanmf"].type == "progress"
    links = str(by_key["mlflow-runs"].data)
    assert failing_run.runs["pipeline"].info.run_id in links and "models:/recsys/1" in links
    assert failing_run.runs["nanmf"].info.run_id in links


def test_mlflow_runs_link_prefect_and_keep_real_times(failing_run: FailingRun) -> None:
    parent = failing_run.runs["pipeline"]
    flow_run_id = str(failing_run.state.state_details.flow_run_id)
    assert parent.data.tags["prefect.flow_run_id"] == flow_run_id
    assert parent.data.tags["prefect.flow_run_url"].endswith(f"/runs/flow-run/{flow_run_id}")
    assert parent.data.tags["gnnrec.owner.pid"].isdigit()

    trials = {t.number: t for t in _study_trials(failing_run.storage, "mf")}
    mf_trial_runs = [r for r in failing_run.runs["trials"] if r.data.tags[TAG_FAMILY] == "mf"]
    assert len(mf_trial_runs) == 2
    for run in mf_trial_runs:
        trial = trials[int(run.data.tags["optuna.trial"])]
        assert run.info.start_time == int(trial.datetime_start.timestamp() * 1000)
        assert run.info.end_time == int(trial.datetime_complete.timestamp() * 1000)
        assert run.info.start_time < run.info.end_time


def test_curves_and_final_metrics_have_distinct_names_and_plots_one_name(failing_run: FailingRun) -> None:
    client = failing_run.client
    mf = failing_run.runs["mf"]
    metrics = mf.data.metrics
    assert "valid_ndcg_at_20" in metrics and "test_ndcg_at_20" in metrics
    assert "ndcg_at_20" not in metrics and "loss" not in metrics  # no bare per-epoch names any more
    epochs = int(metrics["epochs_run"])
    assert len(client.get_metric_history(mf.info.run_id, "epoch_valid_ndcg_at_20")) == epochs
    assert len(client.get_metric_history(mf.info.run_id, "epoch_loss")) == epochs
    assert [a.path for a in client.list_artifacts(mf.info.run_id, "plots")] == ["plots/training_curve.png"]


def test_every_model_failing_fails_the_flow_and_closes_every_run(prefect_harness, tmp_path, monkeypatch):
    from flows.train_and_promote import train_and_promote

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(MODELS, "nanmf", NanMF)
    monkeypatch.setitem(MODELS, "badmf", BadHparamsMF)
    config = write_settings(tmp_path)
    params = tiny_params(config).model_copy(update={"models": ("nanmf", "badmf"), "epochs": 2})
    state = train_and_promote(params, return_state=True)
    assert state.is_failed()
    assert "Every model failed, nothing was registered: nanmf: FloatingPointError" in state.message
    assert "badmf: TypeError" in state.message

    settings = load_mlflow_settings(config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name("gnnrec-test")
    statuses = {
        r.data.tags.get(TAG_FAMILY, r.data.tags[TAG_ROLE]): r.info.status
        for r in client.search_runs([experiment.experiment_id])
    }
    assert statuses == {"pipeline": "FAILED", "nanmf": "FAILED", "badmf": "FAILED"}
    assert client.search_model_versions("name = 'recsys'") == []
