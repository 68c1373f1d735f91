"""Data-parallel training: the shards (pure functions) and real multi-process gloo runs on loopback."""

from __future__ import annotations

import math

import pytest
import torch

from tasks import distributed as ddp
from tasks.train import TrainConfig, data_parallel_refusal, train, train_data_parallel
from tests.models.planted import planted


@pytest.mark.parametrize("num_pairs", [1, 10, 11, 97, 4096])
@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_shards_are_disjoint_cover_every_pair_and_give_every_rank_the_same_batch_count(
    num_pairs, world_size, batch_size
):
    order = ddp.epoch_permutation(num_pairs, seed=3, epoch=5)
    shards = [ddp.shard(order, rank, world_size) for rank in range(world_size)]
    union = torch.cat(shards)
    assert len(union) == num_pairs and torch.equal(union.sort().values, torch.arange(num_pairs))
    lengths = [len(s) for s in shards]
    assert lengths == [ddp.shard_length(num_pairs, r, world_size) for r in range(world_size)]
    assert max(lengths) - min(lengths) <= 1
    batches = [ddp.batch_slices(n, num_pairs, world_size, batch_size) for n in lengths]
    assert len({len(b) for b in batches}) == 1  # no rank waits for a step another rank does not take
    local_batch = math.ceil(batch_size / world_size)
    for shard, slices in zip(shards, batches, strict=True):
        parts = [shard[s] for s in slices]
        assert torch.equal(torch.cat(parts), shard)  # in order, each pair once
        assert all(len(p) <= local_batch for p in parts)
    # The global batch stays batch_size: the steps of an epoch are those of one process, or fewer.
    assert len(batches[0]) <= math.ceil(num_pairs / batch_size) + world_size


def test_the_permutation_is_shared_by_ranks_and_changes_with_the_epoch():
    assert torch.equal(ddp.epoch_permutation(50, 1, 2), ddp.epoch_permutation(50, 1, 2))
    assert not torch.equal(ddp.epoch_permutation(50, 1, 2), ddp.epoch_permutation(50, 1, 3))
    seeds = {ddp.rank_seed(2020, rank, epoch) for rank in range(-1, 4) for epoch in range(1, 6)}
    assert len(seeds) == 25  # every rank and epoch draws its own negatives


def test_closed_form_models_are_refused_with_the_reason():
    from models import get_model

    assert data_parallel_refusal(get_model("lightgcn"), 2) is None
    assert data_parallel_refusal(get_model("ease"), 1) is None
    message = data_parallel_refusal(get_model("ease"), 2)
    assert message is not None and "ease" in message and "closed form" in message
    _, split, graphs = planted(num_users=40, num_items=30, num_interactions=400)
    with pytest.raises(ValueError, match="itemknn cannot be trained by 2 processes"):
        train_data_parallel(graphs, split, TrainConfig(model="itemknn", progress=False), 2)


def test_cuda_n_is_refused_for_ranks():
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        ddp.rank_device("cuda:1", 0)
    assert ddp.rank_device("cpu", 1) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert ddp.rank_device("auto", 1) == torch.device("cpu")
        assert ddp.backend_for(torch.device("cpu")) == "gloo"


@pytest.mark.distributed
def test_two_gloo_processes_train_lightgcn_as_well_as_one():
    # Enough users (600) that validation NDCG@20 is not dominated by a few, and epochs to its plateau.
    _, split, graphs = planted(num_users=600, num_items=300, num_interactions=18_000)
    config = TrainConfig(
        model="lightgcn",
        hparams={"embedding_dim": 32, "num_layers": 2},
        epochs=20,
        batch_size=512,
        lr=0.01,
        device="cpu",
        seed=1,
        patience=100,
        progress=False,
    )
    single = train(graphs, split, config)
    double = train_data_parallel(graphs, split, config, 2, threads=1)
    assert double.world_size == 2 and single.world_size == 1
    assert double.epochs_run == single.epochs_run == 20
    assert [h["epoch"] for h in double.history] == [h["epoch"] for h in single.history]
    # Each epoch covers every pair once in total: the losses follow the single process's.
    assert double.history[-1]["loss"] < 0.6 * double.history[0]["loss"]
    assert double.best_valid is not None and single.best_valid is not None
    one, two = single.best_valid["ndcg@20"], double.best_valid["ndcg@20"]
    assert abs(two - one) <= 0.02 * one, (one, two)
    # The returned model is rank 0's best state: evaluating it again gives the recorded metric.
    from tasks.evaluate import evaluate

    assert evaluate(double.model, split, "valid", (20,))["ndcg@20"] == pytest.approx(two, abs=1e-6)


def _average_on_rank(rank: int, world_size: int, folder: str) -> None:
    """Rank ``rank`` of the gradient-averaging test: distinct gradients and batch sizes per rank."""
    from pathlib import Path

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    try:
        both = torch.nn.Parameter(torch.zeros(3))
        only_rank1 = torch.nn.Parameter(torch.zeros(2))
        nobody = torch.nn.Parameter(torch.zeros(1))
        both.grad = torch.full((3,), float(rank + 1))
        if rank == 1:
            only_rank1.grad = torch.ones(2)
        total = ddp.average_gradients(
            [both, only_rank1, nobody], batch_len=rank + 1, device=torch.device("cpu")
        )
        torch.save(
            {"total": total, "both": both.grad, "only_rank1": only_rank1.grad, "nobody": nobody.grad},
            Path(folder) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_gradients_are_averaged_over_the_global_batch(tmp_path):
    from torch.multiprocessing import spawn

    spawn(_average_on_rank, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for out in results:
        assert out["total"] == 3
        # Batch-weighted mean of the per-rank mean gradients: (1 * 1 + 2 * 2) / 3.
        assert torch.allclose(out["both"], torch.full((3,), 5 / 3))
        # Only rank 1 touched it: its gradient times 2 pairs, over the 3 pairs of the global batch.
        assert torch.allclose(out["only_rank1"], torch.full((2,), 2 / 3))
        assert out["nobody"] is None  # the optimiser skips it, as in one process


def test_every_model_declares_whether_it_trains_data_parallel():
    from models import MODELS

    for name, cls in MODELS.items():
        assert cls.describe()["data_parallel"] is cls.data_parallel, name
        if cls.closed_form:
            assert not cls.data_parallel, f"{name} is closed-form: nothing to shard"
    assert any(cls.data_parallel for cls in MODELS.values())


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("model", "overrides"),
    [
        ("pinsage", {}),  # redraws its random-walk neighbourhoods (buffers) every epoch: rank 0's are kept
        ("graphsage", {}),  # samples sub-graphs inside its loss from the rank's generator
        ("mf", {"negative_sampler": "hard", "sampling": "users", "batch_size": 7}),
    ],
)
def test_models_that_sample_for_themselves_train_in_two_processes(model, overrides):
    _, split, graphs = planted(num_users=60, num_items=40, num_interactions=900, seed=5)
    settings = {"model": model, "epochs": 2, "batch_size": 256, "device": "cpu", "seed": 1, "progress": False}
    config = TrainConfig(**{**settings, **overrides})
    trained = train_data_parallel(graphs, split, config, 2, threads=1)
    assert trained.world_size == 2 and trained.epochs_run == 2
    assert all(math.isfinite(h["loss"]) for h in trained.history)
    assert trained.best_valid is not None and trained.best_valid["ndcg@20"] > 0
