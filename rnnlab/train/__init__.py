"""The training engine: tasks, optax chains, train state, jitted steps, checkpoints, metrics.

    from rnnlab.train import train_and_evaluate
    result = train_and_evaluate(config, workdir)       # config: experiments/configs/<name>.py

Modules: `config` (engine config sections + validation), `tasks` (the Task interface and the
synthetic tasks), `optim`, `state`, `steps`, `checkpoint`, `metrics`, `loop`.
"""

from rnnlab.train.config import ConfigError, base_config, validate
from rnnlab.train.loop import NonFiniteError, Result, evaluate, train_and_evaluate
from rnnlab.train.tasks import TASKS, make_task, register

__all__ = ["ConfigError", "NonFiniteError", "Result", "TASKS", "base_config", "evaluate",
           "make_task", "register", "train_and_evaluate", "validate"]
