"""Plots logged to MLflow: a model's training curve and the pipeline's leaderboard chart and table."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.register.settings import MlflowSettings, mlflow_client
from tasks.register.tracking import log_metrics, metric_key


def training_curve_png(history: Sequence[Mapping[str, Any]], family: str, path: Path) -> None:
    """Loss and validation metrics per epoch, two panels, written to ``path``."""
    from matplotlib.figure import Figure

    epochs = [int(row.get("epoch", i)) for i, row in enumerate(history)]
    keys = sorted(
        {k for row in history for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
    )
    loss_keys = [k for k in keys if "loss" in k]
    metric_keys = [k for k in keys if k not in loss_keys and "second" not in k and "time" not in k]
    fig = Figure(figsize=(9, 3.6))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for key in loss_keys:
        ax_loss.plot(epochs, [row.get(key, math.nan) for row in history], label=key)
    for key in metric_keys:
        ax_metric.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=key)
    ax_loss.set(title=f"{family}: training loss", xlabel="epoch")
    ax_metric.set(title=f"{family}: validation", xlabel="epoch")
    for ax in (ax_loss, ax_metric):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def log_leaderboard(
    settings: MlflowSettings, *, parent_run_id: str, rows: Sequence[Mapping[str, Any]], metric: str
) -> None:
    """Log the leaderboard to the parent run as a JSON table and a bar chart of the selection metric.

    Args:
        settings: Tracking settings.
        parent_run_id: The pipeline's parent run.
        rows: One mapping per model with at least ``model``, ``valid <metric>`` and ``test <metric>``.
        metric: The selection metric.
    """
    from matplotlib.figure import Figure

    client = mlflow_client(settings)
    names = [str(r["model"]) for r in rows]
    valid = [float(r[f"valid {metric}"]) for r in rows]
    test = [float(r[f"test {metric}"]) for r in rows]
    fig = Figure(figsize=(max(4.0, 1.4 * len(rows) + 2), 3.6))
    ax = fig.subplots()
    xs = range(len(rows))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], valid, width, label=f"valid {metric}")
    ax.bar([x + width / 2 for x in xs], test, width, label=f"test {metric}")
    ax.set_xticks(list(xs), names)
    ax.set(title=f"Leaderboard: {metric}", ylabel=metric)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "leaderboard.png"
        fig.savefig(png, dpi=110)
        table = Path(tmp) / "leaderboard.json"
        table.write_text(json.dumps(list(map(dict, rows)), indent=2, default=str))
        client.log_artifact(parent_run_id, str(png), artifact_path="plots")
        client.log_artifact(parent_run_id, str(table))
    for row, value in zip(names, valid, strict=True):
        log_metrics(client, parent_run_id, {metric_key(metric, f"valid_{row}"): value})
