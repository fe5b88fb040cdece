"""Evaluation-time adaptation of a trained language model: the neural cache (Grave et al. 2017)
and dynamic evaluation (Krause et al. 2018), both over one split read as a single stream.

    ids = vocab.encode(corpus.split("test"))                  # [N] token ids, one stream
    static = stream_pass(model, params, ids)                  # nll [N-1], hidden [N-1, H]
    cached = cache_nll(static.nll, static.hidden, ids[1:], lam=0.1, theta=1.0, window=500)
    ms = gradient_rms(model, params, train_ids)               # RMS gradient per parameter
    adapted = dynamic_eval(model, params, ids, ms)            # nll [N-1], adapted params

Every function scores the N - 1 targets ids[1:] of the stream at batch 1, the hidden state
carried from the first token to the last, dropout off; `nll` is per target token in nats, so a
split's perplexity is exp(mean(nll)) and its bits per character mean(nll) / ln 2.

Neural cache: p(w) = (1 - lam) p_vocab(w) + lam p_cache(w) with
p_cache(w) = sum_{i in [t-window, t)} 1[x_{i+1} = w] softmax_i(theta h_t . h_i), h the last
recurrent layer's output (before the readout) of the static model. At t = 0 the cache is empty
and p = p_vocab. (AWD-LSTM's pointer.py uses the cache only once `window` positions are stored;
here it is used from t = 1 on, over the positions there are.)

Dynamic evaluation: the stream is cut into segments of `segment` targets; each segment is
scored with the current parameters theta (and the carried state), then theta is updated with the
gradient g of that segment's mean NLL (no peeking: a token is scored before any update uses it):

    rule "rms":  theta <- theta - lr g / (MS + eps) + decay * decrate * (theta0 - theta)
    rule "sgd":  theta <- theta - lr g + decay * (theta0 - theta)

MS = sqrt(mean over training windows of g^2), per parameter (`gradient_rms`: Krause et al.'s
`gradstat`, batch 100 x 5 tokens, carry across windows); decrate = MS / mean(MS), the mean
being the average of every parameter array's mean, clipped at 1 / decay. Defaults are
benkrause/dynamic-evaluation's: lr 5e-5, decay 2e-3, eps 2e-5, segment 5.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnlab.data.lm import LMStream
from rnnlab.models.lm import token_nll

RULES = ("rms", "sgd")


class StreamPass(NamedTuple):
    nll: np.ndarray     # [T] nats per target token (T = N - 1)
    hidden: np.ndarray  # [T, H] last recurrent layer's output at each input position


def _stream_windows(ids, width: int):
    """ids [N] -> (inputs, targets, mask) [num_windows, 1, width], the N - 1 targets in order,
    the last window padded (mask False)."""
    ids = np.asarray(ids, np.int32)
    if ids.ndim != 1 or ids.shape[0] < 2:
        raise ValueError(f"ids must be a 1-D stream of at least 2 tokens, got shape {ids.shape}")
    if width <= 0:
        raise ValueError(f"window/segment width must be > 0, got {width}")
    n = ids.shape[0] - 1
    num = -(-n // width)
    pad = num * width - n
    inputs = np.pad(ids[:-1], (0, pad)).reshape(num, 1, width)
    targets = np.pad(ids[1:], (0, pad)).reshape(num, 1, width)
    mask = np.pad(np.ones(n, bool), (0, pad)).reshape(num, 1, width)
    return inputs, targets, mask


def _pad_leading(x: np.ndarray, multiple: int, value=0):
    extra = -x.shape[0] % multiple
    if not extra:
        return x
    return np.concatenate([x, np.full((extra,) + x.shape[1:], value, x.dtype)])


# --- static pass ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _static_scan(model, params, inputs, targets, mask):
    def window(carry, xs):
        inp, tgt, msk = xs
        out = model.apply({"params": params}, inp, carry, mask=msk, train=False)
        nll = token_nll(out.logits, tgt) * msk
        return out.carry, (nll[0], out.hidden[0])

    carry = model.initial_carry(1)
    _, (nll, hidden) = jax.lax.scan(window, carry, (inputs, targets, mask))
    return nll, hidden


def stream_pass(model, params, ids, window: int = 256) -> StreamPass:
    """Per-token NLL and last-layer hidden states of the static model over the stream `ids`
    [N] at batch 1 (windows of `window` tokens, the carry crossing them)."""
    inputs, targets, mask = _stream_windows(ids, window)
    nll, hidden = _static_scan(model, params, inputs, targets, mask)
    n = len(ids) - 1
    nll, hidden = jax.device_get((nll, hidden))
    return StreamPass(np.asarray(nll).reshape(-1)[:n],
                      np.asarray(hidden).reshape(-1, hidden.shape[-1])[:n])


# --- neural cache ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(5, 6))
def _cache_blocks(nll, hidden, targets, lam, theta, window, block):
    # Keys are stored with `window` padding rows in front, so the keys of the query block
    # starting at t0 are rows [t0, t0 + window + block) of the padded arrays, i.e. positions
    # t0 - window .. t0 + block - 1.
    t_total = nll.shape[0]
    keys = jnp.concatenate([jnp.zeros((window, hidden.shape[1]), hidden.dtype), hidden])
    key_targets = jnp.concatenate([jnp.full((window,), -1, targets.dtype), targets])
    key_pos = jnp.arange(-window, t_total)

    def one(t0):
        q = jax.lax.dynamic_slice_in_dim(hidden, t0, block)
        q_tgt = jax.lax.dynamic_slice_in_dim(targets, t0, block)
        q_nll = jax.lax.dynamic_slice_in_dim(nll, t0, block)
        k = jax.lax.dynamic_slice_in_dim(keys, t0, window + block)
        k_tgt = jax.lax.dynamic_slice_in_dim(key_targets, t0, window + block)
        k_pos = jax.lax.dynamic_slice_in_dim(key_pos, t0, window + block)
        t = t0 + jnp.arange(block)
        valid = (k_pos[None, :] >= 0) & (k_pos[None, :] < t[:, None]) \
            & (k_pos[None, :] >= t[:, None] - window)
        scores = jnp.where(valid, theta * (q @ k.T), -jnp.inf)
        has_history = jnp.any(valid, axis=1)
        scores = jnp.where(has_history[:, None], scores, 0.0)  # keeps the softmax finite
        attn = jax.nn.softmax(scores, axis=1) * valid
        p_cache = jnp.sum(attn * (k_tgt[None, :] == q_tgt[:, None]), axis=1)
        mixed = jnp.logaddexp(jnp.log1p(-lam) - q_nll, jnp.log(lam) + jnp.log(p_cache))
        return jnp.where(has_history, -mixed, q_nll)

    starts = jnp.arange(0, t_total - block + 1, block)
    return jax.lax.map(one, starts).reshape(-1)


def cache_nll(nll, hidden, targets, lam: float = 0.1, theta: float = 1.0, window: int = 500,
              block: int = 256) -> np.ndarray:
    """Per-token NLL [T] under the neural cache mixture (module docstring), from the static
    model's per-token NLL [T], hidden states [T, H] and targets [T] (ids[1:] of the stream);
    queries are processed `block` at a time. lam = 0 gives back `nll`."""
    nll, hidden = np.asarray(nll, np.float32), np.asarray(hidden, np.float32)
    targets = np.asarray(targets, np.int32)
    n = nll.shape[0]
    if hidden.shape[:1] != (n,) or targets.shape != (n,):
        raise ValueError(f"nll {nll.shape}, hidden {hidden.shape} and targets {targets.shape} "
                         "must have one entry per target token")
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"cache lam={lam!r} must be in [0, 1)")
    if window <= 0 or block <= 0:
        raise ValueError(f"cache window={window} and block={block} must be > 0")
    block = min(block, n)
    out = _cache_blocks(_pad_leading(nll, block), _pad_leading(hidden, block),
                        _pad_leading(targets, block, -2), jnp.float32(lam), jnp.float32(theta),
                        int(window), int(block))
    return np.asarray(jax.device_get(out))[:n]


# --- dynamic evaluation ---------------------------------------------------------------------


def _segment_loss(model, params, carry, inputs, targets, mask):
    """(mean NLL over the mask, (nll [1, n] masked, new carry)) of one window."""
    out = model.apply({"params": params}, inputs, carry, mask=mask, train=False)
    nll = token_nll(out.logits, targets) * mask
    return nll.sum() / jnp.maximum(mask.sum(), 1), (nll, out.carry)


@functools.partial(jax.jit, static_argnums=0)
def _sum_squared_grads(model, params, inputs, targets, mask):
    grad_fn = jax.grad(functools.partial(_segment_loss, model), has_aux=True)

    def window(state, xs):
        carry, acc = state
        g, (_, carry) = grad_fn(params, carry, *xs)
        acc = jax.tree_util.tree_map(lambda a, x: a + jnp.square(x), acc, g)
        return (carry, acc), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    carry = model.initial_carry(inputs.shape[1])
    (_, acc), _ = jax.lax.scan(window, (carry, zeros), (inputs, targets, mask))
    return acc


def gradient_rms(model, params, train_ids, batch_size: int = 100, bptt: int = 5,
                 max_batches: int = 100):
    """MS: the root-mean-square gradient of each parameter (a pytree like `params`) over the
    first `max_batches` windows (0 = all) of the training stream cut into `batch_size` rows and
    windows of `bptt` tokens, the carry crossing windows, each window's loss its mean NLL."""
    if batch_size <= 0 or bptt <= 0 or max_batches < 0:
        raise ValueError(f"batch_size={batch_size} and bptt={bptt} must be > 0, "
                         f"max_batches={max_batches} >= 0")
    stream = LMStream(np.asarray(train_ids, np.int32), batch_size, bptt)
    positions = stream.positions(0)
    if max_batches:
        positions = positions[:max_batches]
    windows = [stream.window(p) for p in positions]
    stack = lambda f: np.stack([getattr(w, f) for w in windows])  # noqa: E731
    acc = _sum_squared_grads(model, params, stack("inputs"), stack("targets"), stack("mask"))
    return jax.tree_util.tree_map(lambda a: jnp.sqrt(a / len(windows)), acc)


