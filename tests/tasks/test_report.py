"""tasks.report (data report, leaderboard rows and ranking) and the pipeline's training configs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import DataConfig, SplitConfig
from tasks.evaluate import evaluate
from tasks.pipeline_config import PipelineParams, final_train_config
from tasks.prepare import DataContractError, PreparedData, prepare_data
from tasks.register import RegisteredVersion
from tasks.report import data_report_markdown, leaderboard_row, rank_leaderboard, run_facts, train_seconds
from tasks.train import TrainedModel, train
from tasks.tune import TuneResult


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    data = DataConfig(synthetic_users=30, synthetic_items=40, synthetic_interactions=600, synthetic_seed=2)
    return prepare_data(data, SplitConfig(seed=2))


@pytest.fixture(scope="module")
def trained(prepared: PreparedData) -> TrainedModel:
    params = PipelineParams(epochs=3, lr=0.01, batch_size=128, device="cpu", seed=2)
    config = params.train_config("mf", "ndcg@20").model_copy(update={"hparams": {"embedding_dim": 8}})
    return train(prepared.graphs, prepared.split, config)


def _tuned(**overrides) -> TuneResult:
    base = dict(
        study_name="s", model="mf", metric="ndcg@20", n_trials=3, n_new_trials=2, n_pruned=1, seconds=4.25
    )
    return TuneResult(**{**base, **overrides})


def _version(family: str, valid: float, test: float = 0.2, number: str = "1") -> RegisteredVersion:
    return RegisteredVersion(
        name="rec",
        version=number,
        run_id="r",
        family=family,
        metric="ndcg@20",
        valid_value=valid,
        test_value=test,
        fingerprint="f",
        split="s",
    )


def test_data_report_passed_lists_dataset_split_and_graphs(prepared: PreparedData) -> None:
    text = data_report_markdown(prepared.report, prepared.dataset, prepared.split, prepared.graphs)
    assert text.startswith("# Data report: contract passed")
    assert prepared.report.summary() in text
    assert f"| users | {prepared.dataset.num_users} |" in text
    assert f"| train | {len(prepared.split.train)} |" in text
    assert "## Graphs" in text and '"user_item"' in text


def test_data_report_failed_has_only_the_contract(tmp_path: Path) -> None:
    rows = [(u, i) for u in range(1, 21) for i in range(1, 6)]
    folder = tmp_path / "bad"
    folder.mkdir()
    pd.DataFrame(rows + rows[:2], columns=["user", "item"]).to_csv(folder / "interactions.csv", index=False)
    with pytest.raises(DataContractError) as info:
        prepare_data(DataConfig(dataset="csv", data_dir=folder), SplitConfig())
    text = data_report_markdown(info.value.report)
    assert text.startswith("# Data report: contract **FAILED**")
    assert "expect_compound_columns_to_be_unique" in text
    assert "## Dataset" not in text and "## Graphs" not in text


def test_leaderboard_row_and_run_facts(prepared: PreparedData, trained: TrainedModel) -> None:
    test_metrics = evaluate(trained.model, prepared.split, "test", (10, 20))
    version = _version("mf", valid=0.123456789, test=test_metrics["ndcg@20"], number="7")
    row = leaderboard_row("mf", version, test_metrics, trained, _tuned())
    assert row["model"] == "mf" and row["version"] == "7"
    assert row["valid ndcg@20"] == 0.12346 and row["test ndcg@20"] == round(test_metrics["ndcg@20"], 5)
    assert "test ndcg@20" in row and "test recall@10" in row
    assert len([k for k in row if k.startswith("test ")]) == len(test_metrics.values)
    assert row["best epoch"] == trained.best_epoch and 1 <= row["best epoch"] <= 3
    assert row["train s"] == round(train_seconds(trained), 2) and row["train s"] >= 0
    assert (row["tune s"], row["trials"], row["new trials"]) == (4.25, 3, 2)
    facts = run_facts(_tuned(), trained)
    assert facts == {
        "tune_seconds": 4.25,
        "trials": 3.0,
        "new_trials": 2.0,
        "pruned_trials": 1.0,
        "train_seconds": train_seconds(trained),
    }
    assert train_seconds(trained) == pytest.approx(sum(h["seconds"] for h in trained.history))


def test_rank_leaderboard_best_first_nan_last() -> None:
    rows = [
        {"model": "a", "valid ndcg@20": 0.1},
        {"model": "b", "valid ndcg@20": float("nan")},
        {"model": "c", "valid ndcg@20": 0.3},
        {"model": "d", "valid ndcg@20": 0.2},
    ]
    ranked = rank_leaderboard(rows, "ndcg@20")
    assert [r["model"] for r in ranked] == ["c", "d", "a", "b"]
    assert math.isnan(ranked[-1]["valid ndcg@20"])
    assert [r["model"] for r in rows] == ["a", "b", "c", "d"]  # the input is left alone


def test_train_config_carries_the_run_settings() -> None:
    params = PipelineParams(epochs=7, lr=0.02, batch_size=64, device="cpu", seed=9, ks=(5,))
    config = params.train_config("lightgcn", "recall@50")
    assert (config.model, config.epochs, config.lr, config.batch_size) == ("lightgcn", 7, 0.02, 64)
    assert (config.metric, config.ks, config.device, config.seed) == ("recall@50", (5, 50), "cpu", 9)
    assert config.progress is False
    default = PipelineParams().train_config("mf", "ndcg@20")
    assert default.patience == type(default)().patience  # unset overrides keep the trainer's defaults
    assert PipelineParams().threads is None and PipelineParams(threads=2).threads == 2
    with pytest.raises(ValueError, match="threads"):
        PipelineParams(threads=0)


def test_final_config_prefers_the_tuned_then_the_warm_start_hparams() -> None:
    base = PipelineParams(device="cpu").train_config("mf", "ndcg@20")
    base = base.model_copy(update={"hparams": {"embedding_dim": 8, "reg_weight": 1e-4}})
    tuned = _tuned(best_params={"embedding_dim": 32}, best_hparams={"embedding_dim": 32, "reg_weight": 1e-4})
    assert final_train_config(base, tuned, {"embedding_dim": 16}).hparams == {
        "embedding_dim": 32,
        "reg_weight": 1e-4,
    }
    no_trial = _tuned()
    assert final_train_config(base, no_trial, {"embedding_dim": 16}).hparams["embedding_dim"] == 16
    assert final_train_config(base, no_trial, None) == base
    searched = _tuned(
        best_params={"embedding_dim": 32, "train.negative_sampler": "hard"},
        best_hparams={"embedding_dim": 32, "reg_weight": 1e-4},
        best_train={"negative_sampler": "hard"},
    )
    chosen = final_train_config(base, searched, None)
    assert chosen.negative_sampler == "hard" and "train.negative_sampler" not in chosen.hparams
    warm = final_train_config(base, no_trial, {"embedding_dim": 16, "train.sampler_pool_size": 32})
    assert warm.sampler_pool_size == 32 and warm.hparams["embedding_dim"] == 16
    assert "train.sampler_pool_size" not in warm.hparams
    with pytest.raises(ValueError, match="sampler_pool_size"):
        PipelineParams(train_space={"sampler_pool_size": [0, 16]})
    assert PipelineParams(train_space={"loss": ["bpr", "softmax"]}).train_space == {
        "loss": ["bpr", "softmax"]
    }
