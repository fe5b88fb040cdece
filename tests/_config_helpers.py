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


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
