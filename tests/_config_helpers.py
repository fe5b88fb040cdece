"""Helpers shared by the training-engine and LM-task tests."""

import importlib

import jax
import numpy as np


def smoke_config(name="adding", variant="smoke", **overrides):
    """experiments/configs/<name>.py:<variant> with synchronous checkpoints and dotted-key
    overrides, e.g. smoke_config("copy", **{"optim.lr": 0.1})."""
    config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
    config.checkpoint.async_save = False
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def smoke_eval_records(name, workdir):
    """Runs experiments/configs/<name>.py:smoke through train_and_evaluate in `workdir`; checks it
    ran every step and evaluated at steps 3 and 6 plus the test split; returns those records."""
    from rnnlab.train import train_and_evaluate
    from rnnlab.train.metrics import read_metrics

    config = smoke_config(name)
    result = train_and_evaluate(config, str(workdir))
    assert int(result.state.step) == config.train.steps
    evals = [r for r in read_metrics(str(workdir)) if r["split"] in ("eval", "test")]
    assert [(r["step"], r["split"]) for r in evals] == [(3, "eval"), (6, "eval"), (6, "test")]
    return evals


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