def update_coefficients(params, ms, rule: str = "rms", lr: float = 5e-5, decay: float = 2e-3,
                        eps: float = 2e-5):
    """(step, pull): pytrees with theta <- theta - step * g + pull * (theta0 - theta); rule
    "rms" needs `ms` (from `gradient_rms`), "sgd" ignores it."""
    if rule not in RULES:
        raise ValueError(f"dynamic evaluation rule {rule!r} is not valid; valid: {list(RULES)}")
    if lr < 0 or decay < 0 or eps <= 0:
        raise ValueError(f"dynamic evaluation needs lr >= 0, decay >= 0, eps > 0; got lr={lr}, "
                         f"decay={decay}, eps={eps}")
    tree_map = jax.tree_util.tree_map
    if rule == "sgd":  # one scalar per parameter array (broadcast in the update)
        return (tree_map(lambda p: jnp.asarray(lr, p.dtype), params),
                tree_map(lambda p: jnp.asarray(decay, p.dtype), params))
    if ms is None:
        raise ValueError("rule 'rms' needs the RMS gradients ms (gradient_rms)")
    leaves = jax.tree_util.tree_leaves(ms)
    mean_ms = sum(jnp.mean(x) for x in leaves) / len(leaves)
    step = tree_map(lambda m: lr / (m + eps), ms)
    if decay == 0:
        return step, tree_map(jnp.zeros_like, ms)
    pull = tree_map(lambda m: decay * jnp.minimum(m / mean_ms, 1.0 / decay), ms)
    return step, pull


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _dynamic_chunk(model, params, carry, theta0, step, pull, inputs, targets, mask):
    grad_fn = jax.value_and_grad(functools.partial(_segment_loss, model), has_aux=True)

    def segment(state, xs):
        p, c = state
        (_, (nll, c)), g = grad_fn(p, c, *xs)
        live = jnp.any(xs[2]).astype(jnp.float32)  # an all-padding segment changes nothing
        p = jax.tree_util.tree_map(
            lambda t, gi, t0, s, d: t + live * (d * (t0 - t) - s * gi), p, g, theta0, step, pull)
        return (p, c), nll[0]

    (params, carry), nll = jax.lax.scan(segment, (params, carry), (inputs, targets, mask))
    return params, carry, nll


