#!/usr/bin/env bash
# The adding-problem ablation of docs/results/ablations/report.md: T = 100, hidden 64, 3 seeds
# per point, 1500 steps, one run at a time. Run from the repository root:
#   bash docs/results/ablations/sweep.sh [ROOT]      (ROOT default runs/ablation; PYTHON=...)
# then
#   python -m experiments.compare 'ROOT/*' --out=docs/results/ablations \
#       --metrics=eval.mse,train.loss --solve='eval.mse<0.01' --solve='eval.mse<0.05' \
#       --baseline=model.cell=lstm --baseline=model.cell_kwargs=forget_bias=1.0
set -euo pipefail
ROOT=${1:-runs/ablation}
PY=${PYTHON:-python}
CMD="$PY -m experiments.train --config=experiments/configs/adding.py --config.model.hidden=64 \
--config.train.steps=1500 --config.train.eval_every=100 --config.diagnostics.every=1500 \
--config.diagnostics.lags=(0,1,2,5,10,20,30,50,70,100)"
sweep() { $PY launch/sweep.py --root="$ROOT" --command="$CMD" --keep_going "$@"; }
start=$(date +%s)
# seed-major, so that a sweep cut short holds every point at the seeds it finished
for seed in 0 1 2; do
  # LSTM: forget bias 1 (the default, spelled out) against chrono initialisation for T = 100
  sweep --seeds=$seed --grid=model.cell=lstm --grid=model.cell_kwargs=forget_bias=1.0,chrono_init=100
  # IRNN at its working learning rate (1e-3 overflows), tanh RNN at the default 1e-3
  sweep --seeds=$seed --grid=model.cell=irnn --grid=optim.lr=1e-4
  sweep --seeds=$seed --grid=model.cell=rnn_tanh
done
echo "sweep wall time: $(( $(date +%s) - start )) s"
