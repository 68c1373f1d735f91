from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks import register
from tasks.evaluate import evaluate
from tasks.register import (
    TAG_FAMILY,
    MlflowSettings,
    check_champion,
    load_mlflow_settings,
    metric_key,
    promote_if_better,
    source_digest,
)
from tasks.register.promotion import (
    RULE_ALREADY,
    RULE_BROKEN,
    RULE_FIRST,
    RULE_FLOOR,
    RULE_INCOMPARABLE,
    RULE_MARGIN,
)
from tests.tasks.register_helpers import (
    delete_artifacts,
    first_users,
    planted_dataset,
    planted_model,
    register_model,
    split_of,
    with_new_users,
    wrong_community_model,
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
    assert settings.tracking_uri.startswith("sqlite:////")
    assert settings.artifact_location is not None and settings.artifact_location.startswith("file://")


@pytest.mark.parametrize(
    ("tracking", "artifacts", "expected_artifacts"),
    [
        # a tracking server keeps the artifacts itself (--artifacts-destination) unless told otherwise
        ("http://127.0.0.1:5000/", None, None),
        ("http://127.0.0.1:5000", "shared/art", "conf/shared/art"),
        # a database server has no artifact root of its own: the default folder beside mlflow.yml
        ("postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow", None, "conf/data/mlflow/artifacts"),
        ("postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow", "s3://bucket/art", "s3://bucket/art"),
        ("sqlite:///m.db", None, "conf/data/mlflow/artifacts"),
    ],
)
def test_settings_accept_database_and_tracking_servers(
    tracking: str, artifacts: str | None, expected_artifacts: str | None, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mlflow.yml"
    text = f"tracking_uri: {tracking}\n" + (f"artifact_location: {artifacts}\n" if artifacts else "")
    path.write_text(text)
    settings = load_mlflow_settings(path)
    if tracking.startswith(("http", "postgresql")):
        assert settings.tracking_uri == tracking.rstrip("/")  # server URLs are not touched by path resolving
    else:
        assert settings.tracking_uri == f"sqlite:///{tmp_path}/conf/m.db"
    if expected_artifacts is None or "://" in expected_artifacts:
        assert settings.artifact_location == expected_artifacts
    else:
        assert settings.artifact_location == (tmp_path / expected_artifacts).as_uri()


@pytest.mark.parametrize(
    ("tracking", "message"),
    [
        ("postgres://postgres@127.0.0.1:5432/mlflow", "postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow"),
        ("postgresql+psycopg2://postgres@127.0.0.1:5432", "names no database"),
        ("http://", "names no host"),
        ("ftp://host/x", "not a store gnnrec can use"),
    ],
)
def test_settings_refuse_a_store_mlflow_would_misread(tracking: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        MlflowSettings(tracking_uri=tracking)


def test_metric_key_is_a_valid_mlflow_name() -> None:
    assert metric_key("ndcg@20", "valid") == "valid_ndcg_at_20"
    assert metric_key("recall@10") == "recall_at_10"


@pytest.fixture
def store(tmp_path: Path) -> tuple[MlflowSettings, MlflowClient]:
    settings = MlflowSettings(registered_model_name="rec", min_margin=0.01).resolved(tmp_path)
    register.configure_mlflow(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    return settings, client


def champion(store) -> str:
    return str(store[1].get_model_version_by_alias("rec", "champion").version)


@pytest.fixture(scope="module")
def planted():
    """Planted data (40 users) and the same data with 20 users, with their splits."""
    full = planted_dataset()
    fewer = first_users(full, 20)
    return full, split_of(full, seed=1), fewer, split_of(fewer, seed=1)


def test_first_challenger_is_promoted_and_gets_the_stage(store, planted) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    weak = register_model(settings, dataset, split, planted_model(dataset, noise=2.0), recipe=1)
    strong = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=2)
    decision = promote_if_better(settings, [weak, strong], dataset=dataset, split=split)
    assert decision.promoted and decision.challenger_version == strong.version
    assert decision.champion_version is None and decision.rule == RULE_FIRST
    assert champion(store) == strong.version
    assert client.get_model_version("rec", strong.version).current_stage == "Production"
    assert "promoted" in decision.to_markdown()


def test_challenger_must_beat_the_champion_by_the_margin_on_the_same_data(store, planted) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    first = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    promote_if_better(settings, [first], dataset=dataset, split=split)
    worse = register_model(settings, dataset, split, planted_model(dataset, noise=1.0), recipe=2)
    decision = promote_if_better(settings, [worse], dataset=dataset, split=split)
    assert not decision.promoted and champion(store) == first.version
    assert decision.rule == RULE_MARGIN and decision.basis == "recorded on the same data"
    assert decision.champion_value == pytest.approx(first.valid_value)
    assert "margin" in decision.reason and "champion stays" in decision.reason
    close = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=3)
    assert close.version != first.version  # another recipe: a new version, with the very same numbers
    decision = promote_if_better(settings, [close], dataset=dataset, split=split)
    assert not decision.promoted and decision.observed_margin == pytest.approx(0.0)
    better = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=4)
    assert better.valid_value - first.valid_value >= settings.min_margin
    decision = promote_if_better(settings, [better], dataset=dataset, split=split)
    assert decision.promoted and champion(store) == better.version
    assert client.get_model_version("rec", first.version).current_stage == "Archived"


@pytest.mark.parametrize("change", ["fewer users", "another split seed"])
def test_changed_data_rescores_the_champion_on_the_challengers_split(store, planted, change) -> None:
    """Today's main promoted any challenger on changed data without comparing: a worse one replaced a
    better champion. Now the champion is re-scored on the challenger's split and the worse one stays out."""
    settings, _ = store
    full, full_split, fewer, fewer_split = planted
    old = register_model(settings, full, full_split, planted_model(full, noise=1.0), recipe=1)
    promote_if_better(settings, [old], dataset=full, split=full_split)
    dataset, split = (fewer, fewer_split) if change == "fewer users" else (full, split_of(full, seed=2))
    expected = evaluate(planted_model(full, noise=1.0), split_of(full, seed=2), "valid")["ndcg@20"]

    worse = register_model(settings, dataset, split, planted_model(dataset, noise=2.0), recipe=2)
    decision = promote_if_better(settings, [worse], dataset=dataset, split=split)
    assert worse.valid_value > decision.popularity_value  # above the floor: the comparison decided
    assert not decision.promoted and champion(store) == old.version
    assert decision.rule == RULE_MARGIN and decision.basis.startswith("re-scored")
    assert decision.champion_value is not None and decision.champion_value > worse.valid_value
    assert decision.champion_value != pytest.approx(old.valid_value)  # not the number from its own data
    assert decision.champion_test is not None
    if change == "another split seed":  # the same model and users: re-scoring equals evaluating it there
        assert decision.champion_value == pytest.approx(expected, abs=1e-6)
    assert fewer.fingerprint in decision.data or full.fingerprint in decision.data

    better = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=3)
    decision = promote_if_better(settings, [better], dataset=dataset, split=split)
    assert decision.promoted and champion(store) == better.version
    assert decision.champion_version == old.version and decision.rule == RULE_MARGIN
    markdown = decision.to_markdown()
    assert f"{decision.champion_value:.4f}" in markdown and f"{better.valid_value:.4f}" in markdown
    assert f"{decision.observed_margin:.4f}" in markdown and "`margin`" in markdown
    assert "re-scored" in markdown