def dynamic_eval(model, params, ids, ms=None, rule: str = "rms", lr: float = 5e-5,
                 decay: float = 2e-3, eps: float = 2e-5, segment: int = 5, chunk: int = 512,
                 progress=None):
    """(nll [T], adapted params): dynamic evaluation of the stream `ids` [N] (module docstring),
    `chunk` segments per jitted scan; `progress(tokens_done, nll_sum)` after each chunk."""
    step, pull = update_coefficients(params, ms, rule, lr, decay, eps)
    windows = _stream_windows(ids, segment)
    chunk = min(chunk, windows[0].shape[0])
    inputs, targets, mask = (_pad_leading(a, chunk) for a in windows)
    theta0 = params
    params = jax.tree_util.tree_map(jnp.array, params)  # a copy: the chunks donate theirs
    carry = model.initial_carry(1)
    out, done, total = [], 0, 0.0
    for lo in range(0, inputs.shape[0], chunk):
        sl = slice(lo, lo + chunk)
        params, carry, nll = _dynamic_chunk(model, params, carry, theta0, step, pull,
                                            inputs[sl], targets[sl], mask[sl])
        nll = np.asarray(jax.device_get(nll)).reshape(-1)[mask[sl].reshape(-1)]
        out.append(nll)
        done, total = done + nll.size, total + float(nll.sum(dtype=np.float64))
        if progress is not None:
            progress(done, total)
    return np.concatenate(out), params


__all__ = ["RULES", "StreamPass", "cache_nll", "dynamic_eval", "gradient_rms", "stream_pass",
           "update_coefficients"]
