"""Progress reporting: tune() calls back per evaluation and per trial with the numbers; train() prints a
line per evaluation off a terminal; ``gnnrec train --json`` keeps stdout JSON and reports on stderr."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.train import TrainConfig, _progress
from tasks.tune import TuneProgress, tune
from tests.tasks.test_tune import FakeTrainer, base_config, tiny_split


def test_tune_calls_back_per_evaluation_and_per_trial(tmp_path: Path) -> None:
    events: list[TuneProgress] = []
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    trainer = FakeTrainer(epochs=2)
    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=3,
        seed=1,
        train_fn=trainer,
        progress=events.append,
        pruner="median",  # it waits for two trials, so the first two run every epoch
    )
    kinds = [(e.event, e.trial, e.trials_done, e.epoch) for e in events]
    assert kinds == [
        ("evaluation", 0, 0, 1),
        ("evaluation", 0, 0, 2),
        ("trial", 0, 1, 2),
        ("evaluation", 1, 1, 1),
        ("evaluation", 1, 1, 2),
        ("trial", 1, 2, 2),
        ("evaluation", 2, 2, 1),
        ("evaluation", 2, 2, 2),
        ("trial", 2, 3, 2),
    ]
    assert {e.budget for e in events} == {3} and {e.model for e in events} == {"mf"}
    trials = [e for e in events if e.event == "trial"]
    assert [e.state for e in trials][:2] == ["COMPLETE", "COMPLETE"]  # the pruner waits for two trials
    assert trials[2].state in ("COMPLETE", "PRUNED")
    # The best so far is the running maximum of the completed trials' values.
    best, expected = None, []
    for e in trials:
        if e.state == "COMPLETE":
            best = e.value if best is None else max(best, e.value)
        expected.append(best)
    assert [e.best for e in trials] == expected
    assert trials[-1].best == pytest.approx(result.best_value)
    evaluation = events[0]
    assert evaluation.value == pytest.approx(trainer_value(trainer, 0, epoch=1)) and evaluation.best is None
    assert evaluation.line().startswith("mf trial 0 (0/3 done) epoch 1: ndcg@20 ")
    assert trials[0].line().startswith("mf trial 0 (1/3 done) COMPLETE: ndcg@20 ")

    # A rerun with nothing left to run reports nothing; a failing trial reports FAIL before it propagates.
    events.clear()
    tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=3,
        train_fn=trainer,
        progress=events.append,
    )
    assert events == []

    def broken(graphs, split, config, *, on_epoch=None):
        on_epoch(1, {"epoch": 1, "loss": 1.0, "ndcg@20": 0.5})
        raise FloatingPointError("the training loss of mf became nan at epoch 2")

    with pytest.raises(FloatingPointError):
        tune(
            None,
            tiny_split(),
            base_config(),
            study="s",
            storage=storage,
            n_trials=3,
            extra_trials=1,
            train_fn=broken,
            progress=events.append,
        )
    assert [(e.event, e.trial, e.state, e.best) for e in events] == [
        ("evaluation", 3, None, result.best_value),
        ("trial", 3, "FAIL", result.best_value),
    ]


def trainer_value(trainer: FakeTrainer, call: int, epoch: int) -> float:
    """The value FakeTrainer reported at ``epoch`` of its ``call``-th run."""
    import numpy as np

    config = trainer.calls[call][1]
    target = -abs(np.log10(config.hparams["reg_weight"]) + 3)
    return target * (1 + 1 / epoch)


def test_train_prints_a_line_per_evaluation_off_a_terminal(capsys) -> None:
    config = TrainConfig(model="mf", epochs=3, eval_every=2, device="cpu")
    with _progress(config, 0) as advance:
        advance({"epoch": 1.0, "loss": 0.7, "seconds": 0.1}, None)  # not evaluated: no line
        advance({"epoch": 2.0, "loss": 0.6, "seconds": 0.1, "ndcg@20": 0.25}, 0.25)
        advance({"epoch": 3.0, "loss": 0.5, "seconds": 0.1, "ndcg@20": 0.2}, 0.25)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "mf epoch 2/3: loss 0.6000, ndcg@20 0.2500 (best 0.2500), 0.1 s",
        "mf epoch 3/3: loss 0.5000, ndcg@20 0.2000 (best 0.2500), 0.1 s",
    ]
    with _progress(config.model_copy(update={"progress": False}), 0) as advance:
        advance({"epoch": 2.0, "loss": 0.6, "seconds": 0.1, "ndcg@20": 0.25}, math.inf)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_train_json_reports_progress_on_stderr_and_json_on_stdout(tmp_path: Path) -> None:
    from tests.flows.test_cli_train import write_interactions

    folder = write_interactions(tmp_path / "data")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from flows.cli import app; app()", "train", "--model", "mf"]
    command += ["--dataset", "csv", "--data-dir", str(folder), "--epochs", "4", "--device", "cpu", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)  # stdout is one JSON object and nothing else
    lines = [line for line in done.stderr.splitlines() if line.startswith("mf epoch ")]
    assert len(lines) == payload["epochs_run"] == 4
    assert lines[0].startswith("mf epoch 1/4: loss ") and "ndcg@20" in lines[0]
