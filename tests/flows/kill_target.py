"""A pipeline run to be killed mid-trial by tests/flows/test_kill.py (run as a script, not collected).

Usage: ``python tests/flows/kill_target.py WORKDIR``. Starts the temporary Prefect server the way
``gnnrec run`` does (unless ``PREFECT_API_URL`` names a server), writes its pid to ``WORKDIR/server.pid``,
then runs train-and-promote on tiny data with a
trial budget far larger than the test waits for, so a trial is running whenever the test strikes.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(workdir: Path) -> None:
    from prefect.server.api.server import SubprocessASGIServer

    from flows.prefect_server import start_temporary_server
    from flows.train_and_promote import train_and_promote
    from tasks.config import DataConfig, SplitConfig
    from tasks.pipeline_config import PipelineParams

    (workdir / "mlflow.yml").write_text(
        "tracking_uri: sqlite:///store/mlflow.db\n"
        "artifact_location: store/artifacts\n"
        "experiment_name: gnnrec-kill\n"
        "registered_model_name: recsys\n"
        "study_storage: sqlite:///store/optuna.db\n"
    )
    if start_temporary_server() is not None:  # none when PREFECT_API_URL names a persistent server
        server = SubprocessASGIServer._instances[None]
        assert server.server_process is not None
        (workdir / "server.pid").write_text(str(server.server_process.pid))
    params = PipelineParams(
        data=DataConfig(synthetic_users=40, synthetic_items=60, synthetic_interactions=900, synthetic_seed=3),
        split=SplitConfig(seed=3),
        models=("mf",),
        n_trials=1000,
        timeout_s=3600,
        epochs=5000,
        patience=5000,
        batch_size=256,
        seed=3,
        device="cpu",
        threads=1,
        mlflow_config=workdir / "mlflow.yml",
    )
    train_and_promote(params)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
