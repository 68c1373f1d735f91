"""Train one recommender: shuffled mini-batch epochs, early stopping, checkpoints and resume.

The same :func:`train` serves a plain run, every Optuna trial (which prunes by raising from ``on_epoch``)
and the pipeline; it never branches on the model's name, only on what :class:`TrainConfig` says.

Data-parallel training (:mod:`tasks.distributed`): inside a ``torchrun`` launch, or in the processes that
:func:`train_data_parallel` spawns, :func:`train` trains one replica per process on its shard of each
epoch's training pairs, with gradients averaged over the global batch (which stays ``batch_size``: each
rank's batch is ``batch_size / world_size``, and the learning rate is unchanged). Rank 0 evaluates, decides
when to stop (broadcast to the others, so all stop after the same epoch) and alone writes checkpoints.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.base import Recommender
from models.registry import get_model
from models.samplers import make_negative_sampler
from tasks import distributed as ddp
from tasks.evaluate import METRIC_NAMES, Metrics, UnsupportedSplitError, evaluate, unsupported_split
from tasks.graphs import Graphs
from tasks.split import Split

CHECKPOINT_FORMAT = 1

OnEpoch = Callable[[int, dict[str, float]], None]


class TrainConfig(BaseModel):
    """How to train one model (frozen; JSON/YAML friendly).

    Attributes:
        model: Registry name (``mf``, ``lightgcn``, ``ngcf``...).
        hparams: Model hyperparameters overriding the model's ``default_hparams()``.
        epochs: Maximum number of epochs (one epoch is one shuffled pass over every training pair).
        batch_size: Training pairs per step.
        lr: Adam learning rate.
        loss: ``bpr`` or ``softmax`` (sampled softmax / InfoNCE over the negatives).
        temperature: Softmax temperature.
        negative_sampler: ``uniform``, ``popularity`` or ``hard``.
        num_negatives: Negatives drawn per positive.
        sampling: How an epoch's ``n_train`` positives are drawn: ``pairs`` is a shuffled pass over every
            training pair (active users weigh more); ``users`` draws a user uniformly among users with
            training items, then one of their items uniformly, ``n_train`` times with replacement
            (LightGCN-PyTorch's ``UniformSample_original``; every user weighs the same, as in the metrics).
        sampler_alpha: Popularity smoothing exponent of the ``popularity`` sampler.
        sampler_pool_size: Candidates scored per negative by the ``hard`` sampler.
        patience: Evaluations without improvement of ``metric`` before stopping (not epochs).
        eval_every: Evaluate on the validation part every this many epochs (and after the last one).
        metric: Validation metric that early stopping and the best checkpoint follow (higher is better).
        ks: Cut-offs evaluated.
        eval_chunk_size: Users per evaluation chunk (``None``: the evaluator's default).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Seeds initialisation, shuffling, sampling and dropout.
        max_seconds: Wall-clock budget; training stops after the epoch that exceeds it.
        progress: Show a progress bar (only ever on a terminal).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "lightgcn"
    hparams: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=400, ge=1)
    batch_size: int = Field(default=2048, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    loss: Literal["bpr", "softmax"] = "bpr"
    temperature: float = Field(default=0.2, gt=0)
    negative_sampler: Literal["uniform", "popularity", "hard"] = "uniform"
    num_negatives: int = Field(default=1, ge=1)
    sampling: Literal["pairs", "users"] = "pairs"
    sampler_alpha: float = Field(default=0.75, ge=0)
    sampler_pool_size: int = Field(default=10, ge=1)
    patience: int = Field(default=10, ge=1)
    eval_every: int = Field(default=1, ge=1)
    metric: str = "ndcg@20"
    ks: tuple[int, ...] = (10, 20)
    eval_chunk_size: int | None = Field(default=None, ge=1)
    device: str = "auto"
    seed: int = 2020
    max_seconds: float | None = Field(default=None, gt=0)
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        return value

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(k < 1 for k in value):
            raise ValueError(f"ks must be a non-empty tuple of positive cut-offs, got {value}")
        return value

    @model_validator(mode="after")
    def _metric_is_computed(self) -> TrainConfig:
        name, _, k = self.metric.partition("@")
        if name not in METRIC_NAMES or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(
                f"metric {self.metric!r} is not computed: use one of {', '.join(METRIC_NAMES)} "
                f"followed by @K with K in ks={list(self.ks)}"
            )
        return self


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """The outcome of :func:`train`.

    Attributes:
        model: The model with its best-validation state loaded (the last state when there is no validation
            part), in eval mode, on ``device``.
        config: The configuration it was trained with.
        history: One dict per epoch: ``epoch``, ``loss`` (mean over pairs), ``seconds`` (training time of the
            epoch), and on evaluated epochs ``eval_seconds`` and every validation metric (``ndcg@20``...).
        best_epoch: Epoch (1-based) of the returned state.
        best_valid: Validation metrics of the returned state, or ``None`` without a validation part.
        epochs_run: Epochs trained in total (across resumes).
        seconds_per_epoch: Mean training seconds per epoch, evaluation excluded.
        device: Where it was trained.
        stop_reason: ``epochs``, ``early_stopping`` or ``max_seconds`` (``closed_form`` for a closed-form
            model; ``stopped_by_rank0`` on the other ranks when rank 0 failed in ``on_epoch``).
        rank: This process's rank in data-parallel training (0 outside it). Only rank 0's result holds the
            best state and the validation metrics; the other ranks return their last replica.
        world_size: Processes that trained the model together (1: a single process).
    """

    model: Recommender
    config: TrainConfig
    history: list[dict[str, float]]
    best_epoch: int
    best_valid: Metrics | None
    epochs_run: int
    seconds_per_epoch: float
    device: str
    stop_reason: str = "epochs"
    rank: int = 0
    world_size: int = 1


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an error.

    Raises:
        RuntimeError: when CUDA is asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was asked for, but CUDA is not available on this machine")
    return torch.device(name)


def set_threads(threads: int | None) -> int:
    """Let torch use ``threads`` CPU threads (``None``: leave the current setting); returns those in effect.

    Torch applies the number to every thread of the process that starts parallel work afterwards (each
    thread reads it once, at its first parallel operation), so call this before any training starts.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@dataclass
class _State:
    """Everything that changes during training and is checkpointed."""

    epoch: int = 0
    best_value: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_valid: Metrics | None = None
    bad_evals: int = 0
    history: list[dict[str, float]] | None = None
    stop_reason: str = "epochs"

    def __post_init__(self) -> None:
        if self.history is None:
            self.history = []


def train(
    graphs: Graphs,
    split: Split,
    config: TrainConfig,
    *,
    on_epoch: OnEpoch | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
) -> TrainedModel:
    """Train ``config.model`` on ``split.train`` with early stopping on ``split.valid``.

    Each epoch shuffles every training pair, draws ``num_negatives`` negatives per pair (one vectorised call
    per epoch; per batch for the ``hard`` sampler, which scores candidates with the current model) and takes
    one Adam step per batch of ``model.loss``. Every ``eval_every`` epochs the model is evaluated on the
    validation part (full ranking); the best state by ``metric`` is kept in memory (and in the checkpoint),
    and training stops after ``patience`` evaluations without improvement. Without a validation part it runs
    all ``epochs`` and keeps the last state.

    Args:
        graphs: Training graphs (the GNNs take their adjacency from them).
        split: The split; only ``train`` is trained on, ``valid`` drives early stopping, ``test`` is unused.
        config: What to train and how.
        on_epoch: Called as ``on_epoch(epoch, record)`` after every evaluation, ``record`` being the epoch's
            history entry. An exception it raises (e.g. ``optuna.TrialPruned``) propagates, after the
            checkpoint of that epoch has been written.
        checkpoint_path: Where to write a checkpoint (model, optimizer, RNG states, best state, history)
            after every epoch; ``None`` keeps everything in memory.
        resume: Continue from ``checkpoint_path`` when it exists (the same model and hyperparameters are
            required; ``epochs``, ``patience`` and ``max_seconds`` may differ). Training then continues
            exactly as if it had not been interrupted.

    Returns:
        The trained model with its best state loaded, and its history.

    Raises:
        ValueError: on an empty training part, or a checkpoint from another model or configuration.
        UnsupportedSplitError: the model cannot be evaluated on this split (a cold-items split for a model
            that cannot score unseen items), raised before any training.
    """
    if len(split.train) == 0:
        raise ValueError("the split has no training interactions")
    cls = get_model(config.model)
    reason = unsupported_split(cls, split.method)
    if reason is not None:
        raise UnsupportedSplitError(reason)
    refusal = data_parallel_refusal(cls, ddp.launched_world_size())
    if refusal is not None:
        raise ValueError(refusal)
    context = ddp.current_context(config.device)
    try:
        refusal = data_parallel_refusal(cls, 1 if context is None else context.world_size)
        if refusal is not None:
            raise ValueError(refusal)
        device = resolve_device(config.device) if context is None else context.device
        model, state = _train_here(
            cls, graphs, split, config, device, context, on_epoch, checkpoint_path, resume
        )
    finally:
        ddp.finish(context)

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    assert state.history is not None
    train_seconds = [h["seconds"] for h in state.history]
    return TrainedModel(
        model=model,
        config=config,
        history=list(state.history),
        best_epoch=state.best_epoch,
        best_valid=state.best_valid,
        epochs_run=state.epoch,
        seconds_per_epoch=sum(train_seconds) / max(len(train_seconds), 1),
        device=str(device),
        stop_reason=state.stop_reason,
        rank=0 if context is None else context.rank,
        world_size=1 if context is None else context.world_size,
    )


def data_parallel_refusal(cls: type[Recommender], world_size: int) -> str | None:
    """Why ``cls`` cannot be trained by ``world_size`` processes (its ``data_parallel`` flag), or ``None``."""
    if world_size <= 1 or cls.data_parallel:
        return None
    why = (
        "it is computed in closed form by one fit() over the whole training graph, with no gradient "
        "to average"
        if cls.closed_form
        else "its training cannot be split into shards of training pairs"
    )
    return f"{cls.name} cannot be trained by {world_size} processes: {why}; train it with one process"


def train_data_parallel(
    graphs: Graphs,
    split: Split,
    config: TrainConfig,
    nproc: int,
    *,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    threads: int | None = None,
) -> TrainedModel:
    """:func:`train` by ``nproc`` processes on this machine (data-parallel), returning rank 0's result.

    Spawns ``nproc`` fresh processes (``torch.multiprocessing``, start method ``spawn``, as CUDA needs) that
    meet through a file in a private temporary folder (no port to pick), read the graphs and the split from
    a file there, and each run :func:`train` as one rank: gloo on the CPU, NCCL with rank ``r`` on
    ``cuda:r`` when CUDA is there and ``config.device`` allows it. Rank 0 hands back its best state, which is
    loaded into a model built here. ``nproc = 1`` is plain :func:`train`. For several machines, start the
    ranks with ``torchrun`` instead; :func:`train` joins that launch by itself.

    Args:
        graphs: Training graphs.
        split: The split.
        config: What to train and how; ``batch_size`` is the global batch (each rank takes its share).
        nproc: Processes to train with.
        checkpoint_path: Rank 0 writes the checkpoint here; every rank reads it to resume.
        resume: Continue from ``checkpoint_path``.
        threads: Torch threads per process (``None``: this process's threads divided among the ranks).

    Returns:
        The trained model (best validation state, on rank 0's device), its history and ``world_size``.

    Raises:
        ValueError: the model cannot be trained data-parallel, ``nproc`` < 1, or this process is already one
            rank of a launch.
        RuntimeError: a rank failed (its error, in the message).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    cls = get_model(config.model)
    refusal = data_parallel_refusal(cls, nproc)
    if refusal is not None:
        raise ValueError(refusal)
    if nproc == 1:
        return train(graphs, split, config, checkpoint_path=checkpoint_path, resume=resume)
    if ddp.launched_world_size() > 1:
        raise ValueError(
            "this process is already one rank of a torchrun launch; give the processes to torchrun "
            "(--nproc-per-node) or to --nproc, not to both"
        )
    from torch.multiprocessing import spawn
    from torch.multiprocessing.spawn import ProcessException

    per_rank_threads = threads if threads is not None else max(1, torch.get_num_threads() // nproc)
    with tempfile.TemporaryDirectory(prefix="gnnrec-ddp-") as tmp:
        folder = Path(tmp)
        torch.save({"graphs": graphs, "split": split}, folder / "inputs.pt")
        args = (nproc, str(folder), config, checkpoint_path, resume, per_rank_threads)
        try:
            spawn(_rank_main, args=args, nprocs=nproc, join=True, start_method="spawn")
        except ProcessException as exc:  # a rank raised, or died (killed, out of memory)
            last_line = str(exc).strip().splitlines()[-1]
            raise RuntimeError(f"data-parallel training failed in a worker process: {last_line}") from exc
        # Our own file (it holds the Metrics dataclass), so a full unpickle is expected.
        result = torch.load(folder / "result.pt", weights_only=False)
    model = cls.from_graphs(graphs, **config.hparams)
    model.load_state_dict(result.pop("state"))
    model.to(torch.device(result["device"])).eval()
    return TrainedModel(model=model, config=config, **result)


def _rank_main(
    rank: int,
    world_size: int,
    folder: str,
    config: TrainConfig,
    checkpoint_path: Path | None,
    resume: bool,
    threads: int,
) -> None:
    """One spawned rank of :func:`train_data_parallel`: join the group, train, rank 0 saves its result."""
    os.environ["LOCAL_RANK"] = str(rank)  # one machine: the local rank is the rank
    set_threads(threads)
    device = ddp.rank_device(config.device, rank)
    ddp.init_process_group(
        device, rank=rank, world_size=world_size, init_method=f"file://{Path(folder) / 'rendezvous'}"
    )
    try:
        with warnings.catch_warnings():
            # Unpickling the CSR adjacency flags CSR as "beta", once per rank; the project uses it throughout.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            inputs = torch.load(Path(folder) / "inputs.pt", weights_only=False)
        trained = train(
            inputs["graphs"], inputs["split"], config, checkpoint_path=checkpoint_path, resume=resume
        )
        if rank == 0:
            result = {
                "state": {k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
                "history": trained.history,
                "best_epoch": trained.best_epoch,
                "best_valid": trained.best_valid,
                "epochs_run": trained.epochs_run,
                "seconds_per_epoch": trained.seconds_per_epoch,
                "device": trained.device,
                "stop_reason": trained.stop_reason,
                "world_size": world_size,
            }
            torch.save(result, Path(folder) / "result.pt")
    finally:
        torch.distributed.destroy_process_group()


def _train_here(
    cls: type[Recommender],
    graphs: Graphs,
    split: Split,
    config: TrainConfig,
    device: torch.device,
    context: ddp.DistContext | None,
    on_epoch: OnEpoch | None,
    checkpoint_path: Path | None,
    resume: bool,
) -> tuple[Recommender, _State]:
    """Build the model and train it in this process (one replica of a data-parallel run with ``context``)."""
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        model = cls.from_graphs(graphs, **config.hparams)
        generator = torch.Generator(device=device)
        generator.manual_seed(config.seed)
        state = _State()
        if cls.closed_form:
            _fit_closed_form(model, graphs, split, config, state, device, on_epoch)
        else:
            model = model.to(device)
            if context is not None:
                ddp.broadcast_parameters(model)  # one starting point, whatever each rank's RNG did
            optimizer = make_optimizer(model, config.lr)
            if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
                # Every rank reads rank 0's checkpoint (one machine, or a shared file system).
                state = _load_checkpoint(Path(checkpoint_path), model, optimizer, generator, config, device)
            _fit(
                model,
                optimizer,
                generator,
                graphs,
                split,
                config,
                state,
                device,
                on_epoch,
                checkpoint_path,
                context,
            )
    return model, state


def _fit_closed_form(
    model: Recommender,
    graphs: Graphs,
    split: Split,
    config: TrainConfig,
    state: _State,
    device: torch.device,
    on_epoch: OnEpoch | None,
) -> None:
    """The closed-form path: one :meth:`~models.base.Recommender.fit`, then one validation evaluation.

    The history holds one record (``epoch`` 1, ``loss`` 0, ``seconds`` of the fit) so that reports and
    tuning read closed-form and SGD models alike; ``epochs``, ``lr`` and the samplers do not apply.
    """
    assert state.history is not None
    started = time.perf_counter()
    model.fit(graphs)
    model.to(device)
    record: dict[str, float] = {"epoch": 1.0, "loss": 0.0, "seconds": time.perf_counter() - started}
    state.epoch = state.best_epoch = 1
    state.stop_reason = "closed_form"
    if len(split.valid) > 0:
        eval_kwargs: dict[str, Any] = {}
        if config.eval_chunk_size is not None:
            eval_kwargs["chunk_size"] = config.eval_chunk_size
        metrics = evaluate(model, split, "valid", config.ks, **eval_kwargs)
        record["eval_seconds"] = metrics.seconds
        record.update(metrics.values)
        state.best_value, state.best_valid = metrics[config.metric], metrics
    state.history.append(record)
    if on_epoch is not None and state.best_valid is not None:
        on_epoch(1, dict(record))


def make_optimizer(model: Recommender, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel where torch has one (CPU and CUDA), ~10x faster than the default loop on CPU."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


_STOP_CODES = ("epochs", "early_stopping", "max_seconds", "stopped_by_rank0")
"""Rank 0's decision after an epoch, broadcast as its index: go on, or why everyone stops now."""


def _fit(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    graphs: Graphs,
    split: Split,
    config: TrainConfig,
    state: _State,
    device: torch.device,
    on_epoch: OnEpoch | None,
    checkpoint_path: Path | None,
    context: ddp.DistContext | None = None,
) -> None:
    """The epoch loop; mutates ``state``, ``model`` and ``optimizer``.

    With a ``context`` this process is one rank of a data-parallel run: it trains on its shard of every
    epoch, averages gradients with the other ranks after each backward pass, and follows rank 0's decision
    to stop; only rank 0 evaluates, reports progress and writes the checkpoint.
    """
    assert state.history is not None
    pairs = torch.as_tensor(split.train, dtype=torch.long, device=device).reshape(-1, 2)
    train_users, train_items = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
    num_pairs = len(pairs)
    sampler = make_negative_sampler(
        config.negative_sampler,
        pairs,
        graphs.num_users,
        graphs.num_items,
        alpha=config.sampler_alpha,
        pool_size=config.sampler_pool_size,
        device=device,
    )
    by_user = group_by_user(pairs, graphs.num_users) if config.sampling == "users" else None
    scores_candidates = config.negative_sampler == "hard"
    main = context is None or context.is_main
    has_valid = len(split.valid) > 0
    eval_kwargs: dict[str, Any] = {}
    if config.eval_chunk_size is not None:
        eval_kwargs["chunk_size"] = config.eval_chunk_size
    started = time.perf_counter()

    if state.bad_evals >= config.patience and has_valid:
        state.stop_reason = "early_stopping"
        return
    progress = _progress(config, state.epoch) if main else nullcontext(_no_progress)
    with progress as advance:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            model.train()
            if context is not None:
                # Each rank draws its negatives (and the model its samples) from its own stream, seeded by
                # (seed, rank, epoch), so a resumed run continues exactly without per-rank RNG states.
                rank_seed = ddp.rank_seed(config.seed, context.rank, epoch)
                generator.manual_seed(rank_seed)
                torch.manual_seed(rank_seed)  # dropout masks differ between ranks
            model.on_epoch_start(epoch, generator)
            if context is not None:
                ddp.broadcast_buffers(model)  # state a model redrew from its rank's generator: rank 0's
            epoch_start = time.perf_counter()
            users_all, pos_all, batches = _epoch_positives(
                epoch, train_users, train_items, by_user, generator, config, context
            )
            neg_all = None
            if not scores_candidates:
                neg_all = sampler.sample(users_all, config.num_negatives, generator=generator)
            total = torch.zeros((), device=device)
            for batch in batches:
                users, pos = users_all[batch], pos_all[batch]
                optimizer.zero_grad(set_to_none=True)
                if len(users) > 0:
                    if neg_all is not None:
                        neg = neg_all[batch]
                    else:
                        neg = sampler.sample(
                            users,
                            config.num_negatives,
                            generator=generator,
                            score_fn=model.candidate_scorer(),
                        )
                    neg = model.training_negatives(users, pos, neg)
                    loss = model.loss(users, pos, neg, loss=config.loss, temperature=config.temperature)
                    loss.backward()
                    total += loss.detach() * len(users)
                if context is not None:
                    ddp.average_gradients(model.parameters(), len(users), device)
                optimizer.step()
            if context is not None:
                total = ddp.all_sum(total)  # every rank reports the loss over all pairs
            mean_loss = float(total) / num_pairs
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"the training loss of {config.model} became {mean_loss} at epoch {epoch}; "
                    f"lower the learning rate (lr={config.lr})"
                )
            record: dict[str, float] = {
                "epoch": float(epoch),
                "loss": mean_loss,
                "seconds": time.perf_counter() - epoch_start,
            }
            state.epoch = epoch
            failure: BaseException | None = None
            if main:
                failure = _after_epoch(
                    model,
                    optimizer,
                    generator,
                    split,
                    config,
                    state,
                    device,
                    record,
                    started,
                    eval_kwargs,
                    on_epoch,
                    checkpoint_path,
                    advance,
                )
            else:
                state.history.append(record)
            if context is not None:
                code = _STOP_CODES.index("stopped_by_rank0" if failure else state.stop_reason)
                state.stop_reason = _STOP_CODES[ddp.broadcast_int(code, device)]
            if failure is not None:
                raise failure
            if state.stop_reason != "epochs":
                break


def _no_progress(record: dict[str, float], best: float | None) -> None:
    """The progress callback of ranks other than 0 (they stay silent)."""


def _epoch_positives(
    epoch: int,
    train_users: torch.Tensor,
    train_items: torch.Tensor,
    by_user: UserGroups | None,
    generator: torch.Generator,
    config: TrainConfig,
    context: ddp.DistContext | None,
) -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    """This process's (user, positive) pairs of ``epoch`` and how they split into batches.

    One process: every training pair in a shuffled order (or ``n`` user-uniform draws), batches of
    ``batch_size``. One rank of ``world_size``: its shard of a permutation that all ranks share (or its share
    of the draws, from its own generator), split into as many batches as every other rank's
    (:func:`tasks.distributed.batch_slices`).

    Returns:
        Users ``[n_r]``, positives ``[n_r]`` and the batches as slices into them.
    """
    num_pairs = len(train_users)
    device = train_users.device
    if context is None:
        if by_user is not None:
            users_all, pos_all = draw_by_user(by_user, num_pairs, generator)
        else:
            order = torch.randperm(num_pairs, generator=generator, device=device)
            users_all, pos_all = train_users[order], train_items[order]
        steps = range(0, num_pairs, config.batch_size)
        return users_all, pos_all, [slice(start, start + config.batch_size) for start in steps]
    rank, world_size = context.rank, context.world_size
    if by_user is not None:
        users_all, pos_all = draw_by_user(by_user, ddp.shard_length(num_pairs, rank, world_size), generator)
    else:
        mine = ddp.shard(ddp.epoch_permutation(num_pairs, config.seed, epoch), rank, world_size).to(device)
        users_all, pos_all = train_users[mine], train_items[mine]
    return users_all, pos_all, ddp.batch_slices(len(users_all), num_pairs, world_size, config.batch_size)


def _after_epoch(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    split: Split,
    config: TrainConfig,
    state: _State,
    device: torch.device,
    record: dict[str, float],
    started: float,
    eval_kwargs: dict[str, Any],
    on_epoch: OnEpoch | None,
    checkpoint_path: Path | None,
    advance: Callable[[dict[str, float], float | None], None],
) -> BaseException | None:
    """Evaluate when due, keep the best state, decide whether to stop, checkpoint, report, call ``on_epoch``.

    Returns:
        What ``on_epoch`` raised (``None`` when it returned), for the caller to raise once the other ranks
        of a data-parallel run know that training stops.
    """
    assert state.history is not None
    epoch = state.epoch
    has_valid = len(split.valid) > 0
    out_of_time = config.max_seconds is not None and time.perf_counter() - started > config.max_seconds
    last = epoch == config.epochs or out_of_time
    evaluated = has_valid and (epoch % config.eval_every == 0 or last)
    if evaluated:
        metrics = evaluate(model, split, "valid", config.ks, **eval_kwargs)
        record["eval_seconds"] = metrics.seconds
        record.update(metrics.values)
        value = metrics[config.metric]
        if value > state.best_value:
            state.best_value, state.best_epoch, state.best_valid = value, epoch, metrics
            state.best_state = _copy_state(model)
            state.bad_evals = 0
        else:
            state.bad_evals += 1
    elif not has_valid:
        state.best_epoch = epoch
        state.best_state = None  # the last state is the result
    state.history.append(record)
    if has_valid and state.bad_evals >= config.patience:
        state.stop_reason = "early_stopping"
    elif out_of_time:
        state.stop_reason = "max_seconds"
    if checkpoint_path is not None:
        _save_checkpoint(Path(checkpoint_path), model, optimizer, generator, config, state, device)
    advance(record, state.best_value if has_valid else None)
    if evaluated and on_epoch is not None:
        try:
            on_epoch(epoch, dict(record))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller, after the other ranks know
            return exc
    return None


@dataclass(frozen=True)
class UserGroups:
    """Training items grouped by user (CSR layout), for user-uniform sampling.

    Attributes:
        active: Users with at least one training item, ``[A]``.
        indptr: ``items[indptr[u]:indptr[u + 1]]`` are user ``u``'s items, ``[U + 1]``.
        items: Items sorted by user, ``[n]``.
    """

    active: torch.Tensor
    indptr: torch.Tensor
    items: torch.Tensor


def group_by_user(pairs: torch.Tensor, num_users: int) -> UserGroups:
    """Group training pairs ``[n, 2]`` by user (vectorised)."""
    order = torch.argsort(pairs[:, 0], stable=True)
    degree = torch.bincount(pairs[:, 0], minlength=num_users)
    indptr = torch.zeros(num_users + 1, dtype=torch.long, device=pairs.device)
    indptr[1:] = torch.cumsum(degree, 0)
    return UserGroups(active=torch.nonzero(degree).flatten(), indptr=indptr, items=pairs[order, 1])


def draw_by_user(
    groups: UserGroups, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` (user, positive) pairs: a uniform active user, then a uniform item of that user.

    Returns:
        Users ``[size]`` and their positives ``[size]``.
    """
    device = groups.items.device
    pick = torch.randint(0, len(groups.active), (size,), generator=generator, device=device)
    users = groups.active[pick]
    start, degree = groups.indptr[users], groups.indptr[users + 1] - groups.indptr[users]
    offset = (torch.rand(size, generator=generator, device=device, dtype=torch.float64) * degree).long()
    return users, groups.items[start + torch.minimum(offset, degree - 1)]


def _copy_state(model: Recommender) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save_checkpoint(
    path: Path,
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: TrainConfig,
    state: _State,
    device: torch.device,
) -> None:
    """Write the checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": config.model,
        "hparams": model.hparams,
        "config": config.model_dump(mode="json"),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "state": copy.copy(state.__dict__),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(
    path: Path,
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: TrainConfig,
    device: torch.device,
) -> _State:
    """Restore model, optimizer and RNG states; return the training state to continue from."""
    # Our own file (it holds the Metrics dataclass and RNG states), so a full unpickle is expected.
    payload = torch.load(path, map_location=device, weights_only=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a gnnrec training checkpoint (format {payload.get('format')!r})")
    if payload["model_name"] != config.model or payload["hparams"] != model.hparams:
        raise ValueError(
            f"{path} holds {payload['model_name']} with {payload['hparams']}, but this run trains "
            f"{config.model} with {model.hparams}; use another checkpoint path or resume=False"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"].cpu())
    torch.set_rng_state(payload["torch_rng"].cpu())
    if payload["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(payload["cuda_rng"].cpu(), device)
    state = _State(**payload["state"])
    state.stop_reason = "epochs"
    return state


def _progress_line(config: TrainConfig, record: dict[str, float], best: float | None) -> None:
    """One line on stderr for an evaluated epoch (every ``eval_every`` epochs without a validation part)."""
    epoch = int(record["epoch"])
    evaluated = config.metric in record
    if not evaluated and epoch % config.eval_every and epoch != config.epochs:
        return
    line = f"{config.model} epoch {epoch}/{config.epochs}: loss {record['loss']:.4f}"
    if evaluated:
        line += f", {config.metric} {record[config.metric]:.4f}"
    if best is not None and math.isfinite(best):
        line += f" (best {best:.4f})"
    print(f"{line}, {record['seconds']:.1f} s", file=sys.stderr, flush=True)


@contextmanager
def _progress(config: TrainConfig, done: int) -> Iterator[Callable[[dict[str, float], float | None], None]]:
    """Progress on stderr, so that stdout stays clean for ``--json``.

    On a terminal, a rich bar with the loss and the validation metric; off a terminal (a pipe, a log file,
    CI) one plain line per evaluation instead, so a long run is never silent. Nothing when
    ``config.progress`` is off.
    """
    if not config.progress:
        yield lambda record, best: None
        return
    if not (sys.stdout.isatty() and sys.stderr.isatty()) or os.environ.get("CI"):
        yield lambda record, best: _progress_line(config, record, best)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(f"[bold]{config.model}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),  # stdout stays clean for --json
        transient=False,
    )
    with progress:
        task = progress.add_task("train", total=config.epochs, completed=done, status="")

        def advance(record: dict[str, float], best: float | None) -> None:
            status = f"loss {record['loss']:.4f}"
            if config.metric in record:
                status += f"  {config.metric} {record[config.metric]:.4f}"
            if best is not None and math.isfinite(best):
                status += f" (best {best:.4f})"
            progress.update(task, advance=1, status=status)

        yield advance
