"""The scheduled ``retrain`` flow: reload and validate the data, warm-start, retrain, promote via the gate.

It is :func:`flows.train_and_promote.run_pipeline` with other defaults: each model's study is warm-started
from its best known hyperparameters (the study's best trial for this data, else the registry's latest version
of that family, the champion first), and the trial budget is one trial, so on unchanged data no new trial
runs and on new data only the warm-start trial does. A failed contract stops it before any training, and the
champion moves only through the same promotion gate as ``train-and-promote``.
"""

from __future__ import annotations

from prefect import flow

from flows.train_and_promote import (
    DataContractError,
    PipelineOutcome,
    contract_failed,
    model_task_runner,
    run_pipeline,
)
from tasks.pipeline_config import PipelineParams

#: Defaults of a scheduled retrain: warm start, one trial per model (none when the study already has one).
RETRAIN_DEFAULTS = PipelineParams(n_trials=1, extra_trials=0, warm_start=True)


@flow(name="retrain", log_prints=True, task_runner=model_task_runner())
def retrain(params: PipelineParams = RETRAIN_DEFAULTS) -> PipelineOutcome:
    """Reload, validate, warm-start from the best known hyperparameters, retrain, evaluate and promote.

    Args:
        params: As for ``train-and-promote``; ``warm_start`` is forced on.

    Returns:
        The leaderboard, the registered versions and the promotion decision.
    """
    try:
        return run_pipeline(params.model_copy(update={"warm_start": True}), flow_name="retrain")
    except DataContractError as err:
        return contract_failed(err)
