"""The Task interface: everything task-specific the training engine needs, and nothing else.

The loop, the steps and the checkpoints only talk to a task through these members:

    metric: str             # the task metric's key in `metrics(...)`, e.g. "mse", "accuracy", "bpc"
    metric_mode: str        # "min" or "max": which way is better (best checkpoint)
    carries_state: bool     # stream task: the hidden state is carried across consecutive train
                            # batches (truncated BPTT), reset every `steps_per_epoch` steps
    steps_per_epoch: int    # train batches per epoch (step-decay schedules, carry reset)
    batch_size: int         # train batch size (shape of the carried state)

    init(rng) -> params                               # the model's parameter pytree
    initial_carry(batch_size) -> carry                # zeros; used when carries_state
    loss(params, batch, carry, rng, train) -> (loss, (stats, new_carry))
        # pure and jittable. loss: scalar mean to differentiate; stats: dict of scalar sums over
        # the batch (adding them over batches must give the sums over the union); carry is None
        # for per-sequence tasks; rng is None when train is False (no dropout).
    metrics(stats) -> dict                            # sums -> reported metrics, "loss" included;
                                                      # works on jax and numpy values
    train_batch(step) -> batch                        # deterministic in step: the step counter is
                                                      # the data position, so resume is exact
    eval_batches() -> iterable of batches             # the whole validation set, once; for stream
                                                      # tasks in stream order (carry crosses them)
    # optional members:
    prepare(workdir) -> None                          # called once by train_and_evaluate before
                                                      # the state is built: read/write run files
                                                      # (the LM task's vocabulary)
    test_batches() -> iterable of batches             # the test set, evaluated once when training
                                                      # completes (metrics.jsonl split "test")
    update_scale(batch) -> scalar                     # multiplies this train step's update after
                                                      # clipping, i.e. its learning rate (jittable;
                                                      # LM with random window lengths: length/bptt,
                                                      # AWD-LSTM's lr2 = lr * seq_len / bptt)
    resets_carry: bool                                # True: loss() resets the carry itself at
                                                      # epoch starts (from its batches), and the
                                                      # engine's reset every `steps_per_epoch`
                                                      # steps is off (epochs of varying length)

Batches are numpy or jax arrays with the batch on the leading axis (scalars allowed) and hold
this process's rows only: `rnnlab.data.hosts.process_rows(rows, jax.process_index(),
jax.process_count())` of the global batch, i.e. all of it on one host. `batch_size` and the
shapes `loss` sees inside the jitted steps are global; the engine assembles and shards them
(`rnnlab.train.mesh`).

Every task family lives in its own module of this package. It is registered by name with
`register(name, factory)`; `factory(config)` builds the task and `factory.validate(config)`
checks `config.task` (raising `ConfigError`). The synthetic long-range tasks
(`rnnlab.tasks.synthetic`) are the reference implementation; the language-model task plugs in the
same way (`carries_state=True`, a token stream cut into BPTT windows by `train_batch(step)`).

Modules: `synthetic` (adding, copy, temporal_order), `lm` (language models), `classify`
(many-to-one, IMDB), `tagging` (many-to-many), `forecast` (time series), `esn` (reservoir +
ridge readout), `padded` (shared base for padded-batch tasks), `seq2seq` (encoder-decoder),
`caption` (one-to-many), `ctc` (alignment-free labelling).
"""

from __future__ import annotations

from rnnlab.train.config import ConfigError

TASKS: dict = {}


def register(name: str, factory) -> None:
    """Adds a task family: `factory(config) -> task`, `factory.validate(config)`."""
    TASKS[name] = factory


def make_task(config):
    """Builds the task `config.task.name` (config must already be validated)."""
    if config.task.name not in TASKS:
        raise ConfigError(f"config.task.name={config.task.name!r} is not valid; valid choices: "
                          f"{sorted(TASKS)}")
    return TASKS[config.task.name](config)


__all__ = ["TASKS", "make_task", "register"]

# Each module below registers its task families on import. A new task family is a new module
# in this package, added to this list.
from rnnlab.tasks import caption, classify, ctc, forecast, lm, seq2seq, synthetic, tagging  # noqa: E402,F401
