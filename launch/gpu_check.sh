#!/usr/bin/env bash
# The GPU check (issue 19, item 5), one command on a machine with one CUDA GPU:
#   bash launch/gpu_check.sh               (bash launch/gpu_check.sh --fetch-wheels: see 1.)
# 1. sets up the environment, by one of two routes:
#    - a machine whose python3 already runs JAX on the GPU (an image with jax-cuda, flax, optax,
#      orbax, torch and pytest, e.g. a lent device with no package index): that python3, rnnlab
#      from this checkout (PYTHONPATH), and the pure-Python dependencies such an image lacks
#      (ml-collections, tensorboardX) installed offline from .whl/, which
#        bash launch/gpu_check.sh --fetch-wheels
#      downloads beforehand on any machine that reaches PyPI (cp312, manylinux; .whl/ is ignored
#      by git: copy it along with the checkout);
#    - otherwise: rnnlab with the [cuda] and [test] extras in $RNNLAB_VENV (default .venv-gpu);
# 2. runs the GPU-only tests (cuDNN path and the Pallas kernel compiled for real, not
#    interpreted: tests/test_fused.py -k gpu); a skip there means no GPU was seen: it fails;
# 3. times the training step against PyTorch on CUDA (cuDNN) for workloads A, B, L (LSTM, GRU);
# 4. times minGRU / minLSTM (parallel scan) against the LSTM at T = 1024 and 4096 (workload L);
# 5. writes every result as JSON under docs/results/gpu/ (summary.json: the route, each step's
#    exit code and seconds; speed_*.json: the benchmark's own reports).
# On a lent device whose files come back only from $OUT: carry .whl/ and run
#   RNNLAB_GPU_OUT=$OUT bash launch/gpu_check.sh
# then copy what comes back into docs/results/gpu/ (5 files).
# Sized for ~8 minutes on one H200 (a lent device has 15 minutes, start-up included): each step
# has its own time limit and the steps after a failed one still run.
# Targets (issue 19): LSTM step >= 1.0x cuDNN; parallel-scan cells >= 10x the LSTM at T >= 1024.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${RNNLAB_VENV:-.venv-gpu}
OUT=${RNNLAB_GPU_OUT:-docs/results/gpu}
WHEELS=${RNNLAB_WHEELS:-.whl}
# what a JAX-CUDA image without a package index lacks of rnnlab's imports (pure Python; their
# own requirements, absl-py, PyYAML, numpy, packaging, protobuf, come with JAX, Flax and torch)
OFFLINE_WHEELS="ml-collections tensorboardX"

if [ "${1:-}" = --fetch-wheels ]; then
  mkdir -p "$WHEELS"
  exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" $OFFLINE_WHEELS
elif [ $# -gt 0 ]; then
  echo "gpu_check.sh: unknown argument '$1'; usage: bash launch/gpu_check.sh [--fetch-wheels]" >&2
  exit 2
fi
mkdir -p "$OUT"
steps=()

run() {  # run NAME LIMIT_S CMD...: times one step, records its exit code, never stops the script
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" >&2
  timeout "$limit" "$@"
  local rc=$?
  steps+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}")
  echo "== $name: rc $rc in $((SECONDS - t0)) s" >&2
  return $rc
}

# (timeout runs programs, not shell functions: the installs are their own bash -c)
SETUP='{ [ -x "$0/bin/python" ] || "$1" -m venv "$0"; } &&
  "$0/bin/python" -m pip install -q --upgrade pip &&
  "$0/bin/python" -m pip install -q -e ".[cuda,test]"'
OFFLINE='[ -n "$(ls "$0"/*.whl 2>/dev/null)" ] || {
    echo "no wheels in $0/: run bash launch/gpu_check.sh --fetch-wheels where PyPI is reachable" >&2
    exit 1; }
  "$1" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$2" "$0"/*.whl'

if timeout 120 "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  route=preinstalled
  SITE=${TMPDIR:-/tmp}/rnnlab-gpu-site
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  P=$PY
  run install 120 bash -c "$OFFLINE" "$WHEELS" "$PY" "$SITE"; installed=$?
else
  route=venv
  P="$VENV/bin/python"
  run install 330 bash -c "$SETUP" "$VENV" "$PY"; installed=$?
fi
if [ "$installed" -eq 0 ]; then
  if run device 60 "$P" -c "import jax, sys; d = jax.devices(); print(d); sys.exit(d[0].platform != 'gpu')"; then
    run gpu_tests 150 "$P" -m pytest -q -p no:cacheprovider -rs tests/test_fused.py -k gpu \
      --junitxml="$OUT/gpu_tests.xml"
    # a skipped GPU test means the suite saw no GPU: count it as a failure
    if grep -q '<skipped' "$OUT/gpu_tests.xml" 2>/dev/null; then
      steps+=('{"step": "gpu_tests_not_skipped", "rc": 1, "seconds": 0}')
    fi
    B="$P -m experiments.benchmarks.speed --rounds=1 --remat=false --warmup=3"
    run speed_ABL 240 $B --workload=A,B,L --cells=lstm,gru --impls=rnnlab,torch --steps=20 \
      --out="$OUT/speed_gpu.json"
    for T in 1024 4096; do
      run "parallel_scan_T$T" 120 $B --workload=L --seq="$T" --cells=lstm,mingru,minlstm \
        --impls=rnnlab --steps=10 --out="$OUT/speed_gpu_T$T.json"
    done
  fi
fi

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"host\": \"$(uname -n)\", \"route\": \"$route\","
  echo " \"gpu\": \"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)\","
  echo " \"steps\": [$(IFS=,; echo "${steps[*]}")]}"
} > "$OUT/summary.json"
cat "$OUT/summary.json"
grep -q '"rc": [1-9]' "$OUT/summary.json" && exit 1
exit 0