@pytest.mark.parametrize("policy", ["keep", "promote"])
def test_champion_that_cannot_score_the_new_users_follows_on_incomparable(store, planted, policy) -> None:
    settings = store[0].model_copy(update={"on_incomparable": policy})
    full, full_split = planted[0], planted[1]
    old = register_model(settings, full, full_split, planted_model(full, noise=0.3), recipe=1)
    promote_if_better(settings, [old], dataset=full, split=full_split)
    grown = with_new_users(full, 8)  # 8 validation users the champion never saw
    split = split_of(grown)
    challenger = register_model(settings, grown, split, planted_model(grown, noise=2.0), recipe=2)
    decision = promote_if_better(settings, [challenger], dataset=grown, split=split)
    assert decision.rule == RULE_INCOMPARABLE and decision.champion_value is None
    assert "8 of the 48 valid users are unknown" in decision.reason
    assert decision.promoted is (policy == "promote")
    assert champion(store) == (challenger.version if policy == "promote" else old.version)
    assert f"on_incomparable is `{policy}`" in decision.reason


def test_on_incomparable_is_validated() -> None:
    with pytest.raises(ValueError, match="on_incomparable"):
        MlflowSettings(on_incomparable="sometimes")
    assert MlflowSettings().on_incomparable == "keep"


