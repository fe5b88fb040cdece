#!/usr/bin/env bash
# Zaremba et al. 2014 medium (default) or large on the real PTB, to completion, on one CUDA GPU:
#   bash launch/ptb_gpu.sh DATA_DIR [medium|large] [WORKDIR]
# DATA_DIR holds ptb.{train,valid,test}.txt (Mikolov split) or a manual/ folder with them.
# Installs the [cuda] extra into .venv-cuda, trains with experiments.train (the run resumes
# exactly if started again on the same WORKDIR), then writes WORKDIR/summary.json with the
# final validation and test perplexity, the steps, the wall time and the device, and copies
# metrics.jsonl and summary.json to docs/results/ptb_zaremba_<variant>_gpu/.
# Targets (test perplexity): medium <= 83.5 (paper 82.7, TF tutorial 82.07); large <= 79.5
# (paper 78.4, tutorial 78.29). Medium is 39 epochs x 1,328 steps; large 55 x 1,328.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bash launch/ptb_gpu.sh DATA_DIR [medium|large] [WORKDIR]}
variant=${2:-medium}
workdir=${3:-runs/ptb_${variant}_gpu}
case "$variant" in medium|large) ;; *) echo "variant must be medium or large, got '$variant'" >&2; exit 2 ;; esac
if [ -f "$data/ptb.train.txt" ]; then  # a plain folder: give TFDS the manual/ layout it reads
  dl=$(mktemp -d); mkdir -p "$dl/manual"
  for s in train valid test; do ln -sf "$(cd "$data" && pwd)/ptb.$s.txt" "$dl/manual/"; done
  data=$dl
fi
[ -f "$data/manual/ptb.train.txt" ] || { echo "no ptb.train.txt in $data or $data/manual" >&2; exit 2; }

VENV=${RNNLAB_VENV:-.venv-cuda}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -e ".[cuda]"
"$VENV/bin/python" -c 'import jax, sys; d = jax.devices()[0]; print("device:", d.device_kind);
sys.exit(d.platform != "gpu")' || { echo "JAX sees no GPU (check the driver and the [cuda] extra)" >&2; exit 1; }

t0=$(date +%s)
"$VENV/bin/python" -m experiments.train --config="experiments/configs/ptb_zaremba.py:$variant" \
  --workdir="$workdir" --config.task.download_dir="$data" --config.task.download=False
"$VENV/bin/python" - "$workdir" "$variant" "$(( $(date +%s) - t0 ))" <<'PY'
import json, os, shutil, sys
import jax
workdir, variant, wall = sys.argv[1], sys.argv[2], int(sys.argv[3])
recs = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
ev = [r for r in recs if r["split"] == "eval"]
test = [r for r in recs if r["split"] == "test"]
summary = {"variant": variant, "device": jax.devices()[0].device_kind, "wall_s_this_launch": wall,
           "steps": ev[-1]["step"] if ev else 0,
           "valid_perplexity": [r["perplexity"] for r in ev],
           "test_perplexity": test[-1]["perplexity"] if test else None}
json.dump(summary, open(os.path.join(workdir, "summary.json"), "w"), indent=1)
out = f"docs/results/ptb_zaremba_{variant}_gpu"
os.makedirs(out, exist_ok=True)
for f in ("metrics.jsonl", "summary.json"):
    shutil.copy(os.path.join(workdir, f), out)
print(json.dumps({k: v for k, v in summary.items() if k != "valid_perplexity"}))
PY
