"""MLflow tracking, registration and champion promotion, configured by ``mlflow.yml``.

One module per job: :mod:`~tasks.register.settings` (``mlflow.yml``), :mod:`~tasks.register.lineage`
(tags, code version), :mod:`~tasks.register.tracking` (runs, params, metrics, trial logger),
:mod:`~tasks.register.plots`, :mod:`~tasks.register.versions` (log and register a trained model) and
:mod:`~tasks.register.promotion` (the gate), with :mod:`~tasks.register.health` (is the champion usable?) and
:mod:`~tasks.register.rescore` (a registered model scored on another dataset's split). Everything public
except ``rescore`` (it imports torch) is re-exported here: ``from tasks.register import promote_if_better``.

Layout of what a pipeline run leaves in MLflow:

* one **parent run** per flow run (``start_pipeline_run``), holding the leaderboard table and chart;
* one **child run** per model family (``start_model_run``), holding the final model's hyperparameters,
  per-epoch curves (step metrics), validation and test metrics, a training-curve plot, and the model itself
  as an MLflow pyfunc recommender (:mod:`tasks.recommend`) registered as a new version of one registered
  model;
* one **nested run** per Optuna trial under its model's child run (``trial_logger``).

Every run and every registered version carries the lineage as tags: dataset name and fingerprint, split key
(method, seed and content hash), model family, git commit and code version; a model identical to a registered
version (same code version, data, split, hyperparameters and training settings) reuses that version.
Promotion (:func:`promote_if_better`) compares the challenger with the champion on the challenger's data,
moves the alias (``champion``) and, when configured, the registry stage; consumers load
``models:/NAME@champion``.

Metric names: MLflow does not allow ``@`` in names, so ``ndcg@20`` on the validation part is logged as
``valid_ndcg_at_20`` (see :func:`metric_key`).
"""

from __future__ import annotations

from tasks.register.health import ChampionHealth, check_champion
from tasks.register.lineage import (
    TAG_CODE,
    TAG_DATASET,
    TAG_FAMILY,
    TAG_FINGERPRINT,
    TAG_GIT,
    TAG_HPARAMS,
    TAG_PARENT,
    TAG_PREFIX,
    TAG_ROLE,
    TAG_RUN_NAME,
    TAG_SPLIT,
    Lineage,
    code_version,
    git_commit,
    source_digest,
    split_key,
)
from tasks.register.plots import log_leaderboard, training_curve_png
from tasks.register.promotion import PromotionDecision, promote_if_better, select_challenger
from tasks.register.settings import (
    CONFIG_ENV,
    MlflowSettings,
    configure_mlflow,
    load_mlflow_settings,
    mlflow_client,
)
from tasks.register.tracking import (
    end_run,
    log_history,
    log_metrics,
    log_params,
    metric_key,
    pipeline_run,
    start_model_run,
    start_pipeline_run,
    trial_logger,
)
from tasks.register.versions import (
    TAG_IDENTITY,
    RegisteredVersion,
    champion_hparams,
    current_champion,
    find_identical_version,
    load_version,
    log_trained_model,
    model_identity,
    registered_version_of_run,
)

__all__ = [
    "CONFIG_ENV",
    "TAG_CODE",
    "TAG_DATASET",
    "TAG_FAMILY",
    "TAG_FINGERPRINT",
    "TAG_GIT",
    "TAG_HPARAMS",
    "TAG_IDENTITY",
    "TAG_PARENT",
    "TAG_PREFIX",
    "TAG_ROLE",
    "TAG_RUN_NAME",
    "TAG_SPLIT",
    "ChampionHealth",
    "Lineage",
    "MlflowSettings",
    "PromotionDecision",
    "RegisteredVersion",
    "champion_hparams",
    "check_champion",
    "code_version",
    "configure_mlflow",
    "current_champion",
    "end_run",
    "find_identical_version",
    "git_commit",
    "load_mlflow_settings",
    "load_version",
    "log_history",
    "log_leaderboard",
    "log_metrics",
    "log_params",
    "log_trained_model",
    "metric_key",
    "model_identity",
    "mlflow_client",
    "pipeline_run",
    "promote_if_better",
    "registered_version_of_run",
    "select_challenger",
    "source_digest",
    "split_key",
    "start_model_run",
    "start_pipeline_run",
    "trial_logger",
    "training_curve_png",
]
