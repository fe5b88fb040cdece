"""Time-series forecasting: an LSTM reads `lookback` past values and predicts the next
`horizon` values at once; compared with the naive (last value) and linear (least squares on the
window) baselines on the same windows.

    python -m experiments.train --config=experiments/configs/forecast.py --workdir=runs/fc_sines
    python -m experiments.train --config=experiments/configs/forecast.py:multistep \
        --workdir=runs/fc_sines_h20
    python -m experiments.train --config=experiments/configs/forecast.py:ar --workdir=runs/fc_ar
    python -m experiments.train --config=experiments/configs/forecast.py:csv --workdir=runs/fc_csv \
        --config.task.csv_path=data.csv --config.task.csv_column=load
    # a seconds-long smoke run: forecast.py:smoke; the TDNN baseline:
    #   --config.model.cell=tdnn --config.model.cell_kwargs=window=8

Variants:
  ""          noisy sines (periods 20 and 53 steps, noise 0.1), one-step, lookback 50;
  multistep   the same series, 20 steps at once (direct multi-output);
  ar          an AR(3) process (x_t = 0.5 x_{t-1} - 0.3 x_{t-2} + 0.4 x_{t-3} + N(0, 1)),
              one-step: the linear baseline is the optimal forecaster here (MSE ≈ noise
              variance / series variance), a check that the model gets close to it;
  csv         one column of a CSV file (give csv_path and csv_column);
  smoke       seconds.

The series is split 70/15/15 in time order; normalisation uses the train part only. Metrics
(split "eval" and "test", normalised units): `mse`, `mse_naive`, `mse_linear`, `mse_first`,
`mse_last`, `nrmse`, `mse_raw`.

Measured (test split, 1,500 steps, shared 2-core CPU at load average ~12, 2-2.5 min each):
  ""         LSTM MSE 0.0177   linear 0.0171   naive 0.110   (noise floor 0.01/0.635 = 0.0157)
  multistep  LSTM MSE 0.0171   linear 0.0170   naive 1.925   (step 1: 0.0171, step 20: 0.0175)
  ar         LSTM MSE 0.685    linear 0.676    naive 1.124   (optimal: noise/train variance 0.697)
On these linear-Gaussian series the least-squares window is (near) optimal and the LSTM only
matches it; the non-linear Mackey-Glass series is in esn_mackey_glass.py.
"""

from experiments.configs._common import adam_cosine, train_schedule
from rnnlab.config import parse_variant, smoke_schedule
from rnnlab.tasks.forecast import forecast_config

VARIANTS = ("", "multistep", "ar", "csv", "smoke")


def get_config(variant: str = ""):
    variant = parse_variant(variant, VARIANTS, "forecast.py")
    c = forecast_config()  # the sines of "" (5,000 steps), windows of 50 predicting 1
    c.task.eval_batch_size = 250
    c.model.hidden = 32  # LSTM units
    adam_cosine(c)
    train_schedule(c, 1_500, 500)  # ~28 epochs of the 3,450 train windows

    if variant == "multistep":
        c.task.horizon = 20
    elif variant == "ar":
        c.task.series = "ar"  # forecast_config's AR(3) coefficients
        c.task.noise = 1.0
        c.task.lookback = 20
    elif variant == "csv":
        c.task.series = "csv"  # set task.csv_path and task.csv_column
    elif variant == "smoke":
        c.task.length = 400
        c.task.lookback = 12
        c.task.horizon = 3
        c.task.batch_size = 16
        c.task.eval_batch_size = 32
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
