"""``gnnrec run`` and ``gnnrec retrain``: the shared data options, exit codes 0/1/2 and the JSON outcome."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.main import get_command
from typer.testing import CliRunner

from flows.cli import app
from tasks.register import load_mlflow_settings

runner = CliRunner()

SHARED = {
    "--dataset",
    "--data-dir",
    "--recbole-name",
    "--min-rating",
    "--k-core",
    "--aggregate-duplicates",
    "--no-download",
    "--min-interactions",
    "--split",
    "--ratios",
    "--seed",
    "--json",
    "--users",
    "--items",
    "--interactions",
}


def write_settings(folder: Path) -> Path:
    path = folder / "mlflow.yml"
    path.write_text(
        "tracking_uri: sqlite:///store/mlflow.db\nartifact_location: store/artifacts\n"
        "registered_model_name: cli\nstudy_storage: sqlite:///store/optuna.db\n"
    )
    return path


@pytest.fixture(autouse=True)
def _prefect_logging_outside_the_runner() -> None:
    """Let Prefect set up its log handlers before any ``CliRunner`` call.

    Prefect binds its console handler to ``sys.stderr`` when it is first imported; inside ``CliRunner`` that
    is the runner's buffer, closed when the call returns, and the next flow's logs would fail to print.
    (A real ``gnnrec`` process runs one command, so this only concerns several invocations in one test.)
    """
    import prefect.main  # noqa: F401


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("name", ["run", "retrain"])
def test_run_and_retrain_share_the_data_options(name: str) -> None:
    command = get_command(app).commands[name]  # type: ignore[attr-defined]
    data = get_command(app).commands["data"].commands["stats"]  # type: ignore[attr-defined]
    flags = {flag: p for p in command.params for flag in p.opts}
    assert SHARED <= set(flags)
    for p in data.params:  # same flags and help text as `gnnrec data stats`
        if p.opts[0] in flags:
            assert flags[p.opts[0]].help == p.help, p.opts
    # every pipeline setting defaults to "not given": the values in effect come from PipelineParams
    settings = {
        "--users",
        "--interactions",
        "--trials",
        "--epochs",
        "--lr",
        "--dataset",
        "--ratios",
        "--seed",
    }
    assert all(flags[flag].default is None for flag in settings if flag in flags)
    assert "exit" in (command.help or "").lower()


@pytest.mark.parametrize("name", ["run", "retrain"])
def test_unusable_options_exit_2_before_any_work(name: str, tmp_path: Path) -> None:
    config = str(write_settings(tmp_path))
    bad_ratios = invoke(name, "--ratios", "0.5", "0.1", "0.1", "--mlflow-config", config)
    assert bad_ratios.exit_code == 2
    assert "Invalid option" in bad_ratios.stderr and "sum to 1" in bad_ratios.stderr
    bad_model = invoke(name, "--models", "mf,lightgnc", "--mlflow-config", config)
    assert bad_model.exit_code == 2
    assert "lightgnc" in bad_model.stderr and "lightgcn" in bad_model.stderr
    missing = invoke(name, "--mlflow-config", str(tmp_path / "nope.yml"))
    assert missing.exit_code == 2 and "nope.yml" in missing.stderr
    assert not (tmp_path / "store").exists()


def write_interactions(folder: Path, *, duplicates: int) -> Path:
    """20 users x 10 items as interactions.csv, the first ``duplicates`` rows repeated."""
    rows = [(u, (u * 3 + k) % 30 + 1) for u in range(1, 21) for k in range(10)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows + rows[:duplicates], columns=["user", "item"]).to_csv(
        folder / "interactions.csv", index=False
    )
    return folder


@pytest.mark.slow
def test_contract_failure_exits_1_and_missing_files_exit_2(
    prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_settings(tmp_path)
    folder = write_interactions(tmp_path / "bad", duplicates=4)
    common = ["--dataset", "csv", "--models", "mf", "--mlflow-config", str(config)]

    broken = invoke("run", *common, "--data-dir", str(folder), "--json")
    assert broken.exit_code == 1, broken.output
    contract = json.loads(broken.stdout)["contract"]
    assert contract["success"] is False and contract["failed"] >= 1
    assert any(r["expectation"] == "expect_compound_columns_to_be_unique" for r in contract["results"])

    readable = invoke("retrain", *common, "--data-dir", str(folder))
    assert readable.exit_code == 1
    assert "FAILED" in readable.stdout and "expect_compound_columns_to_be_unique" in readable.stdout

    missing = invoke("run", *common)  # csv without --data-dir
    assert missing.exit_code == 2
    assert "--data-dir" in missing.stderr and "Traceback" not in missing.stderr

    settings = load_mlflow_settings(config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert client.search_registered_models() == []
    import optuna  # the store's schema is created up front (once, under a lock), but no study is

    storage = settings.study_storage
    assert optuna.get_all_study_names(storage) == []


@pytest.mark.slow
def test_run_json_with_the_shared_data_options(prefect_harness, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_settings(tmp_path)
    folder = write_interactions(tmp_path / "dup", duplicates=4)
    result = invoke(
        "run",
        *("--dataset", "csv", "--data-dir", str(folder), "--aggregate-duplicates", "--split", "loo"),
        *("--models", "mf", "--trials", "1", "--epochs", "2", "--batch-size", "64", "--device", "cpu"),
        *("--seed", "3", "--mlflow-config", str(config), "--json"),
        *("--train-space", '{"negative_sampler": ["hard"], "sampler_pool_size": [4]}'),
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [row["model"] for row in out["leaderboard"]] == ["mf"]
    assert out["decision"]["promoted"] is True and out["champion"] == "models:/cli@champion"
    assert out["metric"] == "ndcg@20" and out["seconds"] > 0
    settings = load_mlflow_settings(config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    params = client.get_run(out["parent_run_id"]).data.params
    assert (params["split.method"], params["split.seed"], params["seed"]) == ("loo", "3", "3")
    assert (params["data.dataset"], params["data.aggregate_duplicates"]) == ("csv", "True")
    # PipelineParams' default (torch's own count, here OMP_NUM_THREADS=1 from conftest), as applied
    assert (params["threads"], params["torch_threads"]) == ("None", "1")
    (child,) = client.search_runs(
        [client.get_run(out["parent_run_id"]).info.experiment_id], "tags.`gnnrec.role` = 'model'"
    )
    trained_with = child.data.params  # the final model was trained with the searched training settings
    assert (trained_with["train.negative_sampler"], trained_with["train.sampler_pool_size"]) == ("hard", "4")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["hard"]', "JSON object"),
        ('{"epochs": [1, 2]}', "cannot be searched"),
        ('{"negative_sampler": ["hardest"]}', "negative_sampler"),
    ],
)
def test_run_rejects_a_bad_train_space_before_any_work(space: str, message: str, tmp_path: Path) -> None:
    result = invoke("run", "--train-space", space, "--mlflow-config", str(write_settings(tmp_path)))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_run_takes_the_pruner_and_the_patience_and_refuses_an_unknown_pruner(tmp_path: Path) -> None:
    import yaml

    shown = yaml.safe_load(invoke("run", "--pruner", "hyperband", "--patience", "7", "--show-config").stdout)
    assert (shown["pruner"], shown["patience"]) == ("hyperband", 7)
    assert yaml.safe_load(invoke("run", "--show-config").stdout)["pruner"] == "asha"
    result = invoke("run", "--pruner", "bogus", "--mlflow-config", str(write_settings(tmp_path)))
    assert result.exit_code == 2 and "pruner" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("root", "own", "expected"),
    [
        ((), (), None),  # PipelineParams' default: torch's own thread count (make run passes --threads 1)
        (("--threads", "3"), (), 3),  # `gnnrec --threads 3 run` is kept
        (("--threads", "3"), ("--threads", "2"), 2),  # the command's own option wins when given
    ],
)
def test_run_threads_follow_the_config_and_keep_the_root_option(
    root: tuple[str, ...], own: tuple[str, ...], expected: int | None, tmp_path: Path, monkeypatch
) -> None:
    import torch

    import flows.cli_pipeline as cli_pipeline

    seen: list[tuple[int, int | None]] = []

    def fake_flow(params):  # stands in for the flow: only the thread count at its start matters here
        seen.append((torch.get_num_threads(), params.threads))
        raise SystemExit(0)

    monkeypatch.setattr("flows.train_and_promote.train_and_promote", fake_flow)
    settings = SimpleNamespace(study_storage=f"sqlite:///{tmp_path / 'optuna.db'}")  # probed before the flow
    monkeypatch.setattr(cli_pipeline, "load_settings", lambda path: settings)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = runner.invoke(app, [*root, "run", *own, "--mlflow-config", str(write_settings(tmp_path))])
        assert result.exit_code == 0, result.output
        assert seen == [(expected or 2, expected)]  # set here, and passed on for the flow to set and record
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_run_refuses_models_the_data_cannot_feed_up_front_and_names_each(
    prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    """Runnable and unrunnable models mixed: exit 2 before any tuning, one paragraph naming each refusal."""
    monkeypatch.chdir(tmp_path)
    config = write_settings(tmp_path)
    folder = write_interactions(tmp_path / "plain", duplicates=0)  # interactions only: no friends, no KG
    result = invoke(
        "run",
        *("--dataset", "csv", "--data-dir", str(folder), "--models", "mf,sociallgn,lightgcn,kgat"),
        *("--trials", "1", "--epochs", "1", "--device", "cpu", "--mlflow-config", str(config)),
    )
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert "sociallgn cannot run on dataset 'csv': needs social" in message
    assert "kgat cannot run on dataset 'csv'" in message and "needs kg" in message
    assert "mf cannot" not in message and "lightgcn cannot" not in message
    assert "Traceback" not in result.output
    # refused before any tuning or training: no MLflow run, no registered model, no Optuna study
    settings = load_mlflow_settings(config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name(settings.experiment_name)
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
    import optuna

    assert optuna.get_all_study_names(settings.study_storage) == []