def test_challenger_below_popularity_is_never_promoted(store, planted) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    bad = register_model(settings, dataset, split, wrong_community_model(dataset), recipe=1)
    decision = promote_if_better(settings, [bad], dataset=dataset, split=split)
    assert bad.valid_value < decision.popularity_value
    assert not decision.promoted and decision.rule == RULE_FLOOR and decision.champion_after is None
    assert register.current_champion(settings) is None and "popularity" in decision.reason
    # Nor over a champion on other data, which the old gate replaced without looking.
    old = register_model(settings, planted[2], planted[3], planted_model(planted[2], noise=0.0), recipe=2)
    promote_if_better(settings, [old], dataset=planted[2], split=planted[3])
    decision = promote_if_better(settings, [bad], dataset=dataset, split=split)
    assert not decision.promoted and decision.rule == RULE_FLOOR and champion(store) == old.version


def test_broken_champion_is_detected_and_replaced(store, planted) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    strong = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=1)
    promote_if_better(settings, [strong], dataset=dataset, split=split)
    assert check_champion(settings).ok
    delete_artifacts(settings, strong.version)

    health = check_champion(settings)
    assert health.broken and not health.ok and health.version == strong.version
    assert "does not load" in health.problem and "gnnrec run" in health.message()
    # A weaker challenger still replaces it: the recorded number belongs to a model that no longer loads.
    weaker = register_model(settings, dataset, split, planted_model(dataset, noise=1.0), recipe=2)
    decision = promote_if_better(settings, [weaker], dataset=dataset, split=split)
    assert decision.promoted and decision.rule == RULE_BROKEN and champion(store) == weaker.version
    assert "broken" in decision.reason and decision.champion_problem
    assert check_champion(settings).ok


def test_no_champion_health(store) -> None:
    health = check_champion(store[0])
    assert health.version is None and not health.ok and not health.broken
    assert "no champion" in health.message() and "gnnrec run" in health.message()


def test_identical_model_reuses_its_version_and_the_decision_says_so(store, planted) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    first = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    promote_if_better(settings, [first], dataset=dataset, split=split)
    again = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    assert again.version == first.version and again.reused and not first.reused
    assert again.valid_value == pytest.approx(first.valid_value) and again.identity == first.identity
    assert len(client.search_model_versions("name = 'rec'")) == 1
    version = client.get_model_version("rec", first.version)
    assert version.tags[register.TAG_IDENTITY] == first.identity
    assert version.tags[register.TAG_CODE] == register.code_version()
    assert version.tags["gnnrec.reused_by_run"] == again.run_id
    decision = promote_if_better(settings, [again], dataset=dataset, split=split)
    assert not decision.promoted and decision.rule == RULE_ALREADY and decision.challenger_reused
    assert "reused, not registered again" in decision.reason


def test_another_code_version_registers_a_new_version(store, planted, monkeypatch) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    first = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    monkeypatch.setattr("tasks.register.versions.code_version", lambda: "0.1.0+edited")
    edited = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    assert edited.version != first.version and not edited.reused
    assert client.get_model_version("rec", edited.version).tags[register.TAG_CODE] == "0.1.0+edited"


def test_a_version_whose_artifacts_are_gone_is_not_reused(store, planted) -> None:
    settings, client = store
    dataset, split = planted[0], planted[1]
    first = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    delete_artifacts(settings, first.version)
    again = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
    assert again.version != first.version and not again.reused


def test_two_identical_training_runs_register_one_version(tmp_path: Path) -> None:
    from tasks.config import DataConfig, SplitConfig
    from tasks.prepare import prepare_data
    from tasks.train import TrainConfig, train

    settings = MlflowSettings(registered_model_name="rec").resolved(tmp_path)
    data = DataConfig(synthetic_users=30, synthetic_items=40, synthetic_interactions=500, synthetic_seed=4)
    prepared = prepare_data(data, SplitConfig(seed=4))
    versions = []
    for _ in range(2):
        trained = train(prepared.graphs, prepared.split, TrainConfig(model="mf", epochs=2, progress=False))
        lineage = register.Lineage.of(prepared.dataset, prepared.split)
        parent = register.start_pipeline_run(settings, run_name="t", lineage=lineage, params={})
        child = register.start_model_run(settings, parent_run_id=parent, family="mf", lineage=lineage)
        versions.append(
            register.log_trained_model(
                settings,
                run_id=child,
                trained=trained,
                test_metrics=evaluate(trained.model, prepared.split, "test"),
                dataset=prepared.dataset,
                split=prepared.split,
                lineage=lineage,
            )
        )
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'rec'")] == ["1"]
    assert [v.version for v in versions] == ["1", "1"] and [v.reused for v in versions] == [False, True]
    second_run = client.get_run(versions[1].run_id)  # the second run still holds its own logs
    assert second_run.data.tags["gnnrec.registered_version"] == "1"
    assert second_run.data.tags["gnnrec.reused_version"] == "true"
    assert len(client.get_metric_history(versions[1].run_id, "epoch_loss")) == 2


