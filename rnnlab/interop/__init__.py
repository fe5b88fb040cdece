"""Converters between rnnlab parameters and other frameworks' modules (`interop.torch`)."""

import importlib


def __getattr__(name):
    # `rnnlab.interop.torch` is imported lazily so that rnnlab never needs PyTorch to import.
    if name == "torch":
        return importlib.import_module("rnnlab.interop.torch")
    raise AttributeError(name)
