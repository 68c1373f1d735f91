from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tasks.evaluate import evaluate, popularity_metrics
from tasks.train import (
    TrainConfig,
    TrainedModel,
    draw_by_user,
    group_by_user,
    resolve_device,
    set_threads,
    train,
)
from tests.models.planted import planted


@pytest.fixture(scope="module")
def data():
    _, split, graphs = planted()
    return split, graphs


def _config(**overrides) -> TrainConfig:
    base = {
        "model": "lightgcn",
        "hparams": {"embedding_dim": 16, "num_layers": 2},
        "epochs": 8,
        "batch_size": 256,
        "lr": 0.01,
        "device": "cpu",
        "seed": 1,
        "progress": False,
    }
    return TrainConfig(**{**base, **overrides})


def _assert_same_model(a: TrainedModel, b: TrainedModel) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(
    ("model", "hparams"),
    [
        ("mf", {"embedding_dim": 16}),
        ("lightgcn", {"embedding_dim": 16, "num_layers": 2}),
        ("ngcf", {"embedding_dim": 8, "num_layers": 2, "node_dropout": 0.1}),
    ],
)
def test_loss_falls_and_history_is_complete(data, model, hparams):
    split, graphs = data
    result = train(graphs, split, _config(model=model, hparams=hparams, epochs=5, patience=100))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == result.epochs_run == 5
    assert losses[-1] < losses[0]
    for h in result.history:
        assert {"epoch", "loss", "seconds", "ndcg@20", "recall@10", "eval_seconds"} <= set(h)
    assert result.best_valid is not None
    assert result.best_valid["ndcg@20"] == max(h["ndcg@20"] for h in result.history)
    assert result.history[result.best_epoch - 1]["ndcg@20"] == result.best_valid["ndcg@20"]
    assert not result.model.training
    assert result.seconds_per_epoch > 0 and result.device == "cpu"


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "lightgcn"},
        {"model": "ngcf", "hparams": {"embedding_dim": 8, "message_dropout": 0.3, "node_dropout": 0.2}},
        {"model": "mf", "negative_sampler": "hard", "num_negatives": 2, "hparams": {}},
        {"model": "lightgcn", "loss": "softmax", "negative_sampler": "popularity", "num_negatives": 4},
    ],
)
def test_same_seed_gives_identical_runs(data, overrides):
    split, graphs = data
    config = _config(epochs=3, **overrides)
    a, b = train(graphs, split, config), train(graphs, split, config)
    _assert_same_model(a, b)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = train(graphs, split, config.model_copy(update={"seed": 2}))
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_training_leaves_the_global_rng_alone(data):
    split, graphs = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(graphs, split, _config(epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_lightgcn_beats_popularity_on_planted_data(data):
    split, graphs = data
    result = train(graphs, split, _config(epochs=40, patience=5))
    test = evaluate(result.model, split, "test")
    floor = popularity_metrics(split, "test")
    assert test["ndcg@20"] > 1.5 * floor["ndcg@20"]
    assert test["recall@20"] > 1.3 * floor["recall@20"]


def test_early_stopping_stops_after_patience(data):
    split, graphs = data
    result = train(
        graphs, split, _config(model="mf", hparams={"reg_weight": 0.0}, lr=0.05, epochs=200, patience=3)
    )
    assert result.stop_reason == "early_stopping"
    assert result.epochs_run < 200
    assert result.epochs_run == result.best_epoch + 3
    assert result.best_valid is not None
    after_best = [h["ndcg@20"] for h in result.history[result.best_epoch :]]
    assert all(v <= result.best_valid["ndcg@20"] for v in after_best)
    # The returned model is the best state, not the last one.
    assert evaluate(result.model, split, "valid")["ndcg@20"] == pytest.approx(result.best_valid["ndcg@20"])


def test_eval_every_and_on_epoch_calls(data):
    split, graphs = data
    calls: list[tuple[int, dict[str, float]]] = []
    result = train(
        graphs,
        split,
        _config(epochs=7, eval_every=3, patience=100),
        on_epoch=lambda e, r: calls.append((e, r)),
    )
    assert [e for e, _ in calls] == [3, 6, 7]
    assert all("ndcg@20" in r and "loss" in r for _, r in calls)
    assert [("ndcg@20" in h) for h in result.history] == [False, False, True, False, False, True, True]


def test_on_epoch_exception_propagates(data):
    split, graphs = data

    class Pruned(Exception):
        pass

    def prune(epoch, record):
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train(graphs, split, _config(epochs=5), on_epoch=prune)


def test_resume_after_interruption_continues_identically(data, tmp_path):
    split, graphs = data
    config = _config(
        model="ngcf",
        hparams={"embedding_dim": 8, "message_dropout": 0.2, "node_dropout": 0.2},
        epochs=6,
        patience=100,
    )
    straight = train(graphs, split, config)

    class Interrupt(Exception):
        pass

    def stop_at_3(epoch, record):
        if epoch == 3:
            raise Interrupt

    path = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        train(graphs, split, config, checkpoint_path=path, on_epoch=stop_at_3)
    assert path.exists()
    resumed = train(graphs, split, config, checkpoint_path=path, resume=True)
    assert resumed.epochs_run == 6 and len(resumed.history) == 6
    _assert_same_model(straight, resumed)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    assert resumed.best_epoch == straight.best_epoch


def test_resume_with_more_epochs_extends_a_finished_run(data, tmp_path):
    split, graphs = data
    path = tmp_path / "ckpt.pt"
    straight = train(graphs, split, _config(epochs=5, patience=100))
    train(graphs, split, _config(epochs=2, patience=100), checkpoint_path=path)
    extended = train(graphs, split, _config(epochs=5, patience=100), checkpoint_path=path, resume=True)
    _assert_same_model(straight, extended)


def test_resume_refuses_another_model(data, tmp_path):
    split, graphs = data
    path = tmp_path / "ckpt.pt"
    train(graphs, split, _config(epochs=1), checkpoint_path=path)
    with pytest.raises(ValueError, match="lightgcn"):
        train(
            graphs, split, _config(epochs=2, hparams={"embedding_dim": 32}), checkpoint_path=path, resume=True
        )


def test_without_validation_runs_all_epochs_and_keeps_the_last_state(data):
    split, graphs = data
    no_valid = dataclasses.replace(split, valid=np.zeros((0, 2), np.int64))
    calls = []
    result = train(graphs, no_valid, _config(epochs=4, patience=1), on_epoch=lambda e, r: calls.append(e))
    assert result.epochs_run == 4 and result.best_epoch == 4
    assert result.best_valid is None and calls == []
    assert all("ndcg@20" not in h for h in result.history)


def test_max_seconds_stops_early(data):
    split, graphs = data
    result = train(graphs, split, _config(epochs=500, max_seconds=0.01, patience=1000))
    assert result.stop_reason == "max_seconds"
    assert result.epochs_run < 500
    assert result.best_valid is not None  # the stopping epoch is evaluated


def test_progress_off_a_terminal_is_one_plain_line_per_evaluation(data, capsys):
    split, graphs = data
    result = train(graphs, split, _config(epochs=2, progress=True))
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays clean (--json)
    lines = captured.err.splitlines()
    assert len(lines) == result.epochs_run == 2 and "\x1b" not in captured.err  # no bar escape codes
    assert all(line.startswith(f"{result.config.model} epoch ") for line in lines)


def test_config_validation():
    with pytest.raises(ValidationError, match="device"):
        TrainConfig(device="gpu")
    with pytest.raises(ValidationError):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError, match="ndcg@50"):
        TrainConfig(metric="ndcg@50")
    with pytest.raises(ValidationError, match="auc@10"):
        TrainConfig(metric="auc@10")
    with pytest.raises(ValidationError):
        TrainConfig(learning_rate=0.1)  # type: ignore[call-arg]
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


def test_set_threads_applies_a_count_or_leaves_the_setting() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 == torch.get_num_threads()
        assert set_threads(None) == 2  # left as it was
        assert set_threads(1) == 1 == torch.get_num_threads()
        with pytest.raises(ValueError, match="at least 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_unknown_model_is_reported(data):
    split, graphs = data
    with pytest.raises(ValueError, match="Available models"):
        train(graphs, split, _config(model="gcn-but-typo"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda(data):
    split, graphs = data
    result = train(graphs, split, _config(epochs=2, device="cuda"))
    assert result.device.startswith("cuda")
    assert next(result.model.parameters()).is_cuda


def test_user_uniform_draws_are_training_pairs_and_users_are_equally_likely():
    pairs = torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [2, 0], [3, 7], [3, 1]])
    groups = group_by_user(pairs, num_users=5)
    users, items = draw_by_user(groups, 30_000, torch.Generator().manual_seed(0))
    drawn = set(zip(users.tolist(), items.tolist(), strict=True))
    assert drawn == {tuple(p) for p in pairs.tolist()}  # every pair reachable, nothing else
    share = torch.bincount(users, minlength=5).double() / len(users)
    assert share[[1, 4]].sum() == 0  # users without training items are never drawn
    assert torch.allclose(share[[0, 2, 3]], torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)


def test_user_uniform_sampling_trains_deterministically(data):
    split, graphs = data
    config = _config(epochs=3, sampling="users")
    a, b = train(graphs, split, config), train(graphs, split, config)
    _assert_same_model(a, b)
    assert a.history[-1]["loss"] < a.history[0]["loss"]
