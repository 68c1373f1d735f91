"""One source of defaults and one set of exit codes for ``run``, ``retrain``, ``train``, ``recommend``.

0 success, 1 the data broke its contract, 2 a usage error or unreadable input, 3 an infrastructure failure;
each failure is one paragraph on stderr, never a traceback, and an impossible request is refused before
any work starts (no store, no Prefect).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.pipeline_config import PipelineParams, retrain_defaults

runner = CliRunner()


@pytest.fixture(autouse=True)
def _prefect_logging_outside_the_runner() -> None:
    import prefect.main  # noqa: F401  (see tests/flows/test_cli_pipeline.py)


def settings_file(folder: Path, **extra: str) -> Path:
    lines = {
        "tracking_uri": "sqlite:///store/mlflow.db",
        "artifact_location": "store/artifacts",
        "study_storage": "sqlite:///store/optuna.db",
        **extra,
    }
    path = folder / "mlflow.yml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- one source of defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [("run", PipelineParams()), ("retrain", retrain_defaults())])
def test_without_flags_the_cli_uses_pipeline_params(
    name: str, expected: PipelineParams, monkeypatch, tmp_path: Path
) -> None:
    import flows.cli_pipeline as cli_pipeline

    seen: list[PipelineParams] = []
    monkeypatch.setattr(cli_pipeline, "_flow", lambda kind: lambda params: seen.append(params) or exit(0))
    # settings whose study storage the CLI probes before the flow (a fresh SQLite file)
    settings = SimpleNamespace(study_storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setattr(cli_pipeline, "load_settings", lambda path: settings)
    result = runner.invoke(app, [name])
    assert result.exit_code == 0, result.output
    assert seen == [expected]
    shown = invoke(name, "--show-config")
    assert yaml.safe_load(shown.stdout) == expected.model_dump(mode="json")


def test_config_file_then_flags_override_the_defaults(tmp_path: Path) -> None:
    config = tmp_path / "gnnrec.yml"
    config.write_text(
        "epochs: 7\nlr: 0.02\ndata: {dataset: synthetic, synthetic_users: 50}\nsplit: {seed: 4}\n"
    )
    shown = yaml.safe_load(invoke("run", "--config", str(config), "--epochs", "9", "--show-config").stdout)
    expected = PipelineParams(epochs=9, lr=0.02, data={"synthetic_users": 50}, split={"seed": 4})
    assert shown == expected.model_dump(mode="json")


def test_train_reads_the_same_defaults(monkeypatch) -> None:
    """``gnnrec train`` trains with PipelineParams' learning rate, batch size, epochs and patience."""
    import tasks.prepare

    captured: dict = {}

    def stop(config, splitting, **kwargs):
        captured.update(data=config, split=splitting)
        raise SystemExit(0)

    monkeypatch.setattr(tasks.prepare, "prepare_data", stop)
    result = runner.invoke(app, ["train", "--model", "mf", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert captured == {"data": PipelineParams().data, "split": PipelineParams().split}


def test_a_config_file_with_mistakes_reports_them_all(tmp_path: Path) -> None:
    config = tmp_path / "gnnrec.yml"
    config.write_text("split: {ratios: [0.5, 0.1, 0.1]}\nmetric: ndcg@50\nmodels: [mf, nope]\nepochs: 0\n")
    result = invoke("run", "--config", str(config))
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    for part in ("split.ratios", "sum to 1", "metric", "cut-off 50", "models.1", "nope", "epochs"):
        assert part in message, part
    not_yaml = tmp_path / "bad.yml"
    not_yaml.write_text("epochs: [1\n")
    assert invoke("run", "--config", str(not_yaml)).exit_code == 2


# ---- exit codes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["run", "retrain"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ratios", "0.5", "0.1", "0.1"), "sum to 1"),
        (("--models", "mf,lightgnc"), "lightgnc"),
        (("--dataset", "csv"), "data_dir"),
        (("--dataset", "csv", "--data-dir", "no/such/folder"), "does not exist"),
        (("--metric", "ndcg@50"), "cut-off 50"),
        (("--device", "tpu"), "device"),
    ],
)
def test_impossible_requests_exit_2_before_any_work(
    name: str, args: tuple, message: str, tmp_path: Path
) -> None:
    result = invoke(name, *args, "--mlflow-config", str(settings_file(tmp_path)))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "store").exists()  # nothing was created: refused before the store and Prefect


