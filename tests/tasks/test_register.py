from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks import register
from tasks.register import (
    TAG_FAMILY,
    TAG_FINGERPRINT,
    TAG_SPLIT,
    MlflowSettings,
    RegisteredVersion,
    load_mlflow_settings,
    metric_key,
    promote_if_better,
)


def test_settings_resolve_relative_paths_against_the_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mlflow.yml"
    path.write_text("tracking_uri: sqlite:///data/m.db\nartifact_location: data/art\nregistry_stage: null\n")
    monkeypatch.chdir(tmp_path)
    settings = load_mlflow_settings(path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path}/conf/data/m.db"
    assert settings.artifact_location == (tmp_path / "conf" / "data" / "art").as_uri()
    assert settings.study_storage == f"sqlite:///{tmp_path}/conf/data/optuna/studies.db"
    assert settings.registry_stage is None
    monkeypatch.setenv(register.CONFIG_ENV, str(path))
    assert load_mlflow_settings() == settings


def test_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_mlflow_settings(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("tracking_uri: sqlite:///x.db\nunknown_key: 1\n")
    with pytest.raises(ValueError, match="unknown_key"):
        load_mlflow_settings(bad)


def test_repository_mlflow_yml_loads() -> None:
    settings = load_mlflow_settings(Path(__file__).parents[2] / "mlflow.yml")
    assert settings.promotion_alias == "champion" and settings.registry_stage == "Production"
    assert settings.tracking_uri.startswith("sqlite:////") and settings.artifact_location.startswith(
        "file://"
    )


def test_metric_key_is_a_valid_mlflow_name() -> None:
    assert metric_key("ndcg@20", "valid") == "valid_ndcg_at_20"
    assert metric_key("recall@10") == "recall_at_10"


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowSettings, MlflowClient]:
    settings = MlflowSettings(registered_model_name="rec", min_margin=0.01).resolved(tmp_path)
    register.configure_mlflow(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.create_registered_model("rec")
    return settings, client


def add_version(
    store, family: str, value: float, fingerprint: str = "fp1", split: str = "s1"
) -> RegisteredVersion:
    settings, client = store
    tags = {
        TAG_FAMILY: family,
        TAG_FINGERPRINT: fingerprint,
        TAG_SPLIT: split,
        metric_key("ndcg@20", "valid"): repr(value),
    }
    version = client.create_model_version(
        "rec", source=(Path(settings.artifact_location[7:]) / family).as_uri(), tags=tags
    )
    return RegisteredVersion(
        "rec", str(version.version), "", family, "ndcg@20", value, value, fingerprint, split
    )


def champion(store) -> str:
    return str(store[1].get_model_version_by_alias("rec", "champion").version)


def test_first_challenger_is_promoted_and_gets_the_stage(store) -> None:
    a, b = add_version(store, "mf", 0.10), add_version(store, "lightgcn", 0.20)
    decision = promote_if_better(store[0], [a, b])
    assert (
        decision.promoted and decision.challenger_version == b.version and decision.champion_version is None
    )
    assert champion(store) == b.version
    assert store[1].get_model_version("rec", b.version).current_stage == "Production"
    assert "promoted" in decision.to_markdown()


def test_challenger_must_beat_the_champion_by_the_margin(store) -> None:
    first = add_version(store, "mf", 0.20)
    promote_if_better(store[0], [first])
    close = add_version(store, "lightgcn", 0.205)  # better, but by less than the 0.01 margin
    decision = promote_if_better(store[0], [close])
    assert not decision.promoted and champion(store) == first.version
    assert "margin" in decision.reason and decision.champion_value == pytest.approx(0.20)
    clear = add_version(store, "ngcf", 0.25)
    decision = promote_if_better(store[0], [clear])
    assert decision.promoted and champion(store) == clear.version
    assert store[1].get_model_version("rec", first.version).current_stage == "Archived"


def test_equal_challenger_keeps_the_champion(store) -> None:
    first = add_version(store, "mf", 0.2)
    promote_if_better(store[0], [first])
    decision = promote_if_better(store[0], [add_version(store, "mf", 0.2)])
    assert not decision.promoted and "champion stays" in decision.reason


def test_champion_on_other_data_cannot_be_compared_and_is_replaced(store) -> None:
    old = add_version(store, "mf", 0.9, fingerprint="old")
    promote_if_better(store[0], [old])
    new = add_version(store, "mf", 0.1, fingerprint="new")
    decision = promote_if_better(store[0], [new])
    assert decision.promoted and champion(store) == new.version
    assert "other data" in decision.reason


def test_no_stage_when_disabled(store) -> None:
    settings = store[0].model_copy(update={"registry_stage": None})
    version = add_version(store, "mf", 0.3)
    promote_if_better(settings, [version])
    assert store[1].get_model_version("rec", version.version).current_stage == "None"


def test_champion_hparams_for_warm_start(store) -> None:
    settings, client = store
    version = add_version(store, "mf", 0.3)
    client.set_model_version_tag("rec", version.version, register.TAG_HPARAMS, '{"embedding_dim": 32}')
    promote_if_better(settings, [version])
    assert register.champion_hparams(settings, "mf") == {"embedding_dim": 32}
    assert register.champion_hparams(settings, "ngcf") is None


def test_retried_registration_of_a_run_returns_its_version_not_a_new_one(tmp_path: Path, monkeypatch) -> None:
    from tasks.config import DataConfig, SplitConfig
    from tasks.evaluate import evaluate
    from tasks.prepare import prepare_data
    from tasks.train import TrainConfig, train

    settings = MlflowSettings(registered_model_name="rec").resolved(tmp_path)
    data = DataConfig(synthetic_users=30, synthetic_items=40, synthetic_interactions=500, synthetic_seed=4)
    prepared = prepare_data(data, SplitConfig(seed=4))
    dataset, split = prepared.dataset, prepared.split
    trained = train(prepared.graphs, split, TrainConfig(model="mf", epochs=2, progress=False, device="cpu"))
    lineage = register.Lineage.of(dataset, split)
    parent = register.start_pipeline_run(settings, run_name="t", lineage=lineage, params={})
    child = register.start_model_run(settings, parent_run_id=parent, family="mf", lineage=lineage)
    kwargs = dict(
        run_id=child,
        trained=trained,
        test_metrics=evaluate(trained.model, split, "test"),
        dataset=dataset,
        split=split,
        lineage=lineage,
    )
    failing = {"left": 1}
    original = MlflowClient.update_model_version

    def fail_once(self, *args, **kw):  # a late failure: after the version exists, before the call returns
        if failing["left"]:
            failing["left"] -= 1
            raise ConnectionError("tracking server went away")
        return original(self, *args, **kw)

    monkeypatch.setattr(MlflowClient, "update_model_version", fail_once)
    with pytest.raises(ConnectionError):
        register.log_trained_model(settings, **kwargs)
    retried = register.log_trained_model(settings, **kwargs)

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    versions = client.search_model_versions("name = 'rec'")
    assert [str(v.version) for v in versions] == [retried.version] == ["1"]
    assert versions[0].run_id == child and versions[0].description.startswith("mf on")
    assert versions[0].tags[TAG_FAMILY] == "mf"
    history = client.get_metric_history(child, "epoch_loss")
    assert len(history) == trained.epochs_run  # the per-epoch curve was not logged twice
    assert register.registered_version_of_run(client, "rec", child) == "1"
    assert register.registered_version_of_run(client, "rec", parent) is None
