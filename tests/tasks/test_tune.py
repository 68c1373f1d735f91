from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from models import get_model
from tasks.split import Split
from tasks.train import TrainConfig
from tasks.tune import check_train_space, open_study, split_params, study_name, trial_settings_key, tune


def tiny_split() -> Split:
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 12, 200), rng.integers(0, 15, 200)], axis=1), axis=0)
    rng.shuffle(pairs)
    n = len(pairs)
    return Split("random", 0, 12, 15, pairs[: n // 2], pairs[n // 2 : 3 * n // 4], pairs[3 * n // 4 :])


@dataclass
class FakeTrainer:
    """Records what the objective passes to train(); scores each trial by a known function of its params."""

    epochs: int = 4
    calls: list = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.calls = []

    def __call__(self, graphs, split, config: TrainConfig, *, on_epoch=None):
        self.calls.append((split, config))
        target = -abs(np.log10(config.hparams["reg_weight"]) + 3)  # best at reg_weight = 1e-3
        history = []
        for epoch in range(1, self.epochs + 1):
            record = {"epoch": epoch, "loss": 1.0 / epoch, "ndcg@20": target * (1 + 1 / epoch)}
            history.append(record)
            if on_epoch is not None:
                on_epoch(epoch, record)
        return SimpleNamespace(
            history=history, best_epoch=self.epochs, best_valid=SimpleNamespace(values={"ndcg@20": target})
        )


def base_config() -> TrainConfig:
    return TrainConfig(model="mf", epochs=4, progress=False, device="cpu")


def test_study_resumes_from_storage_and_reruns_add_no_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'deep' / 'studies.db'}"
    trainer = FakeTrainer()
    first = tune(
        None, tiny_split(), base_config(), study="s", storage=storage, n_trials=3, seed=1, train_fn=trainer
    )
    assert (first.n_trials, first.n_new_trials) == (3, 3)
    assert len(trainer.calls) == 3

    again = tune(
        None, tiny_split(), base_config(), study="s", storage=storage, n_trials=3, seed=1, train_fn=trainer
    )
    assert (again.n_trials, again.n_new_trials) == (3, 0)
    assert again.best_params == first.best_params and again.best_value == first.best_value
    assert len(trainer.calls) == 3

    more = tune(
        None,
        tiny_split(),
        base_config(),
        study="s",
        storage=storage,
        n_trials=3,
        extra_trials=2,
        seed=1,
        train_fn=trainer,
    )
    assert (more.n_trials, more.n_new_trials) == (5, 2)
    assert more.best_value >= first.best_value
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 5


def test_objective_sees_no_test_part_and_merges_search_space_over_defaults() -> None:
    trainer = FakeTrainer()
    split = tiny_split()
    result = tune(None, split, base_config(), study="s", storage=None, n_trials=2, seed=3, train_fn=trainer)
    defaults = get_model("mf").default_hparams()
    for seen_split, config in trainer.calls:
        assert len(seen_split.test) == 0 and len(seen_split.valid) == len(split.valid)
        assert set(config.hparams) == set(defaults)
        assert config.epochs == 4 and config.model == "mf"
    assert set(result.best_hparams) == set(defaults)
    assert {k: result.best_hparams[k] for k in result.best_params} == result.best_params


def test_trials_store_their_history_and_bad_trials_are_pruned() -> None:
    trainer = FakeTrainer(epochs=6)
    histories: list[int] = []
    states: list[str] = []

    def callback(study, trial) -> None:
        histories.append(len(trial.user_attrs.get("history", [])))
        states.append(trial.state.name)

    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="p",
        storage=None,
        n_trials=12,
        seed=0,
        train_fn=trainer,
        callbacks=[callback],
    )
    assert result.n_trials == 12 and len(states) == 12
    assert "PRUNED" in states and result.n_pruned == states.count("PRUNED")
    for state, length in zip(states, histories, strict=True):
        assert length == 6 if state == "COMPLETE" else 1 <= length < 6


def test_same_seed_same_suggestions() -> None:
    a = tune(
        None, tiny_split(), base_config(), study="a", storage=None, n_trials=3, seed=5, train_fn=FakeTrainer()
    )
    b = tune(
        None, tiny_split(), base_config(), study="b", storage=None, n_trials=3, seed=5, train_fn=FakeTrainer()
    )
    assert a.best_params == b.best_params


def test_warm_start_is_the_first_new_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    warm = {"embedding_dim": 32, "reg_weight": 1e-3, "init_std": 0.05, "not_searched": 1}
    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="w",
        storage=storage,
        n_trials=1,
        seed=0,
        warm_start=warm,
        train_fn=FakeTrainer(),
    )
    assert result.warm_started and result.n_new_trials == 1
    first = open_study("w", storage, seed=0).trials[0]
    assert first.params == {"embedding_dim": 32, "reg_weight": 1e-3, "init_std": 0.05}


