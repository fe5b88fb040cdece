"""The training engine: tasks, optax chains, train state, jitted steps, checkpoints, metrics.

    from rnnlab.train import train_and_evaluate
    result = train_and_evaluate(config, workdir)       # config: experiments/configs/<name>.py

Modules: `config` (engine config sections + validation), `optim`, `state`, `steps`,
`checkpoint`, `metrics`, `mesh` (device mesh, shardings, multi-host), `loop`. The tasks it trains live in `rnnlab.tasks`.
"""

from rnnlab.train.checkpoint import CheckpointError
from rnnlab.config import ConfigError, RunError, base_config
from rnnlab.train.config import validate
from rnnlab.train.loop import NonFiniteError, Result, evaluate, train_and_evaluate

__all__ = ["CheckpointError", "ConfigError", "NonFiniteError", "Result", "RunError", "base_config",
           "evaluate", "train_and_evaluate", "validate"]