def test_no_stage_when_disabled(store, planted) -> None:
    settings = store[0].model_copy(update={"registry_stage": None})
    dataset, split = planted[0], planted[1]
    version = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=1)
    promote_if_better(settings, [version], dataset=dataset, split=split)
    assert store[1].get_model_version("rec", version.version).current_stage == "None"


def test_gate_refuses_a_split_its_challenger_was_not_trained_on(store, planted) -> None:
    settings = store[0]
    dataset, split = planted[0], planted[1]
    version = register_model(settings, dataset, split, planted_model(dataset, noise=0.0), recipe=1)
    with pytest.raises(ValueError, match="not on the dataset and split given"):
        promote_if_better(settings, [version], dataset=dataset, split=split_of(dataset, seed=9))


def test_champion_hparams_for_warm_start(store) -> None:
    settings, client = store
    client.create_registered_model("rec")
    source = (Path(settings.artifact_location[7:]) / "mf").as_uri()
    version = client.create_model_version("rec", source=source, tags={TAG_FAMILY: "mf"})
    client.set_model_version_tag("rec", version.version, register.TAG_HPARAMS, '{"embedding_dim": 32}')
    client.set_registered_model_alias("rec", "champion", version.version)
    assert register.champion_hparams(settings, "mf") == {"embedding_dim": 32}
    assert register.champion_hparams(settings, "ngcf") is None


def test_source_digest_changes_with_the_code(tmp_path: Path) -> None:
    package = tmp_path / "models"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    before = source_digest(package)
    assert source_digest(package) == before
    (package / "a.py").write_text("x = 2\n")
    assert source_digest(package) != before
    version = register.code_version()
    assert version.startswith("0.1.0+") and version == register.code_version()


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


def test_every_trial_gets_a_nested_run_closed_by_its_outcome(store, tmp_path: Path) -> None:
    """Complete and pruned trials are FINISHED, a trial that raised is FAILED with its reason, all timed."""
    from types import SimpleNamespace

    import numpy as np

    from tasks.split import Split
    from tasks.train import TrainConfig
    from tasks.tune import tune

    settings, client = store
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 12, 200), rng.integers(0, 15, 200)], axis=1), axis=0)
    split = Split("random", 0, 12, 15, pairs[:60], pairs[60:90], pairs[90:])
    calls = []

    def trainer(graphs, split, config, *, on_epoch=None):
        calls.append(config.hparams)
        if len(calls) == 4:
            raise FloatingPointError("the training loss of mf became nan at epoch 2; lower the learning rate")
        # Trials 0 and 1 score well at every epoch, trial 2 badly: the median pruner stops it at epoch 3.
        score = 0.5 if len(calls) < 3 else 0.01
        history = []
        for epoch in range(1, 5):
            record = {"epoch": epoch, "loss": 1.0 / epoch, "ndcg@20": score}
            history.append(record)
            on_epoch(epoch, record)
        return SimpleNamespace(
            history=history, best_epoch=4, best_valid=SimpleNamespace(values={"ndcg@20": score})
        )

    lineage = register.Lineage(dataset="d", fingerprint="f", split="s")
    parent = register.start_pipeline_run(settings, run_name="t", lineage=lineage, params={})
    child = register.start_model_run(settings, parent_run_id=parent, family="mf", lineage=lineage)
    logger = register.trial_logger(settings, model_run_id=child, family="mf", lineage=lineage)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = TrainConfig(model="mf", epochs=4, progress=False, device="cpu")
    with pytest.raises(FloatingPointError):
        tune(
            None, split, config, study="s", storage=storage, n_trials=5, train_fn=trainer, callbacks=[logger]
        )

    import optuna

    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    experiment = client.get_experiment_by_name(settings.experiment_name).experiment_id
    runs = {
        int(r.data.tags["optuna.trial"]): r
        for r in client.search_runs([experiment], filter_string="tags.`gnnrec.role` = 'trial'")
    }
    assert sorted(runs) == [0, 1, 2, 3]  # the failed trial has its run too
    for number, trial in enumerate(trials):
        run = runs[number]
        assert run.data.tags["mlflow.parentRunId"] == child
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.params["reg_weight"] == str(trial.params["reg_weight"])
        assert run.info.start_time == int(trial.datetime_start.timestamp() * 1000)
        assert run.info.end_time == int(trial.datetime_complete.timestamp() * 1000)
    assert [runs[n].info.status for n in range(4)] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    failed = runs[3].data.tags["gnnrec.failure"]
    assert failed.startswith("FloatingPointError: the training loss of mf became nan")
    assert "gnnrec.failure" not in runs[2].data.tags