def test_real_training_in_the_objective() -> None:
    """The objective runs the very same train(): a real tiny MF, and a real validation value."""
    from tasks.config import SplitConfig
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.split import split_dataset

    dataset = build_dataset(make_synthetic(num_users=40, num_items=60, num_interactions=800, seed=1))
    split = split_dataset(dataset, SplitConfig(seed=1))
    graphs = build_graphs(dataset, split)
    config = TrainConfig(model="mf", epochs=2, progress=False, device="cpu", batch_size=256)
    result = tune(
        graphs,
        split,
        config,
        study=study_name(dataset.fingerprint, "k", "mf", trial_settings_key(config)),
        storage=None,
        n_trials=2,
        seed=0,
    )
    assert result.n_trials == 2 and 0.0 <= result.best_value <= 1.0
    assert result.study_name.startswith("mf-" + dataset.fingerprint)


def test_unknown_metric_is_an_error() -> None:
    config = base_config().model_copy(update={"metric": "recall@5"})
    with pytest.raises(KeyError, match="recall@5"):
        tune(None, tiny_split(), config, study="x", storage=None, n_trials=1, seed=0, train_fn=FakeTrainer())


class SamplerAwareTrainer(FakeTrainer):
    """Scores hard negatives above uniform ones, and a larger pool higher still."""

    def __call__(self, graphs, split, config: TrainConfig, *, on_epoch=None):
        out = super().__call__(graphs, split, config, on_epoch=on_epoch)
        bonus = 1.0 + config.sampler_pool_size / 100 if config.negative_sampler == "hard" else 0.0
        out.best_valid.values["ndcg@20"] += bonus
        return out


def test_train_space_is_searched_and_comes_back_apart_from_the_hparams() -> None:
    trainer = SamplerAwareTrainer()
    space = {"negative_sampler": ["uniform", "hard"], "sampler_pool_size": [4, 8]}
    result = tune(
        None,
        tiny_split(),
        base_config(),
        study="t",
        storage=None,
        n_trials=10,
        seed=0,
        train_fn=trainer,
        train_space=space,
    )
    seen = {(config.negative_sampler, config.sampler_pool_size) for _, config in trainer.calls}
    assert seen <= {(s, p) for s in space["negative_sampler"] for p in space["sampler_pool_size"]}
    assert len({s for s, _ in seen}) == 2  # both samplers were tried
    assert result.best_train == {"negative_sampler": "hard", "sampler_pool_size": 8}
    assert result.best_params["train.negative_sampler"] == "hard"
    assert set(result.best_hparams) == set(get_model("mf").default_hparams())  # no training setting leaks in
    for _, config in trainer.calls:
        assert config.lr == base_config().lr and config.epochs == 4  # what is not searched stays the run's


def test_without_a_train_space_trials_keep_the_run_settings() -> None:
    trainer = FakeTrainer()
    result = tune(
        None, tiny_split(), base_config(), study="n", storage=None, n_trials=2, seed=0, train_fn=trainer
    )
    assert result.best_train == {} and not any(k.startswith("train.") for k in result.best_params)
    assert {config.negative_sampler for _, config in trainer.calls} == {base_config().negative_sampler}


def test_train_space_checks_fields_and_values() -> None:
    assert check_train_space({"lr": (1e-3, 5e-3)}) == {"lr": [1e-3, 5e-3]}
    with pytest.raises(ValueError, match="'epochs' cannot be searched"):
        check_train_space({"epochs": [10, 20]})
    with pytest.raises(ValueError, match="not a valid 'negative_sampler'"):
        check_train_space({"negative_sampler": ["uniform", "hardest"]})
    with pytest.raises(ValueError, match="not a valid 'lr'"):
        check_train_space({"lr": [0.0]})
    with pytest.raises(ValueError, match="non-empty list"):
        check_train_space({"lr": []})
    with pytest.raises(ValueError, match="non-empty list"):
        check_train_space({"loss": "softmax"})
    assert split_params({"reg_weight": 1e-3, "train.lr": 0.01}) == ({"reg_weight": 1e-3}, {"lr": 0.01})


