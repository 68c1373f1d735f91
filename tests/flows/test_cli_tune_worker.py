"""``gnnrec tune-worker``: workers in processes of their own share one PostgreSQL study; wrong URLs exit 3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_common import EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE
from tasks.tune import OBJECTIVE_ATTR

runner = CliRunner()

#: A tiny synthetic run: 6 finished trials of mf, 3 epochs each, on one thread.
RUN_CONFIG = """\
data: {dataset: synthetic, synthetic_users: 60, synthetic_items: 80, synthetic_interactions: 1500}
models: [mf]
n_trials: 6
epochs: 3
metric: ndcg@20
ks: [10, 20]
device: cpu
"""


def run_config(folder: Path, storage: str) -> Path:
    path = folder / "run.yml"
    path.write_text(RUN_CONFIG + f"study_storage: {storage}\n")
    return path


def worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "--threads", "1", "tune-worker", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.mark.postgres
@pytest.mark.slow
def test_two_cli_workers_share_one_postgres_study(tmp_path: Path, postgres_db: str) -> None:
    config = run_config(tmp_path, postgres_db)
    # Two workers started together: each creates the study gnnrec run would use, or joins it.
    workers = [worker("--config", str(config), "--model", "mf", "--worker", str(n)) for n in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in workers]
    for proc, (_, err) in zip(workers, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    one, two = (json.loads(out) for out, _ in outputs)
    assert one["study"] == two["study"] and one["study"].startswith("mf-")
    study = optuna.load_study(study_name=one["study"], storage=postgres_db)
    done = finished(study)
    assert len(done) == 6 == one["trials_finished"] == two["trials_finished"]
    assert one["trials_finished_here"] + two["trials_finished_here"] == 6
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == 6  # no start-up trial drawn twice
    best = ("best_trial", "best_value", "best_params")
    assert {k: one[k] for k in best} == {k: two[k] for k in best}
    assert one["best_value"] == pytest.approx(study.best_value)
    assert study.user_attrs[OBJECTIVE_ATTR]["source"]["data"]["synthetic_users"] == 60
    # A third joins by name and storage alone (the study records the rest): the budget is met, so it runs
    # nothing and reads the same best.
    plain = postgres_db.replace("postgresql+psycopg2://", "postgresql://")  # the URL a user types
    third = worker("--study", one["study"], "--storage", plain, "--worker", "3")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err[-3000:]
    joined = json.loads(out)
    assert joined["trials_finished_here"] == 0 and joined["trials_finished"] == 6
    assert {k: joined[k] for k in best} == {k: one[k] for k in best}
    assert len(finished(optuna.load_study(study_name=one["study"], storage=postgres_db))) == 6


@pytest.mark.postgres
def test_without_a_study_the_studies_of_the_storage_are_listed(postgres_db: str) -> None:
    result = runner.invoke(app, ["tune-worker", "--storage", postgres_db])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "Give --study NAME" in result.output and "none yet" in result.output


@pytest.mark.postgres
def test_a_study_that_is_not_there_is_refused_naming_those_that_are(postgres_db: str) -> None:
    optuna.create_study(study_name="mf-other", storage=postgres_db)
    result = runner.invoke(app, ["tune-worker", "--study", "mf-nope", "--storage", postgres_db])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "No study mf-nope" in result.output and "mf-other" in result.output


def _bad_urls(server: str) -> list[tuple[str, str]]:
    from urllib.parse import urlsplit

    host = urlsplit(server).netloc
    return [
        ("postgresql://postgres@127.0.0.1:1/optuna", "Connection refused"),  # nothing listens on port 1
        (f"postgresql://{host}/gnnrec_no_such_database", "does not exist"),
        (f"postgresql+nodriver://{host}/postgres", "nodriver"),
    ]


@pytest.mark.postgres
def test_wrong_postgres_urls_exit_3_with_one_paragraph(postgres_server: str) -> None:
    for url, reason in _bad_urls(postgres_server):
        result = runner.invoke(app, ["tune-worker", "--study", "s", "--storage", url])
        assert result.exit_code == EXIT_INFRASTRUCTURE, (url, result.output)
        assert "Cannot open the Optuna study storage" in result.output and reason in result.output
        assert "Traceback" not in result.output


@pytest.mark.postgres
def test_gnnrec_run_with_a_wrong_study_storage_exits_3_before_any_work(
    tmp_path: Path, postgres_server: str
) -> None:
    (tmp_path / "mlflow.yml").write_text(
        f"tracking_uri: sqlite:///{tmp_path}/mlflow.db\nartifact_location: {tmp_path}/artifacts\n"
    )
    url, reason = _bad_urls(postgres_server)[1]
    config = run_config(tmp_path, url)
    result = runner.invoke(
        app, ["run", "--config", str(config), "--mlflow-config", str(tmp_path / "mlflow.yml")]
    )
    assert result.exit_code == EXIT_INFRASTRUCTURE, result.output
    assert "Cannot open the Optuna study storage" in result.output and reason in result.output
