#!/usr/bin/env bash
# Reproduce the "Data" figures of benchmarks/RESULTS.md: `gnnrec data stats --json` on the real datasets,
# then `gnnrec data validate` on corrupted copies (made in a temporary folder; the originals are untouched).
#
#   benchmarks/data_report.sh [DATASETS_DIR]      # default: ../shared/datasets relative to the repo root
#
# Prints a Markdown report on stdout. Needs .venv (make install). Reads nothing from the network
# (--no-download everywhere).
set -uo pipefail
cd "$(dirname "$0")/.."
DATASETS="${1:-$(cd .. && pwd)/shared/datasets}"
GNNREC=.venv/bin/gnnrec
PY=.venv/bin/python
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false

echo "## Data report ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU cores, $(uname -m), Python $($PY -c 'import platform; print(platform.python_version())'))"
echo

stats() {  # name, then gnnrec options
  local name="$1"; shift
  local start end
  start=$(date +%s.%N)
  $GNNREC data stats "$@" --json >"$WORK/$name.json" 2>"$WORK/$name.err"
  local rc=$?
  end=$(date +%s.%N)
  $PY - "$WORK/$name.json" "$name" "$rc" "$start" "$end" <<'EOF'
import json, sys
path, name, rc, start, end = sys.argv[1:]
d = json.load(open(path)) if rc == "0" else {}
keys = ["users", "items", "interactions", "social_edges", "kg_triples", "kg_relations", "kg_entities"]
counts = " ".join(f"{k}={d.get(k)}" for k in keys)
split = d.get("split", {})
ui = (d.get("graphs") or {}).get("user_item") or {}
print(f"- **{name}** (exit {rc}, {float(end) - float(start):.1f} s wall): {counts}; split {split.get('method')} "
      f"train/valid/test={split.get('train')}/{split.get('valid')}/{split.get('test')}; user-item graph "
      f"{ui.get('nodes')} nodes, {ui.get('edges')} edges, {ui.get('components')} components; step seconds "
      f"{d.get('seconds')}")
EOF
}

echo "### gnnrec data stats --json"
echo
stats movielens-100k --dataset movielens-100k --data-dir "$DATASETS/ml-100k" --no-download
stats lastfm-hetrec --dataset lastfm-hetrec --data-dir "$DATASETS/lastfm-hetrec" --no-download
stats recbole-movie --dataset recbole --data-dir "$DATASETS/ml-100k-kg" --recbole-name movie
echo

