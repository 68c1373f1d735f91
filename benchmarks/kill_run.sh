#!/usr/bin/env bash
# Kill `gnnrec run` mid-trial and count what it leaves behind, then run once more and count again.
#
# Usage: benchmarks/kill_run.sh SIGNAL [REPO]   (SIGNAL: KILL or TERM; REPO: the checkout to run, default .)
# Prints: the exit status, the processes of the killed run still alive 15 s later (its temporary Prefect
# server), and the MLflow runs and Optuna trials still RUNNING, before and after the next `gnnrec run`.
set -u
SIG=${1:?KILL or TERM}
REPO=$(cd "${2:-.}" && pwd)
PY=${PYTHON:-/work/main/.venv/bin/python}
D=$(mktemp -d)
cat >"$D/mlflow.yml" <<YML
tracking_uri: sqlite:///store/mlflow.db
artifact_location: store/artifacts
experiment_name: kill
study_storage: sqlite:///store/optuna.db
YML
export PYTHONPATH=$REPO OMP_NUM_THREADS=1 GNNREC_KILL_MARK=$D DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
  PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME=$D/prefect
unset PREFECT_API_URL
RUN=("$PY" -c "from flows.cli import app; app()" run --users 40 --items 60 --interactions 900 --models mf
  --threads 1 --mlflow-config "$D/mlflow.yml")
count() {
  "$PY" - "$D" <<'PY'
import sys, sqlite3, pathlib
d = pathlib.Path(sys.argv[1])
runs = trials = 0
if (d / "store/mlflow.db").exists():
    runs = sqlite3.connect(d / "store/mlflow.db").execute("select count(*) from runs where status='RUNNING'").fetchone()[0]
if (d / "store/optuna.db").exists():
    trials = sqlite3.connect(d / "store/optuna.db").execute("select count(*) from trials where state='RUNNING'").fetchone()[0]
alive = []
for p in pathlib.Path("/proc").iterdir():
    try:
        if p.name.isdigit() and sys.argv[1].encode() in (p / "environ").read_bytes() and int(p.name) not in (__import__("os").getppid(), __import__("os").getpid()):
            if (p / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                alive.append(p.name)
    except OSError:
        pass
print(f"RUNNING mlflow runs: {runs}, RUNNING optuna trials: {trials}, live processes of the run: {len(alive)}")
PY
}
(cd "$D" && exec "${RUN[@]}" --trials 500 --epochs 3000 --timeout 3600 >"$D/run.log" 2>&1) &
PID=$!
for _ in $(seq 240); do
  sleep 1
  [ -f "$D/store/optuna.db" ] && [ "$(sqlite3 "$D/store/optuna.db" "select count(*) from trials where state='RUNNING'" 2>/dev/null || echo 0)" != 0 ] && break
done
sleep 2
kill -"$SIG" "$PID"
wait "$PID"
echo "exit status after SIG$SIG: $?"
sleep 15
echo -n "after the kill:    "; count
(cd "$D" && "${RUN[@]}" --trials 0 --epochs 2 >"$D/rerun.log" 2>&1)
echo -n "after the next run: "; count
# leave nothing behind: end the run's own leftovers (found by this run's marker), then the folder
for p in /proc/[0-9]*; do grep -qs "$D" "$p/environ" && kill "${p#/proc/}" 2>/dev/null; done
rm -rf "$D"
