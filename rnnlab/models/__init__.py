"""Flax modules that compose cells into task models."""

from rnnlab.models.recurrent import Recurrent
from rnnlab.models.sequence import SequenceModel

__all__ = ["Recurrent", "SequenceModel"]
