from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.recommend import EmbeddingRecommender, export_recommender, seen_csr, top_k_unseen


def brute_force_top_k(user_emb, item_emb, user, seen: set[int], k: int) -> list[int]:
    scores = item_emb @ user_emb[user]
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in seen]
    return order[:k]


def test_top_k_unseen_matches_brute_force_and_excludes_seen() -> None:
    rng = np.random.default_rng(0)
    user_emb, item_emb = rng.normal(size=(30, 8)), rng.normal(size=(50, 8))
    user, item = rng.integers(0, 30, 400), rng.integers(0, 50, 400)
    indptr, indices = seen_csr(user, item, 30)
    users = np.arange(30)
    items, scores = top_k_unseen(user_emb, item_emb, users, indptr, indices, k=7, chunk=4)
    assert items.shape == (30, 7)
    for u in users:
        seen = set(item[user == u].tolist())
        assert items[u].tolist() == brute_force_top_k(user_emb, item_emb, u, seen, 7)
        assert np.all(np.diff(scores[u]) <= 0)


def test_user_with_fewer_unseen_items_than_k_gets_only_those() -> None:
    user_emb, item_emb = np.ones((2, 2)), np.eye(4, 2)
    indptr, indices = seen_csr(np.array([0, 0, 0]), np.array([0, 1, 2]), 2)
    items, scores = top_k_unseen(user_emb, item_emb, np.array([0, 1]), indptr, indices, k=3)
    assert items[0].tolist() == [3, -1, -1] and np.isinf(scores[0, 1:]).all()
    assert sorted(items[1].tolist()) == [0, 1, 2, 3][:3] or len(set(items[1].tolist())) == 3


@pytest.fixture(scope="module")
def champion_store(tmp_path_factory: pytest.TempPathFactory):
    """A tmp MLflow store with one tiny MF registered and promoted to champion."""
    from tasks import register
    from tasks.config import SplitConfig
    from tasks.evaluate import evaluate
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.split import split_dataset
    from tasks.train import TrainConfig, train

    root = tmp_path_factory.mktemp("mlstore")
    (root / "mlflow.yml").write_text(
        "tracking_uri: sqlite:///mlflow.db\nartifact_location: artifacts\nregistered_model_name: rec\n"
        "study_storage: sqlite:///optuna.db\n"
    )
    settings = register.load_mlflow_settings(root / "mlflow.yml")
    dataset = build_dataset(make_synthetic(num_users=40, num_items=60, num_interactions=800, seed=3))
    split = split_dataset(dataset, SplitConfig(seed=3))
    # Enough training to beat popularity: the promotion gate never promotes a model that does not.
    config = TrainConfig(model="mf", epochs=20, lr=0.01, progress=False, device="cpu")
    trained = train(build_graphs(dataset, split), split, config)
    lineage = register.Lineage.of(dataset, split)
    parent = register.start_pipeline_run(settings, run_name="t", lineage=lineage, params={})
    child = register.start_model_run(settings, parent_run_id=parent, family="mf", lineage=lineage)
    version = register.log_trained_model(
        settings,
        run_id=child,
        trained=trained,
        test_metrics=evaluate(trained.model, split, "test"),
        dataset=dataset,
        split=split,
        lineage=lineage,
    )
    register.promote_if_better(settings, [version], dataset=dataset, split=split)
    register.end_run(settings, parent)
    return settings, dataset, trained


