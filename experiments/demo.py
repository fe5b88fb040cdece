"""A small demo: an LSTM and a tanh RNN learn the adding problem (T = 50) for a few hundred steps.

    python -m experiments.demo
"""

import time

import jax
import jax.numpy as jnp
import optax

import rnnlab


def adding_batch(key, batch, length):
    k1, k2 = jax.random.split(key)
    values = jax.random.uniform(k1, (batch, length))
    idx = jax.vmap(lambda k: jax.random.choice(k, length, (2,), replace=False))(
        jax.random.split(k2, batch))
    marks = jnp.zeros((batch, length)).at[jnp.arange(batch)[:, None], idx].set(1.0)
    return jnp.stack([values, marks], -1), (values * marks).sum(-1)


def train(name, steps=400, hidden=64, length=50, batch=64):
    cell = rnnlab.cells.make(name, hidden_size=hidden)
    k_cell, k_out, k_data = jax.random.split(jax.random.key(0), 3)
    params = {"cell": cell.init(k_cell, 2), "w": jax.random.normal(k_out, (hidden, 1)) * 0.01}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    state = opt.init(params)

    def loss_fn(p, xs, ys):
        _, hs = rnnlab.unroll(cell, p["cell"], xs)
        return jnp.mean(jnp.square((hs[:, -1] @ p["w"])[:, 0] - ys))

    @jax.jit
    def step(p, s, key):
        xs, ys = adding_batch(key, batch, length)
        loss, g = jax.value_and_grad(loss_fn)(p, xs, ys)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    t0 = time.time()
    for i, key in enumerate(jax.random.split(k_data, steps)):
        params, state, loss = step(params, state, key)
        if (i + 1) % 100 == 0:
            print(f"{name:5s} step {i + 1:4d}  mse {float(loss):.4f}  ({time.time() - t0:.1f}s)")
    return float(loss)


if __name__ == "__main__":
    print("adding problem, T=50; predicting 1 gives MSE 0.167")
    for name in ("lstm", "rnn_tanh"):
        train(name)
