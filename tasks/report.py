"""What the pipeline reports about a run: the data report, the leaderboard rows and the per-model run facts.

Plain functions over the steps' typed outputs, so the flows only wire them to Prefect artifacts and MLflow:
:func:`data_report_markdown` is the ``data-report`` artifact, :func:`leaderboard_row` and
:func:`rank_leaderboard` make the ``leaderboard`` table, :func:`run_facts` the extra metrics logged with each
registered version. (The ``promotion-decision`` artifact is
:meth:`tasks.register.PromotionDecision.to_markdown`.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data_checks import ValidationReport
    from tasks.evaluate import Metrics
    from tasks.graphs import Graphs
    from tasks.ingest.dataset import Dataset
    from tasks.register import RegisteredVersion
    from tasks.split import Split
    from tasks.train import TrainedModel
    from tasks.tune import TuneResult


def data_report_markdown(
    report: ValidationReport,
    dataset: Dataset | None = None,
    split: Split | None = None,
    graphs: Graphs | None = None,
) -> str:
    """The ``data-report`` artifact: the contract's verdict and summary, then dataset, split and graphs.

    Args:
        report: The data contract's report (passed or failed).
        dataset: The indexed dataset, when the contract passed.
        split: The split, when made.
        graphs: The training graphs, when built.

    Returns:
        Markdown; its title says ``passed`` or ``**FAILED**``.
    """
    status = "passed" if report.success else "**FAILED**"
    lines = [f"# Data report: contract {status}", "", "## Data contract (Great Expectations)", "", "```"]
    lines += [report.summary(), "```"]
    if report.docs_path:
        lines += ["", f"Data Docs: `{report.docs_path}`"]
    if dataset is not None:
        lines += ["", "## Dataset", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in dataset.summary().items()]
    if split is not None:
        lines += ["", "## Split", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in split.describe().items()]
    if graphs is not None:
        lines += ["", "## Graphs", "", "```json", json.dumps(graphs.stats, indent=2, default=str), "```"]
    return "\n".join(lines)


def train_seconds(trained: TrainedModel) -> float:
    """Training wall time of a model, evaluation excluded (the sum of its epochs' ``seconds``)."""
    return float(sum(row.get("seconds", 0.0) for row in trained.history))


def run_facts(tuned: TuneResult, trained: TrainedModel) -> dict[str, float]:
    """The tuning and training facts logged as metrics beside a registered version.

    Returns:
        ``tune_seconds``, ``trials``, ``new_trials``, ``pruned_trials`` and ``train_seconds``.
    """
    return {
        "tune_seconds": float(tuned.seconds),
        "trials": float(tuned.n_trials),
        "new_trials": float(tuned.n_new_trials),
        "pruned_trials": float(tuned.n_pruned),
        "train_seconds": train_seconds(trained),
    }


def _rounded(value: float) -> float:
    """Five decimals for a table cell; a non-finite value stays NaN."""
    return round(float(value), 5) if math.isfinite(value) else float("nan")


def leaderboard_row(
    family: str, version: RegisteredVersion, test_metrics: Metrics, trained: TrainedModel, tuned: TuneResult
) -> dict[str, Any]:
    """One model's row of the ``leaderboard`` table.

    Args:
        family: The model family as the run selected it (``mf``, ``lightgcn``...).
        version: The registered version (family, selection metric and its validation and test values).
        test_metrics: Every test metric of the final model.
        trained: The final model (best epoch, training time).
        tuned: Its tuning (time, trials).

    Returns:
        ``model``, ``valid <metric>``, ``test <metric>``, ``test <other metric>`` for every other computed
        metric, ``best epoch``, ``train s``, ``tune s``, ``trials``, ``new trials`` and ``version``.
    """
    metric = version.metric
    return {
        "model": family,
        f"valid {metric}": _rounded(version.valid_value),
        f"test {metric}": _rounded(version.test_value),
        **{f"test {k}": _rounded(v) for k, v in sorted(test_metrics.values.items()) if k != metric},
        "best epoch": int(trained.best_epoch),
        "train s": round(train_seconds(trained), 2),
        "tune s": round(tuned.seconds, 2),
        "trials": tuned.n_trials,
        "new trials": tuned.n_new_trials,
        "version": version.version,
        "status": "registered",
        "reason": "",
        "mlflow run": version.run_id,
    }


def failed_leaderboard_row(family: str, metric: str, reason: str, run_id: str = "") -> dict[str, Any]:
    """The ``leaderboard`` row of a model that failed (NaN metrics, so it ranks last).

    Args:
        family: The model family.
        metric: The selection metric.
        reason: Why it failed, one line (``FloatingPointError: the training loss became nan...``).
        run_id: Its MLflow child run (closed ``FAILED``).

    Returns:
        ``model``, ``valid <metric>`` and ``test <metric>`` (NaN), ``status`` (``failed``), ``reason`` and
        ``mlflow run``.
    """
    return {
        "model": family,
        f"valid {metric}": math.nan,
        f"test {metric}": math.nan,
        "status": "failed",
        "reason": " ".join(reason.split())[:500],
        "mlflow run": run_id,
    }


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with one set of columns (in first-seen order; absent cells ``None``) and no NaN.

    A Prefect table artifact (JSON) has no NaN, and shows the columns of every row only when each row has
    them all.
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))

    def cell(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return [{c: cell(row.get(c)) for c in columns} for row in rows]


def mlflow_links_markdown(
    *,
    tracking_uri: str,
    ui_url: str,
    experiment_id: str,
    parent_run_id: str,
    rows: Sequence[Mapping[str, Any]],
    registered_model: str,
) -> str:
    """The ``mlflow-runs`` artifact: links from the Prefect flow run to its MLflow runs and versions.

    Args:
        tracking_uri: The MLflow store.
        ui_url: The MLflow UI's address (``gnnrec ui`` serves it on http://127.0.0.1:5000).
        experiment_id: The experiment of the runs.
        parent_run_id: The pipeline's parent run.
        rows: Leaderboard rows (``model``, ``status``, ``mlflow run``, ``version``).
        registered_model: The registered model's name.

    Returns:
        Markdown with one line per run.
    """
    base = ui_url.rstrip("/")

    def run_link(run_id: str) -> str:
        return f"[`{run_id}`]({base}/#/experiments/{experiment_id}/runs/{run_id})"

    lines = [
        "# MLflow runs of this flow run",
        "",
        f"Store: `{tracking_uri}`; UI: {base}",
        "",
        f"Pipeline (parent) run: {run_link(parent_run_id)}",
        "",
        "| model | status | MLflow run | registered version |",
        "|---|---|---|---|",
    ]
    for row in rows:
        version = row.get("version")
        shown = (
            f"[`models:/{registered_model}/{version}`]({base}/#/models/{registered_model}/versions/{version})"
            if version
            else "-"
        )
        run_id = str(row.get("mlflow run") or "")
        lines.append(
            f"| {row['model']} | {row.get('status', '')} | {run_link(run_id) if run_id else '-'} | {shown} |"
        )
    return "\n".join(lines)


def rank_leaderboard(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Rows sorted by validation ``metric``, best first; rows without a finite value go last, in order.

    Args:
        rows: Rows from :func:`leaderboard_row`.
        metric: The selection metric (``ndcg@20``).

    Returns:
        A new sorted list.
    """

    def key(row: Mapping[str, Any]) -> float:
        cell = row.get(f"valid {metric}")
        value = math.nan if cell is None else float(cell)
        return -value if math.isfinite(value) else math.inf

    return [dict(row) for row in sorted(rows, key=key)]