# Corrupted copies ---------------------------------------------------------------------------------------
copy_ml() { mkdir -p "$1" && cp "$DATASETS"/ml-100k/u.{data,item,user,genre} "$1"/ && chmod u+w "$1"/*; }
copy_lastfm() { mkdir -p "$1" && cp "$DATASETS"/lastfm-hetrec/*.dat "$1"/ && chmod u+w "$1"/*; }
copy_recbole() { mkdir -p "$1" && cp "$DATASETS"/ml-100k-kg/movie.* "$1"/ && chmod u+w "$1"/*; }

copy_ml "$WORK/nan-id";      awk 'BEGIN{FS=OFS="\t"} NR==5{$1=""} 1' "$DATASETS/ml-100k/u.data" >"$WORK/nan-id/u.data"
copy_ml "$WORK/rating-99";   awk 'BEGIN{FS=OFS="\t"} NR==7{$3=99} 1' "$DATASETS/ml-100k/u.data" >"$WORK/rating-99/u.data"
copy_ml "$WORK/duplicate";   sed -n 10p "$DATASETS/ml-100k/u.data" >>"$WORK/duplicate/u.data"
# A copy that stopped in the middle of the last line, right after its item field ("user\titem\t").
copy_ml "$WORK/truncated"
$PY - "$WORK/truncated/u.data" <<'EOF'
import sys
path = sys.argv[1]
data = open(path, "rb").read()
start = data.rstrip(b"\n").rfind(b"\n") + 1
last = data[start:]
cut = start + last.index(b"\t", last.index(b"\t") + 1) + 1
open(path, "wb").write(data[:cut])
EOF
copy_ml "$WORK/not-a-number"; awk 'BEGIN{FS=OFS="\t"} NR==3{$2="abc"} 1' "$DATASETS/ml-100k/u.data" >"$WORK/not-a-number/u.data"
copy_lastfm "$WORK/self-friend"; printf '2\t2\n' >>"$WORK/self-friend/user_friends.dat"
copy_recbole "$WORK/unknown-link"; printf '99999\tm.0bln8\n' >>"$WORK/unknown-link/movie.link"

validate() {  # label, corruption, then gnnrec options
  local label="$1" what="$2"; shift 2
  local start end
  start=$(date +%s.%N)
  $GNNREC data validate "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"
  local rc=$?
  end=$(date +%s.%N)
  local tb="no"
  grep -q Traceback "$WORK/out.txt" "$WORK/err.txt" && tb="YES"
  printf -- '- **%s** (%s): exit %s, traceback: %s, %.1f s wall\n\n' "$label" "$what" "$rc" "$tb" \
    "$(echo "$end - $start" | bc)"
  echo '  ```'
  sed -e 's/^/  /' -e "s#$WORK#\$TMP#g" "$WORK/out.txt" "$WORK/err.txt" | cut -c1-220
  echo '  ```'
}

echo "### gnnrec data validate on corrupted copies"
echo
validate "NaN id" "u.data line 5: user field emptied" --dataset movielens-100k --data-dir "$WORK/nan-id" --no-download
validate "rating 99" "u.data line 7: rating 99" --dataset movielens-100k --data-dir "$WORK/rating-99" --no-download
validate "duplicated row" "u.data line 10 appended again" --dataset movielens-100k --data-dir "$WORK/duplicate" --no-download
validate "truncated last line" "u.data cut after the last line's item field" --dataset movielens-100k --data-dir "$WORK/truncated" --no-download
validate "self-friendship" "user_friends.dat: 2 -> 2 appended" --dataset lastfm-hetrec --data-dir "$WORK/self-friend" --no-download
validate "unknown linked item" "movie.link: item 99999 appended" --dataset recbole --data-dir "$WORK/unknown-link" --recbole-name movie
validate "malformed id" "u.data line 3: item 'abc' (loader error, exit 2)" --dataset movielens-100k --data-dir "$WORK/not-a-number" --no-download
validate "good copy with Data Docs" "unchanged u.data, --docs-dir" --dataset movielens-100k --data-dir "$DATASETS/ml-100k" --no-download --docs-dir "$WORK/docs"

echo
echo "### validate() in one process (GX import paid once; min-max of 3 calls per dataset)"
echo
$PY - "$DATASETS" <<'EOF_PY'
import sys, time
from pathlib import Path
root = Path(sys.argv[1])
t0 = time.perf_counter()
import great_expectations  # noqa: F401
print(f"- import great_expectations: {time.perf_counter() - t0:.2f} s")
from data_checks import validate
from tasks.config import DataConfig
from tasks.ingest import load_raw
configs = {
    "movielens-100k": DataConfig(dataset="movielens-100k", data_dir=root / "ml-100k", download=False),
    "lastfm-hetrec": DataConfig(dataset="lastfm-hetrec", data_dir=root / "lastfm-hetrec", download=False),
    "recbole-movie": DataConfig(dataset="recbole", data_dir=root / "ml-100k-kg", recbole_name="movie"),
}
for name, config in configs.items():
    raw = load_raw(config)
    rows = {k: len(v) for k, v in raw.tables().items()}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        report = validate(raw)
        times.append(time.perf_counter() - start)
    print(f"- {name}: {len(report.results)} expectations over {rows}: {min(times):.2f}-{max(times):.2f} s "
          f"(success={report.success})")
EOF_PY
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