def test_export_and_predict_in_process(champion_store, tmp_path: Path) -> None:
    _, dataset, trained = champion_store
    model = EmbeddingRecommender()
    from tasks.config import SplitConfig
    from tasks.split import split_dataset

    model._load(
        export_recommender(trained.model, dataset, split_dataset(dataset, SplitConfig(seed=3)), tmp_path)
    )
    users = dataset.user_ids[:4].tolist()
    out = model.predict(None, pd.DataFrame({"user": users, "k": [1, 2, 3, 4]}))
    assert out.groupby("user").size().to_dict() == dict(zip(users, [1, 2, 3, 4], strict=True))
    for raw_user in users:
        internal = int(np.searchsorted(dataset.user_ids, raw_user))
        seen = set(dataset.item_ids[dataset.item[dataset.user == internal]].tolist())
        assert not set(out[out["user"] == raw_user]["item"]) & seen
    with pytest.raises(ValueError, match="user"):
        model.predict(None, pd.DataFrame({"customer": [1]}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
    }


def test_champion_loads_and_predicts_in_a_fresh_process(champion_store) -> None:
    settings, dataset, _ = champion_store
    script = textwrap.dedent(
        f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{settings.registered_model_name}@champion")
        out = model.predict(pd.DataFrame({{"user": [{int(dataset.user_ids[0])}, -5]}}), params={{"k": 4}})
        print(json.dumps(out.to_dict(orient="records")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    known = [r for r in rows if r["user"] == int(dataset.user_ids[0])]
    unknown = [r for r in rows if r["user"] == -5]
    assert [r["rank"] for r in known] == [1, 2, 3, 4] and not any(r["fallback"] for r in known)
    assert len(unknown) == 4 and all(r["fallback"] for r in unknown)
    seen = set(dataset.item_ids[dataset.item[dataset.user == 0]].tolist())
    assert not {r["item"] for r in known} & seen


def _post(port: int, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _port_free(port: int) -> bool:
    """Nothing listens on ``port``: a connection is refused and the port can be bound again."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        pass
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections linger in TIME_WAIT
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_gnnrec_serve_answers_rest_refuses_bad_k_in_one_line_and_stops_on_sigterm(
    champion_store, tmp_path: Path
) -> None:
    import signal

    settings, dataset, _ = champion_store
    config = Path(settings.tracking_uri.partition(":///")[2]).parent / "mlflow.yml"
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--port", str(port), "--mlflow-config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"gnnrec serve exited: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping in 120 s"
            time.sleep(1)
        user = int(dataset.user_ids[1])
        frame = {"dataframe_split": {"columns": ["user"], "data": [[user]]}}
        status, body = _post(port, {**frame, "params": {"k": 3}})
        assert status == 200
        predictions = body["predictions"]
        assert [p["rank"] for p in predictions] == [1, 2, 3]
        assert all(p["user"] == user and not p["fallback"] for p in predictions)
        assert set(p["item"] for p in predictions) <= set(dataset.item_ids.tolist())
        for bad in (0, -2, dataset.num_items + 1):
            status, body = _post(port, {**frame, "params": {"k": bad}})
            assert status == 400, body
            assert set(body) == {"error_code", "message"} and body["error_code"] == "INVALID_PARAMETER_VALUE"
            assert "\n" not in body["message"] and "Traceback" not in body["message"]
            assert f"got {bad}" in body["message"] and f"1 to {dataset.num_items}" in body["message"]
        status, body = _post(port, {"dataframe_split": {"columns": ["user", "k"], "data": [[user, 0]]}})
        assert status == 400 and "k must be" in body["message"]

        # A new user's history, no retraining: top-K unseen items; a bad history is a 400 with one message.
        def post(history: str) -> tuple[int, dict]:
            payload = {"dataframe_split": {"columns": ["history"], "data": [[history]]}, "params": {"k": 3}}
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        raw = [int(i) for i in dataset.item_ids[:2]]
        status, answer = post(f"{raw[0]},{raw[1]}")
        assert status == 200
        assert [p["rank"] for p in answer["predictions"]] == [1, 2, 3]
        assert not {p["item"] for p in answer["predictions"]} & set(raw)
        status, answer = post("999999")
        assert status == 400 and "history item(s) 999999 (row 0) are not in" in answer["message"]
        status, answer = post("")
        assert status == 400 and "the history (row 0) is empty" in answer["message"]
        proc.send_signal(signal.SIGTERM)  # to gnnrec serve itself, not its group
        assert proc.wait(timeout=30) is not None
        assert _port_free(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=20)


def test_k_outside_one_to_the_catalogue_is_an_invalid_parameter(champion_store, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    _, dataset, trained = champion_store
    model = EmbeddingRecommender()
    from tasks.config import SplitConfig
    from tasks.split import split_dataset

    model._load(
        export_recommender(trained.model, dataset, split_dataset(dataset, SplitConfig(seed=3)), tmp_path)
    )
    users = pd.DataFrame({"user": dataset.user_ids[:2].tolist()})
    assert len(model.predict(None, users, params={"k": dataset.num_items})) > 0
    for bad in (0, -1, dataset.num_items + 1, 2.5):
        with pytest.raises(MlflowException, match="k must be a whole number") as caught:
            model.predict(None, users, params={"k": bad})
        assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_score_users_raw_matches_embeddings_and_names_unknown_users() -> None:
    import torch

    from models.serving import EmbeddingServable

    model = EmbeddingRecommender()
    model.servable = EmbeddingServable(
        torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [3.0, 0.0], [0.0, 1.0]])
    )
    model.user_ids = np.array([10, 20])
    model._index = {"10": 0, "20": 1}
    scores = model.score_users_raw([20.0, "10"])
    np.testing.assert_allclose(scores, [[2.0, 0.0, 2.0], [1.0, 3.0, 0.0]])
    with pytest.raises(KeyError, match="99"):
        model.score_users_raw([10, 99])


def _served(champion_store, tmp_path: Path) -> tuple[EmbeddingRecommender, object]:
    from tasks.config import SplitConfig
    from tasks.split import split_dataset

    _, dataset, trained = champion_store
    model = EmbeddingRecommender()
    model._load(
        export_recommender(trained.model, dataset, split_dataset(dataset, SplitConfig(seed=3)), tmp_path)
    )
    return model, dataset


def test_a_new_users_history_is_folded_in_without_retraining(champion_store, tmp_path: Path) -> None:
    import torch

    from models.base import History

    model, dataset = _served(champion_store, tmp_path)
    _, _, trained = champion_store
    raw = dataset.item_ids[[3, 7, 11]].tolist()
    out = model.predict(None, pd.DataFrame({"history": [",".join(str(i) for i in raw)]}), params={"k": 5})
    assert out["rank"].tolist() == [1, 2, 3, 4, 5] and not out["fallback"].any()
    assert not set(out["item"]) & set(raw)  # the history is never recommended
    with trained.model.inference():  # the trained model's own fold-in ranks the same items first
        scores = trained.model.score_history(History.from_lists([[3, 7, 11]]))[0]
    scores[[3, 7, 11]] = -torch.inf
    expected = dataset.item_ids[torch.topk(scores, 5).indices.numpy()].tolist()
    assert out["item"].tolist() == expected
    # A list works in-process, duplicates count once.
    again = model.predict(None, {"history": [[raw[0], raw[1], raw[2], raw[0]]]}, params={"k": 5})
    assert again["item"].tolist() == expected


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("", r"the history \(row 0\) is empty"),
        (" , ", r"the history \(row 0\) is empty"),
        ("999999,abc", r"history item\(s\) 999999, abc \(row 0\) are not in this model's catalogue"),
    ],
)
def test_bad_histories_are_one_line_400_errors(champion_store, tmp_path: Path, history, message) -> None:
    from tasks.recommend import BadRecommendationInput

    model, _ = _served(champion_store, tmp_path)
    with pytest.raises(BadRecommendationInput, match=message) as info:
        model.predict(None, pd.DataFrame({"history": [history]}))
    assert "\n" not in info.value.message and info.value.get_http_status_code() == 400


def test_a_missing_history_beside_known_users_is_no_history(champion_store, tmp_path: Path) -> None:
    model, dataset = _served(champion_store, tmp_path)
    known = int(dataset.user_ids[0])
    frame = pd.DataFrame({"user": [known, None], "history": [None, str(dataset.item_ids[2])]})
    out = model.predict(None, frame, params={"k": 3})
    assert len(out) == 6 and not out["fallback"].any()


@pytest.mark.parametrize(
    ("name", "hparams"), [("ease", {"l2": 20.0, "export_neighbors": 60}), ("itemknn", {})]
)
def test_item_item_model_is_served_from_a_fresh_process(tmp_path: Path, name: str, hparams: dict) -> None:
    """Closed-form item-item models export sparse weights that a fresh process loads and scores."""
    import mlflow
    import torch

    from models.base import History
    from tasks.config import SplitConfig
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.recommend import ServedRecommender, recommender_signature
    from tasks.split import split_dataset
    from tasks.train import TrainConfig, train

    dataset = build_dataset(make_synthetic(num_users=40, num_items=60, num_interactions=800, seed=3))
    split = split_dataset(dataset, SplitConfig(seed=3))
    config = TrainConfig(model=name, hparams=hparams, progress=False, device="cpu")
    model = train(build_graphs(dataset, split), split, config).model
    path = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(
        path,
        python_model=ServedRecommender(),
        artifacts=export_recommender(model, dataset, split, tmp_path / "export"),
        signature=recommender_signature(dataset.user_ids, dataset.item_ids),
    )
    user, history = int(dataset.user_ids[0]), [int(i) for i in dataset.item_ids[[2, 5, 7]]]
    script = textwrap.dedent(
        f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({str(path)!r})
        known = model.predict(pd.DataFrame({{"user": [{user}]}}), params={{"k": 5}})
        new = model.predict(pd.DataFrame({{"history": [{",".join(map(str, history))!r}]}}), params={{"k": 5}})
        print(json.dumps(pd.concat([known, new]).to_dict(orient="records")))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 10 and not any(r["fallback"] for r in rows)
    with model.inference():
        known = model.score_users(torch.tensor([0]))[0].double().numpy()
        new = model.score_history(History.from_lists([[2, 5, 7]]))[0].double().numpy()
    known[dataset.item[dataset.user == 0]] = -np.inf
    new[[2, 5, 7]] = -np.inf
    for scores, served in ((known, rows[:5]), (new, rows[5:])):
        expected = np.sort(scores)[::-1][:5]
        np.testing.assert_allclose([r["score"] for r in served], expected, rtol=1e-5)
        internal = [int(np.searchsorted(dataset.item_ids, r["item"])) for r in served]
        np.testing.assert_allclose(scores[internal], expected, rtol=1e-5)


def test_the_registered_champion_takes_a_frame_mixing_users_and_histories(champion_store) -> None:
    """Missing cells of a mixed frame are NaN in float columns; the pyfunc's schema check must let them by."""
    import mlflow

    from tasks import register

    settings, dataset, _ = champion_store
    register.configure_mlflow(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}@champion")
    known, other = (int(u) for u in dataset.user_ids[:2])
    history = ",".join(str(i) for i in dataset.item_ids[[3, 7]])
    frame = pd.DataFrame({"user": [known, None, other], "history": [None, history, None], "k": [2, 4, None]})
    assert frame["user"].dtype == np.float64 and frame["k"].dtype == np.float64  # NaN made them floats
    out = model.predict(frame, params={"k": 3})

    alone = [
        model.predict(pd.DataFrame({"user": [known]}), params={"k": 2}),
        model.predict(pd.DataFrame({"history": [history]}), params={"k": 4}),
        model.predict(pd.DataFrame({"user": [other]}), params={"k": 3}),
    ]
    assert out["item"].tolist() == [i for part in alone for i in part["item"].tolist()]
    assert out["user"].tolist() == [known] * 2 + [None] * 4 + [other] * 3  # ids as given, not 1000.0
    assert not out["fallback"].any()
    with pytest.raises(mlflow.exceptions.MlflowException, match="k must be a whole number"):
        model.predict(pd.DataFrame({"user": [known, other], "k": [2, "many"]}))


# -- explanations (a KG model as champion) ------------------------------------------------------------------


def _register_champion(root: Path, model: str, hparams: dict, epochs: int, lr: float):
    """A tmp MLflow store with one tiny ``model`` registered and promoted to champion."""
    from tasks import register
    from tasks.config import SplitConfig
    from tasks.evaluate import evaluate
    from tasks.graphs import build_graphs
    from tasks.ingest.dataset import build_dataset
    from tasks.ingest.synthetic import make_synthetic
    from tasks.split import split_dataset
    from tasks.train import TrainConfig, train

    (root / "mlflow.yml").write_text(
        "tracking_uri: sqlite:///mlflow.db\nartifact_location: artifacts\nregistered_model_name: rec\n"
        "study_storage: sqlite:///optuna.db\n"
    )
    settings = register.load_mlflow_settings(root / "mlflow.yml")
    dataset = build_dataset(make_synthetic(num_users=40, num_items=60, num_interactions=800, seed=3))
    split = split_dataset(dataset, SplitConfig(seed=3))
    config = TrainConfig(model=model, hparams=hparams, epochs=epochs, lr=lr, progress=False, device="cpu")
    trained = train(build_graphs(dataset, split), split, config)
    lineage = register.Lineage.of(dataset, split)
    parent = register.start_pipeline_run(settings, run_name="t", lineage=lineage, params={})
    child = register.start_model_run(settings, parent_run_id=parent, family=model, lineage=lineage)
    version = register.log_trained_model(
        settings,
        run_id=child,
        trained=trained,
        test_metrics=evaluate(trained.model, split, "test"),
        dataset=dataset,
        split=split,
        lineage=lineage,
    )
    register.promote_if_better(settings, [version], dataset=dataset, split=split)
    register.end_run(settings, parent)
    return settings, dataset, split, trained, version


@pytest.fixture(scope="module")
def kg_champion_store(tmp_path_factory: pytest.TempPathFactory):
    """A tmp MLflow store whose champion is a tiny KGAT."""
    return _register_champion(tmp_path_factory.mktemp("kgstore"), "kgat", {}, epochs=15, lr=0.01)


def _training_items(dataset, split, raw_user) -> set[str]:
    internal = int(np.searchsorted(dataset.user_ids, raw_user))
    return {str(dataset.item_ids[i]) for u, i in split.train.tolist() if u == internal}


def test_served_kg_model_explains_with_paths_from_the_users_history(
    kg_champion_store, tmp_path: Path
) -> None:
    from mlflow.exceptions import MlflowException

    from models.kgat import KGExplainer

    _, dataset, split, trained, _ = kg_champion_store
    artifacts = export_recommender(trained.model, dataset, split, tmp_path)
    served = EmbeddingRecommender()
    served._load(artifacts)
    users = dataset.user_ids[:6].tolist()
    plain = served.predict(None, pd.DataFrame({"user": users}), params={"k": 5})
    out = served.predict(None, pd.DataFrame({"user": users}), params={"k": 5, "explain": True})
    pd.testing.assert_frame_equal(out.drop(columns="explanation"), plain)  # explaining changes nothing else
    explainer = KGExplainer.load(artifacts["explainer"])
    names = {name: n for n, name in enumerate(explainer.entity_names)}
    relation_names = set(dataset.relation_names)
    explained = 0
    for row in out.itertuples(index=False):
        history = _training_items(dataset, split, row.user)
        internal_user = int(np.searchsorted(dataset.user_ids, row.user))
        internal_item = int(np.searchsorted(dataset.item_ids, row.item))
        expected = explainer.explain(internal_user, [internal_item])[0]
        assert row.explanation == " | ".join(explainer.describe(p) for p in expected)
        for path in filter(None, row.explanation.split(" | ")):
            start, _, rest = path.partition(" -[")
            assert start in history  # the path starts at an item the user trained on
            assert path.rsplit(" (", 1)[0].endswith(f"-> {row.item}")  # and ends at the recommended item
            hops = rest.split("]-> ")
            for hop in hops[:-1]:
                name = hop.rsplit(" -[", 1)[-1].removesuffix(" (inverse)")
                assert name in relation_names
            explained += 1
        assert str(row.item) in names
    assert explained > 0
    mf = EmbeddingRecommender()
    mf._load({k: v for k, v in artifacts.items() if k != "explainer"})
    with pytest.raises(MlflowException, match="cannot explain"):
        mf.predict(None, pd.DataFrame({"user": users}), params={"k": 5, "explain": True})


def test_registering_a_kg_model_logs_explanations_of_sample_users(kg_champion_store) -> None:
    import mlflow

    settings, dataset, split, _, version = kg_champion_store
    client = mlflow.MlflowClient(settings.tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(version.run_id, "explanations/sample_users.json", tmp)
        records = json.loads(Path(path).read_text())["explanations"]
    assert {r["user"] for r in records} == set(dataset.user_ids[:20].tolist())
    assert any(r["paths"] for r in records)
    for record in records:
        history = _training_items(dataset, split, record["user"])
        assert all(p.partition(" -[")[0] in history for p in record["paths"])
        assert str(record["item"]) not in history
