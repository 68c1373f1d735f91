"""The pipeline finds the recipe: default training space, the hand-found prior first, pruning on epochs."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import numpy as np
import optuna
import pytest
from pydantic import ValidationError

from models import MODELS, get_model
from tasks.pipeline_config import PipelineParams
from tasks.split import Split
from tasks.train import TrainConfig
from tasks.tune import (
    DEFAULT_PRUNER,
    PRUNERS,
    check_train_space,
    first_rung,
    make_pruner,
    open_study,
    prior_params,
    tune,
    with_train_settings,
)


def tiny_split() -> Split:
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 12, 200), rng.integers(0, 15, 200)], axis=1), axis=0)
    rng.shuffle(pairs)
    n = len(pairs)
    return Split("random", 0, 12, 15, pairs[: n // 2], pairs[n // 2 : 3 * n // 4], pairs[3 * n // 4 :])


class CurveTrainer:
    """A fake train(): each trial's validation curve rises towards a ceiling set by its settings.

    The ceiling is highest at the hand-found recipe (hard negatives, ``init_std`` 0.003), so a trial far
    from it is bad at every epoch; ``seconds`` is slept per epoch to test the time budget.
    """

    def __init__(self, epochs: int, seconds: float = 0.0) -> None:
        self.epochs = epochs
        self.seconds = seconds
        self.calls: list[TrainConfig] = []
        self.epochs_run: list[int] = []

    @staticmethod
    def ceiling(config: TrainConfig) -> float:
        far = abs(math.log10(config.hparams["init_std"] / 0.003))
        return (0.3 if config.negative_sampler == "hard" else 0.2) - 0.05 * far

    def __call__(self, graphs: Any, split: Split, config: TrainConfig, *, on_epoch: Any = None) -> Any:
        self.calls.append(config)
        self.epochs_run.append(0)  # epochs trained by this call, counted as they end (a pruned one raises)
        top = self.ceiling(config)
        history: list[dict[str, float]] = []
        started = time.perf_counter()
        for epoch in range(1, min(self.epochs, config.epochs) + 1):
            time.sleep(self.seconds)
            self.epochs_run[-1] = epoch
            row = {"epoch": epoch, "loss": 1.0 / epoch, "ndcg@20": top * (1 - 0.5**epoch)}
            history.append(row)
            if on_epoch is not None:
                on_epoch(epoch, row)
            if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                break
        best = max(history, key=lambda r: r["ndcg@20"])
        return SimpleNamespace(
            history=history,
            best_epoch=int(best["epoch"]),
            best_valid=SimpleNamespace(values={"ndcg@20": best["ndcg@20"]}),
        )


# -- the default search space holds the settings that mattered by hand ----------------------------------


@pytest.mark.parametrize("model", ["lightgcn", "mf"])
def test_default_train_space_holds_the_recipe_settings(model: str) -> None:
    cls = get_model(model)
    space = cls.train_space()
    assert "hard" in space["negative_sampler"] and "uniform" in space["negative_sampler"]
    assert 32 in space["sampler_pool_size"]
    assert {1}.issubset(space["num_negatives"]) and len(space["num_negatives"]) > 1
    assert {"bpr", "softmax"} == set(space["loss"])
    assert 2048 in space["batch_size"] and len(space["batch_size"]) > 1
    assert 1.0 in space["lr_scale"]  # the learning rate moves with the batch size
    assert check_train_space(space) == space  # every value is one the trainer accepts
    init = cls.describe()["search_space"]["init_std"]  # the initial scale is a model hyperparameter
    assert init["low"] <= 0.003 <= init["high"] and init["log"]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_space_and_prior_are_valid(model: str) -> None:
    """Closed-form models search no training setting; every prior lies in its model's space."""
    cls = get_model(model)
    space = cls.train_space()
    assert check_train_space(space) == space
    if cls.closed_form:
        assert space == {} and cls.search_prior().train == {}
    prior = cls.search_prior()
    assert set(prior.hparams) <= set(cls.default_hparams())
    assert all(value in space[name] for name, value in prior.train.items())


def test_the_pipeline_searches_each_model_space_unless_told_otherwise() -> None:
    params = PipelineParams()
    assert params.train_space is None
    assert params.train_space_for("lightgcn") == get_model("lightgcn").train_space()
    assert params.train_space_for("ease") == {}
    assert PipelineParams(train_space={}).train_space_for("lightgcn") == {}
    given = {"negative_sampler": ["uniform", "hard"]}
    assert PipelineParams(train_space=given).train_space_for("mf") == given


