#!/usr/bin/env bash
# Local entry point: creates .venv on first use (or when pyproject.toml changes), then
#   bash launch/local.sh main            the main job on its embedded default (no download)
#   bash launch/local.sh test [ARGS]     the test suite (pytest ARGS; slow tests: -m slow), in
#                                        min(CPUs, 4) xdist workers unless ARGS give -n
#   bash launch/local.sh python ARGS     any command inside the environment
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${RNNLAB_VENV:-.venv}
mode=${1:-main}
[ $# -gt 0 ] && shift

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "rnnlab needs Python 3.11 or newer; $PY is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
}

extras=""
[ "$mode" = test ] && extras="[test]"
stamp="$VENV/.installed$(echo "$extras" | tr -d '[]')-$(cksum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "== setting up $VENV (pip install -e .$extras) ==" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e ".$extras" >&2
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"

case "$mode" in
  main) exec python -m experiments.gradient_flow --workdir="${RNNLAB_WORKDIR:-runs/gradient_flow}" "$@" ;;
  test)
    workers=()
    case " $* " in
      *" -n"*|*" --numprocesses"*) ;;
      *) n=$(python -c 'import os; a = getattr(os, "sched_getaffinity", None)
print(min(len(a(0)) if a else os.cpu_count() or 1, 4))')
         workers=(-n "$n") ;;
    esac
    exec python -m pytest -q ${workers[@]+"${workers[@]}"} "$@" ;;
  python) exec python "$@" ;;
  *) echo "usage: bash launch/local.sh [main|test|python] [ARGS...]" >&2; exit 2 ;;
esac
