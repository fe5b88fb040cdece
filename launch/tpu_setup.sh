#!/usr/bin/env bash
# On-worker bootstrap, run on every TPU VM worker by `python launch/tpu.py setup` after the
# project was unpacked into ~/rnnlab: installs it with the TPU extra into ~/rnnlab/.venv.
# The TPU images ship Python 3.10 and rnnlab needs 3.11+, so uv provides the interpreter.
# Idempotent: a second run only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

UV="$HOME/.local/bin/uv"
[ -x "$UV" ] || python3 -m pip install --user --quiet uv
stamp=".venv/.installed-tpu-$(cksum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$UV" venv --quiet --python 3.11 .venv
  "$UV" pip install --quiet --python .venv/bin/python -e ".[tpu]"
  touch "$stamp"
fi
.venv/bin/python -c "import rnnlab, jax; print('rnnlab installed; jax', jax.__version__)"
