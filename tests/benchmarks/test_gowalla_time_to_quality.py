"""The Gowalla time-to-quality script end to end on a small planted dataset written in the LightGCN layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def write_planted(folder: Path, num_users: int = 120, num_items: int = 60, seed: int = 0) -> None:
    """Users in three taste groups, each liking its own third of the items: ``user item item ...`` lines."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    train, test = [], []
    for user in range(num_users):
        group = user % 3
        liked = rng.choice(np.arange(group * 20, group * 20 + 20), size=12, replace=False)
        noise = rng.choice(num_items, size=2, replace=False)
        items = sorted(set(liked.tolist()) | set(noise.tolist()))
        held = rng.choice(items, size=3, replace=False)
        train.append(" ".join(map(str, [user, *[i for i in items if i not in held]])))
        test.append(" ".join(map(str, [user, *sorted(held.tolist())])))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")


def test_tunes_on_validation_refits_and_writes_the_documented_json(tmp_path: Path) -> None:
    data = tmp_path / "gowalla-like"
    write_planted(data)
    out = tmp_path / "result.json"
    enqueue = json.dumps([{"rank": 4, "ideal_weight": 0.3, "sharpen_time": 0.0, "sharpen_order": 1}])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DO_NOT_TRACK": "true"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gowalla_time_to_quality.py"),
        "--data-dir",
        str(data),
    ]
    command += [
        "--minutes",
        "5",
        "--trials",
        "3",
        "--sample-users",
        "50",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    command += ["--enqueue", enqueue, "--json", str(out), "--thresholds", "0.01", "0.999"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["test"]) >= {"recall@20", "ndcg@20"} and set(result["valid"]) >= {
        "recall@20",
        "ndcg@20",
    }
    assert 0 < result["wall_seconds"] <= 300 and result["within_budget"]
    assert result["trials"] == 3 and len(result["curve"]) == 3
    # The enqueued setting is the first trial; the first trial is always a new best and gets a test figure.
    assert result["curve"][0]["params"] == json.loads(enqueue)[0] and "test" in result["curve"][0]
    # The choice is the trial with the best validation recall, refitted on train + valid and scored on test.
    best = max(result["curve"], key=lambda point: point["valid"]["recall@20"])
    assert all(result["params"][k] == v for k, v in best["params"].items())
    assert result["refit_on_train_and_valid"] and result["sample_users"] == 50
    # The planted groups are easy: far above popularity, and the thresholds are dated only when reached.
    assert result["test"]["recall@20"] > 1.5 * result["popularity_test"]["recall@20"]
    assert result["seconds_to_test_recall@20"]["0.01"] is not None
    assert result["seconds_to_test_recall@20"]["0.999"] is None