def test_lr_scale_moves_the_learning_rate_with_the_square_root_of_the_batch() -> None:
    base = TrainConfig(model="mf", lr=1e-3, batch_size=2048, progress=False)
    same = with_train_settings(base, {}, {"lr_scale": 1.0, "batch_size": 2048})
    assert same.lr == pytest.approx(1e-3)
    double = with_train_settings(base, {}, {"lr_scale": 1.0, "batch_size": 8192})
    assert (double.lr, double.batch_size) == (pytest.approx(2e-3), 8192)
    half = with_train_settings(base, {}, {"lr_scale": 0.5})
    assert (half.lr, half.batch_size) == (pytest.approx(5e-4), 2048)
    assert with_train_settings(base, {}, {"batch_size": 8192}).lr == 1e-3  # no lr_scale: lr stays
    with pytest.raises(ValueError, match="lr_scale"):
        check_train_space({"lr_scale": [0.0]})
    with pytest.raises(ValueError, match="lr_scale"):
        check_train_space({"lr_scale": ["big"]})


# -- the first trial is the prior ------------------------------------------------------------------------


def test_the_first_trial_is_the_hand_found_recipe(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    trainer = CurveTrainer(epochs=4)
    base = TrainConfig(model="lightgcn", epochs=4, progress=False, device="cpu")
    space = get_model("lightgcn").train_space()
    result = tune(
        None,
        tiny_split(),
        base,
        study="prior",
        storage=storage,
        n_trials=3,
        seed=0,
        train_fn=trainer,
        train_space=space,
    )
    assert result.prior_enqueued and result.pruner == DEFAULT_PRUNER
    first = open_study("prior", storage, seed=0).trials[0]
    assert first.params == prior_params(get_model("lightgcn"), space, base)
    config = trainer.calls[0]
    assert config.hparams["init_std"] == 0.003 and config.hparams["reg_weight"] == 1e-5
    assert config.hparams["embedding_dim"] == 64 and config.hparams["num_layers"] == 3  # the defaults
    assert (config.negative_sampler, config.sampler_pool_size, config.sampling) == ("hard", 32, "users")
    assert (config.loss, config.num_negatives, config.batch_size) == ("bpr", 1, 2048)
    assert config.lr == pytest.approx(base.lr)
    assert len({c.model_dump_json() for c in trainer.calls}) == 3  # then it explores


def test_a_rerun_does_not_repeat_the_prior(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    base = TrainConfig(model="mf", epochs=3, progress=False, device="cpu")
    kwargs: dict[str, Any] = {"study": "again", "storage": storage, "seed": 0, "train_fn": CurveTrainer(3)}
    tune(None, tiny_split(), base, n_trials=1, **kwargs)
    tune(None, tiny_split(), base, n_trials=3, **kwargs)
    trials = open_study("again", storage, seed=0).trials
    prior = prior_params(get_model("mf"), {}, base)
    assert sum(t.params == prior for t in trials) == 1 and len(trials) == 3


def test_without_a_prior_the_sampler_starts() -> None:
    base = TrainConfig(model="mf", epochs=3, progress=False, device="cpu")
    result = tune(
        None,
        tiny_split(),
        base,
        study="s",
        storage=None,
        n_trials=2,
        seed=0,
        train_fn=CurveTrainer(3),
        prior=False,
    )
    assert not result.prior_enqueued


def test_the_prior_keeps_only_values_the_space_holds() -> None:
    """A run's own train space may leave the prior's values out: those are drawn, not forced."""
    base = TrainConfig(model="lightgcn", epochs=3, progress=False)
    params = prior_params(get_model("lightgcn"), {"negative_sampler": ["uniform", "popularity"]}, base)
    assert "train.negative_sampler" not in params and params["init_std"] == 0.003
    params = prior_params(get_model("lightgcn"), {"sampler_pool_size": [8, 32], "lr": [1e-3, 1e-2]}, base)
    assert params["train.sampler_pool_size"] == 32 and params["train.lr"] == base.lr


# -- pruning on epochs -----------------------------------------------------------------------------------


def test_pruner_choice_is_validated_and_matches_the_tuner() -> None:
    assert get_args(PipelineParams.model_fields["pruner"].annotation) == PRUNERS
    assert PipelineParams().pruner == DEFAULT_PRUNER == "asha"
    assert PipelineParams(pruner="median").pruner == "median"
    with pytest.raises(ValidationError, match="pruner"):
        PipelineParams(pruner="successive")
    with pytest.raises(ValueError, match="unknown pruner"):
        tune(
            None,
            tiny_split(),
            TrainConfig(model="mf", progress=False),
            study="x",
            storage=None,
            n_trials=1,
            pruner="successive",
            train_fn=CurveTrainer(2),
        )
    assert isinstance(make_pruner("asha", 300), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("hyperband", 300), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("median", 300), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("none", 300), optuna.pruners.NopPruner)
    assert (first_rung(300), first_rung(60), first_rung(10)) == (11, 2, 1)


def test_asha_stops_a_bad_trial_at_an_early_rung(tmp_path: Path) -> None:
    """The prior runs its 54 epochs; a far worse trial is stopped at a rung, after a few epochs."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    base = TrainConfig(model="mf", epochs=54, progress=False, device="cpu")
    space = {"negative_sampler": ["hard", "uniform"]}
    common: dict[str, Any] = {"storage": storage, "seed": 0, "train_space": space, "pruner": "asha"}
    trainer = CurveTrainer(epochs=54)
    tune(None, tiny_split(), base, study="asha", n_trials=1, train_fn=trainer, **common)
    study = open_study("asha", storage, seed=0)
    bad = {"embedding_dim": 64, "reg_weight": 1e-4, "init_std": 0.2, "train.negative_sampler": "uniform"}
    study.enqueue_trial(bad)
    result = tune(None, tiny_split(), base, study="asha", n_trials=2, train_fn=trainer, **common)
    trials = open_study("asha", storage, seed=0).trials
    assert trials[0].state.name == "COMPLETE" and trials[0].last_step == 54
    assert trials[1].params == bad and trials[1].state.name == "PRUNED"
    # stopped at a rung (epochs are the steps, numbered from 1): 2, 6 or 18 of 54 epochs
    assert trials[1].last_step in {2, 6, 18} and trainer.epochs_run[1] == trials[1].last_step
    assert result.n_pruned == 1 and result.best_trial == 0


def test_hyperband_stops_bad_trials_at_the_rungs_of_their_brackets(tmp_path: Path) -> None:
    """Hyperband splits trials into brackets with different first rungs; with the prior and eight ever worse
    trials, some bracket holds several, and the worse ones there stop at a rung."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    base = TrainConfig(model="mf", epochs=54, progress=False, device="cpu")
    common: dict[str, Any] = {
        "storage": storage,
        "seed": 0,
        "train_space": {"negative_sampler": ["hard", "uniform"]},
        "pruner": "hyperband",
        "train_fn": CurveTrainer(epochs=54),
    }
    tune(None, tiny_split(), base, study="hb", n_trials=1, **common)
    study = open_study("hb", storage, seed=0)
    for init_std in np.geomspace(0.02, 0.2, 8):  # each worse than the one before
        study.enqueue_trial(
            {
                "embedding_dim": 64,
                "reg_weight": 1e-4,
                "init_std": float(init_std),
                "train.negative_sampler": "uniform",
            }
        )
    result = tune(None, tiny_split(), base, study="hb", n_trials=9, **common)
    trials = open_study("hb", storage, seed=0).trials
    assert trials[0].state.name == "COMPLETE" and result.best_trial == 0
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and result.n_pruned == len(pruned)
    assert all(t.last_step in {2, 6, 18} for t in pruned)


def test_median_pruner_is_kept_as_an_option() -> None:
    trainer = CurveTrainer(epochs=6)
    result = tune(
        None,
        tiny_split(),
        TrainConfig(model="mf", epochs=6, progress=False),
        study="m",
        storage=None,
        n_trials=8,
        seed=0,
        train_fn=trainer,
        train_space={"negative_sampler": ["hard", "uniform"]},
        pruner="median",
    )
    assert result.pruner == "median" and result.n_trials == 8


def test_multi_fidelity_pruning_on_real_training() -> None:
    """The objective's real train() reports one value per validated epoch, and ASHA prunes on them."""
    from tasks.config import SplitConfig
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.split import split_dataset

    dataset = build_dataset(make_synthetic(num_users=60, num_items=80, num_interactions=1500, seed=2))
    split = split_dataset(dataset, SplitConfig(seed=2))
    graphs = build_graphs(dataset, split)
    base = TrainConfig(model="mf", epochs=27, progress=False, device="cpu", batch_size=256, patience=27)
    ended: list[tuple[str, int | None]] = []
    result = tune(
        graphs,
        split,
        base,
        study="real-asha",
        storage=None,
        n_trials=6,
        seed=0,
        train_space={"lr_scale": [1.0, 1e-4]},
        callbacks=[lambda study, trial: ended.append((trial.state.name, trial.last_step))],
    )
    assert result.n_trials == 6 and result.n_pruned >= 1 and result.pruner == "asha"
    assert ended[0] == ("COMPLETE", 27)  # the prior runs to the epoch cap
    assert all(step is not None and step < 27 for state, step in ended if state == "PRUNED")


# -- the time budget ---------------------------------------------------------------------------------------


def test_a_trial_stops_cleanly_when_the_tuning_time_is_up() -> None:
    """With 0.6 s of tuning and 0.1 s epochs, the first trial is cut after the epoch that passes the time,
    keeps its best value, and no trial starts that could not reach its first rung."""
    trainer = CurveTrainer(epochs=100, seconds=0.1)
    started = time.perf_counter()
    result = tune(
        None,
        tiny_split(),
        TrainConfig(model="mf", epochs=100, progress=False),
        study="t",
        storage=None,
        n_trials=50,
        seed=0,
        timeout_s=0.6,
        train_fn=trainer,
    )
    assert time.perf_counter() - started < 3.0
    assert trainer.calls[0].max_seconds is not None and trainer.calls[0].max_seconds <= 0.6
    assert trainer.epochs_run[0] < 100 and result.n_trials == len(trainer.calls) == 1
    assert result.best_trial == 0 and result.best_value > 0