def test_two_flows_registering_the_same_model_at_once_end_with_one_version(
    store, planted, monkeypatch
) -> None:
    """Both search before either registers (the race); the later version is deleted, both name the first."""
    import threading

    from tasks.register import versions

    settings, client = store
    dataset, split = planted[0], planted[1]
    both_searched = threading.Barrier(2, timeout=60)
    search = versions.find_identical_version

    def search_then_wait(*args, **kwargs):
        found = search(*args, **kwargs)
        both_searched.wait()  # neither registers before both have found nothing
        return found

    monkeypatch.setattr(versions, "find_identical_version", search_then_wait)
    results: dict[int, register.RegisteredVersion] = {}
    errors: list[BaseException] = []

    def flow(n: int) -> None:
        try:
            results[n] = register_model(settings, dataset, split, planted_model(dataset, noise=0.3), recipe=1)
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=flow, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    live = client.search_model_versions("name = 'rec'")
    assert [str(v.version) for v in live] == ["1"]
    assert {r.version for r in results.values()} == {"1"}
    assert sorted(r.reused for r in results.values()) == [False, True]
    loser = next(r for r in results.values() if r.reused)
    assert client.get_run(loser.run_id).data.tags[versions.TAG_DISCARDED] == "2"
    monkeypatch.setattr(versions, "find_identical_version", search)
    decisions = [promote_if_better(settings, [results[n]], dataset=dataset, split=split) for n in range(2)]
    assert [d.challenger_version for d in decisions] == ["1", "1"]
    assert [d.rule for d in decisions] == [RULE_FIRST, RULE_ALREADY] and decisions[1].champion_version == "1"
    assert champion(store) == "1"


def test_on_a_cold_users_split_the_champion_scores_the_new_users_from_their_histories(store, planted) -> None:
    """The champion has trained rows for the held-out users (it trained on another split); the challenger
    was measured on them through their histories, so the champion must be too, histories masked."""
    from tasks.config import SplitConfig
    from tasks.register.rescore import rescore
    from tasks.split import split_dataset

    settings, _ = store
    full, full_split = planted[0], planted[1]
    old = register_model(settings, full, full_split, planted_model(full, noise=1.0), recipe=1)
    promote_if_better(settings, [old], dataset=full, split=full_split)
    cold = split_dataset(full, SplitConfig(method="cold-users", seed=2, cold_fraction=0.5, fold_in=0.5))
    assert len(cold.history) and not set(cold.history[:, 0]) & set(cold.train[:, 0])
    served = register.load_version(settings, old.version)[0].unwrap_python_model()
    for part in ("valid", "test"):
        expected = evaluate(planted_model(full, noise=1.0), cold, part, (20,))
        assert expected.history_users == expected.users_evaluated > 0  # every held-out user is new
        got = rescore(served, full, cold, part, (20,))
        assert got.history_users == expected.history_users
        for key, value in expected.values.items():
            assert got.values[key] == pytest.approx(value, abs=1e-6), key

    challenger = register_model(settings, full, cold, planted_model(full, noise=2.0), recipe=2)
    decision = promote_if_better(settings, [challenger], dataset=full, split=cold)
    assert decision.basis.startswith("re-scored")
    expected_valid = evaluate(planted_model(full, noise=1.0), cold, "valid", (20,))["ndcg@20"]
    assert decision.champion_value == pytest.approx(expected_valid, abs=1e-6)
