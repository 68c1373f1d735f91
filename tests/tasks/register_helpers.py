"""Registered models of known quality on tiny planted data, for the promotion gate's tests (no training).

Users and items belong to one of ``clusters`` communities; each user picks items of its own community, the
more popular ones more often. A model's quality is set by hand instead of by training: an MF whose user
embedding is its community (plus ``noise``) and whose item embedding is its community plus its popularity.
``noise=0`` ranks the user's own community by popularity (near the best possible), a large ``noise`` drifts
towards random; :func:`wrong_community_model` is worse than popularity. Each model is registered through
the real :func:`tasks.register.log_trained_model` (pyfunc export, tags, identity), with metrics from the real
:func:`tasks.evaluate.evaluate`.
"""

from __future__ import annotations

import numpy as np
import torch

from models.mf import MFBPR
from tasks import register
from tasks.config import SplitConfig
from tasks.evaluate import evaluate
from tasks.ingest.dataset import Dataset
from tasks.split import Split, split_dataset
from tasks.train import TrainConfig, TrainedModel

CLUSTERS = 4


def planted_dataset(
    num_users: int = 40, num_items: int = 48, per_user: int = 10, seed: int = 0, name: str = "planted"
) -> Dataset:
    """Community data with popularity skew; raw user ids ``1000 + u``, raw item ids ``5000 + i``."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        pool = np.arange(u % CLUSTERS, num_items, CLUSTERS)
        weights = 1.0 / np.arange(1, len(pool) + 1)
        chosen = rng.choice(pool, size=per_user, replace=False, p=weights / weights.sum())
        users += [u] * per_user
        items += chosen.tolist()
    return Dataset(
        name=name,
        user=np.array(users, dtype=np.int64),
        item=np.array(items, dtype=np.int64),
        rating=None,
        timestamp=None,
        user_ids=np.arange(num_users, dtype=np.int64) + 1000,
        item_ids=np.arange(num_items, dtype=np.int64) + 5000,
    )


def first_users(dataset: Dataset, count: int) -> Dataset:
    """The same data restricted to its first ``count`` users (same raw ids, same items)."""
    keep = dataset.user < count
    return Dataset(
        name=dataset.name,
        user=dataset.user[keep],
        item=dataset.item[keep],
        rating=None,
        timestamp=None,
        user_ids=dataset.user_ids[:count],
        item_ids=dataset.item_ids,
    )


def with_new_users(dataset: Dataset, count: int, seed: int = 5) -> Dataset:
    """The same data plus ``count`` users no earlier model has seen (raw ids from 9000)."""
    extra = planted_dataset(count, dataset.num_items, seed=seed)
    return Dataset(
        name=dataset.name,
        user=np.concatenate([dataset.user, extra.user + dataset.num_users]),
        item=np.concatenate([dataset.item, extra.item]),
        rating=None,
        timestamp=None,
        user_ids=np.concatenate([dataset.user_ids, np.arange(count, dtype=np.int64) + 9000]),
        item_ids=dataset.item_ids,
    )


def split_of(dataset: Dataset, seed: int = 1) -> Split:
    """A random 80/10/10 split (every user here has a validation and a test item)."""
    return split_dataset(dataset, SplitConfig(seed=seed))


def planted_model(dataset: Dataset, noise: float, seed: int = 0) -> MFBPR:
    """An MF whose quality is set by ``noise`` (0: community + popularity; large: random)."""
    counts = np.bincount(dataset.item, minlength=dataset.num_items).astype(np.float32)
    model = MFBPR(dataset.num_users, dataset.num_items, embedding_dim=CLUSTERS + 1)
    g = torch.Generator().manual_seed(seed)
    users = torch.zeros(dataset.num_users, CLUSTERS + 1)
    users[torch.arange(dataset.num_users), torch.arange(dataset.num_users) % CLUSTERS] = 1.0
    users[:, CLUSTERS] = 0.1
    users[:, :CLUSTERS] += noise * torch.randn(dataset.num_users, CLUSTERS, generator=g)
    items = torch.zeros(dataset.num_items, CLUSTERS + 1)
    items[torch.arange(dataset.num_items), torch.arange(dataset.num_items) % CLUSTERS] = 1.0
    items[:, CLUSTERS] = torch.from_numpy(counts / max(counts.max(), 1.0))
    with torch.no_grad():
        model.user_embedding.weight.copy_(users)
        model.item_embedding.weight.copy_(items)
    return model


def wrong_community_model(dataset: Dataset) -> MFBPR:
    """An MF that recommends the next community's items to every user: popularity beats it."""
    model = planted_model(dataset, noise=0.0)
    with torch.no_grad():
        model.user_embedding.weight[:, :CLUSTERS] = model.user_embedding.weight[:, :CLUSTERS].roll(1, dims=1)
    return model


def register_model(
    settings: register.MlflowSettings, dataset: Dataset, split: Split, model: MFBPR, recipe: int
) -> register.RegisteredVersion:
    """Register ``model`` as the real pipeline does; ``recipe`` (the training seed) tells recipes apart.

    Two calls with the same data, split, hyperparameters and ``recipe`` are the same model to the registry
    (its identity does not look at the weights), so give every distinct model its own ``recipe``.
    """
    valid = evaluate(model, split, "valid")
    config = TrainConfig(
        model="mf", hparams=model.hparams, epochs=1, seed=recipe, progress=False, device="cpu"
    )
    trained = TrainedModel(
        model=model,
        config=config,
        history=[{"epoch": 1, "loss": 0.5, "ndcg@20": valid["ndcg@20"]}],
        best_epoch=1,
        best_valid=valid,
        epochs_run=1,
        seconds_per_epoch=0.0,
        device="cpu",
    )
    lineage = register.Lineage.of(dataset, split)
    parent = register.start_pipeline_run(settings, run_name="test", lineage=lineage, params={})
    child = register.start_model_run(settings, parent_run_id=parent, family="mf", lineage=lineage)
    version = register.log_trained_model(
        settings,
        run_id=child,
        trained=trained,
        test_metrics=evaluate(model, split, "test"),
        dataset=dataset,
        split=split,
        lineage=lineage,
    )
    register.end_run(settings, child)
    register.end_run(settings, parent)
    return version


def delete_artifacts(settings: register.MlflowSettings, version: str) -> None:
    """Delete the files of a registered version, as a lost disk or a careless cleanup would."""
    import shutil
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    source = client.get_model_version(settings.registered_model_name, version).source  # models:/m-<id>
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    shutil.rmtree(urlparse(location).path)
