"""Which models can run on which data: each model's ``requires`` checked against the built graphs.

The pipeline and ``gnnrec train`` call :func:`check_requirements` right after the graphs are built and
before any tuning or training, so a model that needs a social graph, a KG or features is refused up front,
with every mismatch named at once, instead of failing minutes into a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from models.base import unmet_requirements
from models.graphs import Graphs
from models.registry import get_model


class ModelDataMismatchError(ValueError):
    """One or more models need data the dataset does not have; the message names each model and why."""


def check_requirements(
    models: Sequence[str],
    graphs: Graphs,
    dataset_name: str,
    hparams: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Refuse models whose requirements (``requires`` and what their hyperparameters add) are unmet.

    Args:
        models: Registry names.
        graphs: The training graphs of the dataset.
        dataset_name: For the message.
        hparams: Fixed hyperparameters by model name, where an option adds a requirement.

    Raises:
        ModelDataMismatchError: naming every model that cannot run on ``dataset_name``, and why.
    """
    problems = [
        f"{name} cannot run on dataset '{dataset_name}': {'; '.join(unmet)}"
        for name in models
        if (unmet := unmet_requirements(get_model(name), graphs, (hparams or {}).get(name)))
    ]
    if problems:
        raise ModelDataMismatchError(
            " ".join(problems) + ". Choose other models (gnnrec models lists what each needs) or a dataset "
            "that has this data."
        )
