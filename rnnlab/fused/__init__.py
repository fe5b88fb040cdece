"""Fused paths for the recurrence (cuDNN, Pallas, hand-written backward passes), and the choice
between them and the scan.

    path = select(cell, params, xs, carry=None, mask=None, requested="auto")   # dispatch.py
    carry, ys = fused_unroll(path, cell, params, xs, carry, mask, lengths, reverse)  # layers.py

Paths:
  "scan"    `jax.lax.scan` over `cell.step` (every cell, every backend; `rnnlab.unroll`'s own).
  "cudnn"   one cuDNN call per LSTM layer through `jax.experimental.rnn` (`cudnn.py`): CUDA GPU,
            float32, no peepholes / layer norm / projection, padding given as `lengths` (not a
            general mask).
  "pallas"  the Pallas kernel of `pallas_lstm.py`: W_hh resident across time steps, float32 or
            bfloat16 matmuls with float32 gates and carry, any mask. Compiled on TPU and GPU,
            interpreted on CPU (slow; for tests). Chosen only on request.
  "vjp"     the same hand-written backward pass as "pallas" with both loops on `lax.scan`
            (`pallas_lstm.lstm_recurrence_scan`): the forward saves h, c and the gates per
            step, the backward runs one matmul per step, and dW_hh is one matmul after the loop
            instead of an accumulation inside it; the bias joins the per-step gate arithmetic
            instead of a pass over all projected inputs. Any backend, any mask. Every other
            cell with a split step (`Cell.recurrent_weight`: Elman, GRU in its cuDNN form, LSTM
            with peepholes or layer norm) takes the generic form of the same idea
            (`split_vjp.py`). float32 / bfloat16. The LSTM with a projection (`proj_size`)
            runs here only on request: its step has a second matmul (W_hr), whose gradient
            the generic form accumulates per step, so "auto" keeps it on the scan.
  "cpu"     the fused CPU kernel of `cpu.py` (an XLA FFI custom call compiled on first use):
            the plain LSTM and the cuDNN-form GRU, the whole forward and the whole backward
            loop in one call each, W_hh packed once per call for the kernel's own GEMM,
            float32, any mask. On `rnnlab.Embedded` tokens the LSTM layer reads the table
            E W_ih per token instead of projecting looked-up rows (`cpu.lstm_tokens_layer_cpu`).

`requested="auto"` takes the platform's fast path (`AUTO`: "cudnn" on a CUDA GPU for the plain
LSTM; on CPU "cpu" for the plain LSTM and the cuDNN-form GRU where the kernel can run, else
"vjp" for every cell with a split step) where it is valid and "scan" otherwise (always for
`rnnlab.unroll(..., resets=...)` and for the projection LSTM); under `jax.vmap` (the cuDNN
binding has no batching rule) it falls back to the scan at trace time. When the CPU kernel
cannot be built (no compiler, another platform) "auto" logs the reason once, in one line, and
takes "vjp". Asking for a path where it is not valid is a ValueError that says why.

Limits of the fused paths: they are custom VJPs, so forward-mode autodiff (`jax.jvp`,
`jax.jacfwd`) through them fails with JAX's "can't apply forward-mode autodiff (jvp) to a
custom_vjp function"; pass `fused="scan"` for forward-mode studies.
"""

from __future__ import annotations

from rnnlab.fused import cpu, cudnn
from rnnlab.fused.cpu import gru_recurrence_cpu, lstm_layer_cpu
from rnnlab.fused.dispatch import (AUTO, PATHS, is_fallback_error, platform,
                                   select, why_not)
from rnnlab.fused.layers import fused_unroll
from rnnlab.fused.pallas_lstm import lstm_recurrence, lstm_recurrence_scan
from rnnlab.fused.split_vjp import split_recurrence

__all__ = ["AUTO", "PATHS", "cpu", "cudnn", "fused_unroll",
           "gru_recurrence_cpu", "is_fallback_error", "lstm_layer_cpu", "lstm_recurrence",
           "lstm_recurrence_scan", "platform", "select", "split_recurrence", "why_not"]