def test_warm_start_includes_searched_training_settings(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    warm = {"reg_weight": 1e-3, "train.negative_sampler": "hard", "train.lr": 0.5}  # lr is not searched
    tune(
        None,
        tiny_split(),
        base_config(),
        study="ws",
        storage=storage,
        n_trials=1,
        seed=0,
        warm_start=warm,
        train_fn=FakeTrainer(),
        train_space={"negative_sampler": ["uniform", "hard"]},
    )
    first = open_study("ws", storage, seed=0).trials[0]
    assert first.params["train.negative_sampler"] == "hard" and "train.lr" not in first.params


@pytest.mark.parametrize(
    "change",
    [
        {"lr": 0.01},
        {"epochs": 7},
        {"batch_size": 64},
        {"metric": "recall@20"},
        {"max_seconds": 30.0},
        {"negative_sampler": "hard"},
        {"patience": 3},
    ],
)
def test_settings_that_change_what_a_trial_measures_change_the_study(change: dict) -> None:
    base = TrainConfig(model="mf", epochs=5, progress=False)
    key = trial_settings_key(base)
    assert trial_settings_key(base.model_copy(update=change)) != key
    assert study_name("fp", "split", "mf", trial_settings_key(base.model_copy(update=change))) != study_name(
        "fp", "split", "mf", key
    )


def test_device_and_the_searched_values_do_not_split_a_study_but_the_search_space_does() -> None:
    base = TrainConfig(model="mf", epochs=5, progress=False)
    space = {"negative_sampler": ["uniform", "hard"]}
    assert trial_settings_key(base.model_copy(update={"device": "cuda"})) == trial_settings_key(base)
    # a searched field's fixed value is not part of the identity: each trial chooses its own
    searched = base.model_copy(update={"negative_sampler": "hard"})
    assert trial_settings_key(searched, space) == trial_settings_key(base, space)
    assert trial_settings_key(base, space) != trial_settings_key(base)
    assert trial_settings_key(base, space) != trial_settings_key(base, {"negative_sampler": ["uniform"]})


@pytest.mark.parametrize("model", ["ease", "itemknn"])
def test_closed_form_trials_report_their_single_validation(model: str) -> None:
    """A closed-form trial is one fit and one validation: that value is the trial's, nothing is pruned."""
    from tasks.config import SplitConfig
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.split import split_dataset
    from tasks.train import train

    dataset = build_dataset(make_synthetic(num_users=40, num_items=60, num_interactions=800, seed=1))
    split = split_dataset(dataset, SplitConfig(seed=1))
    graphs = build_graphs(dataset, split)
    config = TrainConfig(model=model, progress=False, device="cpu")
    result = tune(graphs, split, config, study="closed", storage=None, n_trials=4, seed=0)
    assert result.n_trials == 4 and result.n_pruned == 0
    assert set(result.best_params) == set(get_model(model).describe()["search_space"])
    # The reported value is what a plain run with the chosen hyperparameters validates at.
    rerun = train(graphs, split, config.model_copy(update={"hparams": result.best_hparams}))
    assert rerun.best_valid is not None
    assert rerun.best_valid["ndcg@20"] == pytest.approx(result.best_value)


def test_the_best_trials_model_is_kept_and_equals_training_it_again() -> None:
    """The final model need not be trained twice: the best trial's model is what a retrain gives."""
    import dataclasses

    import torch

    from tasks.config import SplitConfig
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.pipeline_config import final_train_config
    from tasks.split import split_dataset
    from tasks.train import train
    from tasks.tune import reusable_trained

    dataset = build_dataset(make_synthetic(num_users=40, num_items=60, num_interactions=800, seed=1))
    split = split_dataset(dataset, SplitConfig(seed=1))
    graphs = build_graphs(dataset, split)
    config = TrainConfig(model="mf", epochs=3, progress=False, device="cpu", batch_size=256, seed=3)
    result = tune(graphs, split, config, study="keep", storage=None, n_trials=3, seed=0, pruner="none")
    kept = result.best_trained
    assert kept is not None and kept.best_valid is not None
    assert kept.best_valid[config.metric] == pytest.approx(result.best_value)
    final = final_train_config(config, result, None)
    reused = reusable_trained(result, final)
    assert reused is not None and reused.config == final and reused.model is kept.model
    again = train(graphs, split, final)
    users = torch.arange(graphs.num_users)
    with reused.model.inference(), again.model.inference():
        torch.testing.assert_close(reused.model.score_users(users), again.model.score_users(users))
    # Not reused: a trial the tuning deadline cut short, or any other configuration.
    cut = dataclasses.replace(result, best_trained=dataclasses.replace(kept, stop_reason="max_seconds"))
    assert reusable_trained(cut, final) is None
    assert reusable_trained(result, final.model_copy(update={"epochs": 4})) is None
    assert reusable_trained(dataclasses.replace(result, best_trained=None), final) is None
