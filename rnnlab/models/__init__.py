"""Flax modules that compose cells into task models."""

from rnnlab.models.recurrent import Recurrent

__all__ = ["Recurrent"]