def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for args in (("run",), ("train", "--model", "mf")):
        result = invoke(
            *args,
            "--device",
            "cuda",
            *(("--mlflow-config", str(settings_file(tmp_path))) if args == ("run",) else ()),
        )
        assert result.exit_code == 2 and "CUDA is not available" in result.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("name", ["run", "retrain", "recommend", "serve"])
def test_unreachable_tracking_server_exits_3(name: str, tmp_path: Path) -> None:
    config = settings_file(tmp_path, tracking_uri=f"http://127.0.0.1:{closed_port()}")
    args = ("--user", "1") if name == "recommend" else ()
    result = invoke(name, *args, "--mlflow-config", str(config))
    assert result.exit_code == 3, result.output
    assert "unreachable" in result.stderr


@pytest.mark.parametrize("name", ["run", "recommend", "serve"])
def test_mlflow_yml_that_is_not_yaml_exits_3_and_a_missing_one_exits_2(name: str, tmp_path: Path) -> None:
    args = ("--user", "1") if name == "recommend" else ()
    broken = tmp_path / "mlflow.yml"
    broken.write_text("tracking_uri: [unclosed\n")
    result = invoke(name, *args, "--mlflow-config", str(broken))
    assert result.exit_code == 3 and "MLflow settings" in result.stderr
    missing = invoke(name, *args, "--mlflow-config", str(tmp_path / "nope.yml"))
    assert missing.exit_code == 2 and "nope.yml" in missing.stderr


@pytest.mark.parametrize("broken", ["database", "artifacts"])
def test_a_store_that_cannot_be_written_exits_3(broken: str, tmp_path: Path) -> None:
    """The database path is a folder, or the artifact folder's place is taken by a file (root ignores file
    modes, so a chmod-ed store would not fail here)."""
    (tmp_path / "store").mkdir()
    if broken == "database":
        (tmp_path / "store" / "mlflow.db").mkdir()
    else:
        (tmp_path / "store" / "artifacts").write_text("a file where the artifact folder should be")
    result = invoke("recommend", "--user", "1", "--mlflow-config", str(settings_file(tmp_path)))
    assert result.exit_code == 3, result.output
    assert "store" in result.stderr.lower()


def test_recommend_and_serve_without_a_champion_exit_2_with_the_fix(tmp_path: Path) -> None:
    config = str(settings_file(tmp_path))
    for args in (("recommend", "--user", "1"), ("serve", "--port", str(closed_port()))):
        result = invoke(*args, "--mlflow-config", config)
        assert result.exit_code == 2, result.output
        assert "no champion" in result.stderr.lower() and "gnnrec run" in result.stderr


def test_data_and_train_share_the_codes(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text('user,item\n1,2\n3\n"unterminated\n')
    for command in (("data", "validate"), ("train", "--model", "mf")):
        result = invoke(*command, "--dataset", "csv", "--data-dir", str(tmp_path))
        assert result.exit_code == 2 and "cannot be parsed" in result.stderr, result.output


@pytest.mark.slow
def test_run_on_a_malformed_file_exits_2_and_the_engine_logs_no_traceback(
    prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    import logging

    monkeypatch.chdir(tmp_path)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "interactions.csv").write_text('user,item\n1,2\n3\n"unterminated\n')
        result = invoke(
            "run",
            *("--dataset", "csv", "--data-dir", "bad", "--models", "mf", "--device", "cpu"),
            *("--mlflow-config", str(settings_file(tmp_path)), "--json"),
        )
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert result.exit_code == 2, result.output
    assert "cannot be parsed" in result.stderr and result.stderr.count("Error:") == 1
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert errors, "the engine logged the failure"
    assert all(r.exc_info is None and "Traceback" not in r.getMessage() for r in errors)
    assert json.loads(result.stdout or "{}") == {}
