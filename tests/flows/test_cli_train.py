"""``gnnrec train`` end to end on a small CSV dataset written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_train import parse_hparams

runner = CliRunner()


def write_interactions(folder: Path, *, bad: bool = False) -> Path:
    """60 users with two taste groups over 40 items, 12 distinct items each."""
    rng = np.random.default_rng(0)
    rows = ["user,item,rating"]
    for user in range(1, 61):
        group = user % 2
        pool = np.arange(1, 21) if group == 0 else np.arange(21, 41)
        for item in rng.choice(pool, size=12, replace=False):
            rows.append(f"{user},{item},{rng.integers(1, 6)}")
    if bad:
        rows.append(rows[-1])  # a duplicated (user, item) row breaks the contract
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("model", ["mf", "lightgcn", "ngcf"])
def test_train_prints_one_json_object(tmp_path, model):
    folder = write_interactions(tmp_path / "data")
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            model,
            "--dataset",
            "csv",
            "--data-dir",
            str(folder),
            "--epochs",
            "3",
            "--device",
            "cpu",
            "-p",
            "embedding_dim=16",
            "--batch-size",
            "128",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == model and payload["hparams"]["embedding_dim"] == 16
    assert payload["dataset"]["users"] == 60 and payload["split"]["method"] == "random"
    for part in ("valid", "test"):
        assert 0.0 <= payload[part]["recall@20"] <= 1.0
        assert payload[part]["users_evaluated"] > 0
        assert "ndcg@10" in payload["popularity"][part]
    assert payload["epochs_run"] == 3 and payload["seconds_per_epoch"] > 0
    assert payload["evaluation_seconds"]["test"] > 0
    assert payload["peak_memory"]["rss_mib"] > 10
    assert payload["peak_memory"]["cuda_allocated_mib"] is None or payload["device"].startswith("cuda")


@pytest.mark.parametrize(("model", "hparam"), [("ease", "l2=20"), ("itemknn", "topk=10")])
def test_closed_form_model_trains_once_and_beats_popularity(tmp_path, model, hparam):
    folder = write_interactions(tmp_path / "data")
    args = ["train", "--model", model, "--dataset", "csv", "--data-dir", str(folder), "-p", hparam]
    result = runner.invoke(app, [*args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == model and payload["stop_reason"] == "closed_form"
    assert payload["epochs_run"] == 1 and payload["peak_memory"]["rss_mib"] > 10
    assert payload["test"]["recall@10"] > payload["popularity"]["test"]["recall@10"]


def test_training_on_this_data_beats_popularity(tmp_path):
    folder = write_interactions(tmp_path / "data")
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "lightgcn",
            "--dataset",
            "csv",
            "--data-dir",
            str(folder),
            "--epochs",
            "40",
            "--lr",
            "0.01",
            "--batch-size",
            "128",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["test"]["recall@10"] > payload["popularity"]["test"]["recall@10"]


def test_unknown_model_exits_2_and_lists_models(tmp_path):
    result = runner.invoke(
        app, ["train", "--model", "lightgnc", "--dataset", "csv", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "lightgnc" in result.output and "lightgcn" in result.output and "ngcf" in result.output


def test_unknown_hyperparameter_exits_2(tmp_path):
    folder = write_interactions(tmp_path / "data")
    result = runner.invoke(
        app, ["train", "--model", "mf", "--dataset", "csv", "--data-dir", str(folder), "-p", "num_layers=2"]
    )
    assert result.exit_code == 2
    assert "num_layers" in result.output and "embedding_dim" in result.output


def test_broken_contract_exits_1(tmp_path):
    folder = write_interactions(tmp_path / "data", bad=True)
    result = runner.invoke(
        app,
        ["train", "--model", "mf", "--dataset", "csv", "--data-dir", str(folder), "--epochs", "1", "--json"],
    )
    assert result.exit_code == 1, result.output
    assert "contract" in json.loads(result.stdout)


def test_parse_hparams():
    assert parse_hparams(["num_layers=2", "alpha=[0.5, 0.5, 0]", "name=abc"]) == {
        "num_layers": 2,
        "alpha": [0.5, 0.5, 0],
        "name": "abc",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_hparams(["oops"])


def test_metric_must_be_computed(tmp_path):
    result = runner.invoke(
        app,
        ["train", "--model", "mf", "--dataset", "csv", "--data-dir", str(tmp_path), "--metric", "ndcg@50"],
    )
    assert result.exit_code == 2
    assert "ndcg@50" in result.output


def _train(folder: Path, *args: str):
    common = [
        "train",
        "--dataset",
        "csv",
        "--data-dir",
        str(folder),
        "--device",
        "cpu",
        "--batch-size",
        "128",
    ]
    return runner.invoke(app, [*common, *args])


def test_cold_users_split_reports_new_users_scored_from_their_history(tmp_path):
    folder = write_interactions(tmp_path / "data")
    result = _train(
        folder, "--model", "mf", "--split", "cold-users", "--cold-fraction", "0.2", "--epochs", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    split = payload["split"]
    assert split["method"] == "cold-users" and split["history_users"] == 12
    assert split["valid_users"] == split["test_users"] == 6
    assert payload["test"]["history_users"] == payload["test"]["users_evaluated"] == 6
    assert payload["new_users"].startswith("fold-in")
    assert payload["popularity"]["test"]["users_evaluated"] == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "cold-users", "--cold-fraction", "0.01"], "needs at least two new users"),
        (["--split", "cold-users", "--cold-fraction", "1.5"], "cold_fraction"),
        (["--split", "cold-items"], "'mf' cannot score items unseen in training"),
    ],
)
def test_unusable_cold_splits_exit_2_with_one_message(tmp_path, args, message):
    folder = write_interactions(tmp_path / "data")
    result = _train(folder, "--model", "mf", "--epochs", "1", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


@pytest.mark.parametrize("model", ["pinsage", "graphsage"])
def test_an_option_that_needs_timestamps_is_refused_on_data_without_them(tmp_path, model):
    folder = write_interactions(tmp_path / "data")  # user,item,rating: no timestamps
    result = _train(folder, "--model", model, "--epochs", "1", "-p", "context=older")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"{model} cannot run on dataset 'csv': needs timestamps (for its hyperparameters)" in message
    assert "Traceback" not in result.output


def _lightgcn_args(folder: Path) -> list[str]:
    return [
        "train",
        "--model",
        "lightgcn",
        "--dataset",
        "csv",
        "--data-dir",
        str(folder),
        "--epochs",
        "40",
        "--lr",
        "0.01",
        "--batch-size",
        "128",
        "--device",
        "cpu",
        "--json",
    ]


@pytest.mark.distributed
def test_nproc_2_trains_in_two_processes_and_prints_one_json_object(tmp_path):
    folder = write_interactions(tmp_path / "data")
    result = runner.invoke(app, [*_lightgcn_args(folder), "--nproc", "2"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["processes"] == 2 and payload["epochs_run"] <= 40
    assert payload["test"]["recall@10"] > payload["popularity"]["test"]["recall@10"]


@pytest.mark.distributed
def test_torchrun_launch_trains_and_only_rank_0_prints(tmp_path):
    import os
    import subprocess
    import sys

    folder = write_interactions(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*launcher, "-m", "flows.cli", *_lightgcn_args(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)  # one JSON object: the other rank printed nothing
    assert payload["processes"] == 2
    assert payload["test"]["recall@10"] > payload["popularity"]["test"]["recall@10"]


@pytest.mark.parametrize("model", ["ease", "itemknn"])
def test_nproc_is_refused_for_closed_form_models(tmp_path, model):
    folder = write_interactions(tmp_path / "data")
    args = ["train", "--model", model, "--dataset", "csv", "--data-dir", str(folder), "--nproc", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{model} cannot be trained by 2 processes" in result.output and "closed form" in result.output
