"""Every registered model trains, scores, evaluates and exports on a CUDA device (skipped without one).

The CPU contract tests (``test_contract.py``) cannot see a tensor left on the wrong device, a CPU-only
sparse op or an export that keeps CUDA tensors; these run the same steps with ``device="cuda"`` and check
that what is exported scores on the CPU exactly as the model scored on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import MODELS
from models.base import History
from models.serving import load_servable
from tasks.evaluate import evaluate
from tasks.train import TrainConfig, train
from tests.models.planted import planted

NAMES = sorted(MODELS)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data():
    return planted(num_users=60, num_items=40, num_interactions=900, seed=5)


@pytest.mark.parametrize("name", NAMES)
def test_trains_scores_and_exports_on_cuda(name: str, data, tmp_path: Path) -> None:
    _, split, graphs = data
    config = TrainConfig(model=name, epochs=2, batch_size=256, progress=False, device="cuda", seed=1)
    result = train(graphs, split, config)
    model = result.model
    assert result.device.startswith("cuda")
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.is_cuda for t in tensors), "every parameter and buffer lives on the GPU"

    users = torch.tensor([0, 3, 7], device="cuda")
    with model.inference():
        scores = model.score_users(users)
        history = History.from_lists([[0, 2, 3], [1, 4]]).to("cuda")
        folded = model.score_history(history)
    assert scores.is_cuda and scores.shape == (3, graphs.num_items) and torch.isfinite(scores).all()
    assert folded.shape == (2, graphs.num_items) and torch.isfinite(folded).all()

    metrics = evaluate(model, split, "valid", ks=(5,))
    assert metrics.users_evaluated > 0 and 0.0 <= metrics["ndcg@5"] <= 1.0

    loaded = load_servable(model.export().save(tmp_path / name))  # served on the CPU
    np.testing.assert_allclose(
        loaded.score_users(users.cpu().numpy()), scores.float().cpu().numpy(), rtol=1e-3, atol=1e-4
    )
    served = loaded.score_history(np.array([0, 3, 5]), np.array([0, 2, 3, 1, 4]))
    np.testing.assert_allclose(served, folded.float().cpu().numpy(), rtol=1e-3, atol=1e-4)
