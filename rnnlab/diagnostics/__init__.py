"""Gradient-flow measurement: per-step state-gradient norms, Jacobian-product spectra,
Lyapunov exponents, Pascanu's condition, and plots.

    flow = gradient_flow(cell, params, xs)              # xs [batch, time, features]
    flow["rate"], flow["lyapunov"]                      # fitted vs reference rate per step
    gradient_flow_metrics(cell, params, xs)             # flat JSON-ready dict for a train loop

The "hidden state" is each sample's whole carry flattened to a vector (h for Elman/GRU, [h, c]
for an LSTM). Lags count back from the last step: lag k is ∂L/∂s_{T-k}.
"""

from rnnlab.diagnostics.gradients import (fit_rate, gradient_norms_by_lag, readout_direction,
                                          state_gradients, summarize_norms, valid_lags)
from rnnlab.diagnostics.jacobians import (jacobian_spectra, lyapunov_exponents,
                                          pascanu_condition, step_jacobians, trajectory,
                                          window_mean)
from rnnlab.diagnostics.monitor import (gradient_flow, gradient_flow_metrics, summarize,
                                        to_jsonable)

__all__ = [
    "fit_rate", "gradient_flow", "gradient_flow_metrics", "gradient_norms_by_lag",
    "jacobian_spectra", "lyapunov_exponents", "pascanu_condition", "readout_direction",
    "state_gradients", "step_jacobians", "summarize", "summarize_norms", "to_jsonable",
    "trajectory", "valid_lags", "window_mean",
]
