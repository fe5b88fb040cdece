#!/usr/bin/env bash
# The adding-problem ablation of docs/results/ablations/report.md: T = 100, 3 seeds per point,
# 3000 steps; run from the repository root: bash docs/results/ablations/sweep.sh [ROOT]
# (ROOT default runs/ablation), then
#   python -m experiments.compare ROOT/* --out=docs/results/ablations \
#       --solve='eval.mse<0.01' --baseline=model.cell_kwargs=forget_bias=1.0
set -euo pipefail
ROOT=${1:-runs/ablation}
PY=${PYTHON:-python}
CMD="$PY -m experiments.train --config=experiments/configs/adding.py --config.train.steps=3000 \
--config.train.eval_every=250 --config.diagnostics.every=1000 \
--config.diagnostics.lags=(0,1,2,5,10,20,30,50,70,100)"
SEEDS=0,1,2
start=$(date +%s)
# LSTM: forget bias 1 (the default, spelled out) against chrono initialisation for T = 100
$PY launch/sweep.py --root="$ROOT" --command="$CMD" --seeds=$SEEDS --parallel=2 --keep_going \
    --grid=model.cell=lstm --grid=model.cell_kwargs=forget_bias=1.0,chrono_init=100
# IRNN at its working learning rate (1e-3 overflows), tanh RNN at the default 1e-3
$PY launch/sweep.py --root="$ROOT" --command="$CMD" --seeds=$SEEDS --parallel=2 --keep_going \
    --grid=model.cell=irnn --grid=optim.lr=1e-4
$PY launch/sweep.py --root="$ROOT" --command="$CMD" --seeds=$SEEDS --parallel=2 --keep_going \
    --grid=model.cell=rnn_tanh
echo "sweep wall time: $(( $(date +%s) - start )) s"
