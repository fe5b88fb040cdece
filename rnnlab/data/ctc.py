"""A generated alignment-free labelling task (the speech-recognition shape): every label is
spoken as a run of noisy frames, with silence between, and the output is the label sequence,
much shorter than the frames and with no frame alignment given.

    prototypes = make_prototypes(num_classes=8, feature_dim=16)
    frames, mask, labels = generate(rng, prototypes, batch_size=32, min_labels=2, max_labels=6)
    # frames [32, T, 16] float32, mask [32, T] bool, labels [32, 6] int32 (1..8, 0-padded)

A sequence of n labels (n uniform in [min_labels, max_labels], labels uniform in 1..C) is laid
out as: silence, run 1, silence, run 2, ..., run n, silence. A run of label c lasts r frames
(r uniform in [min_run, max_run]), each frame = prototype_c + noise·N(0, I); a silence lasts
0..max_gap frames (uniform; at least 1 between two equal labels, else the two runs would be
one), each frame = noise·N(0, I). The prototypes are fixed N(0, I) vectors, one per label
(`make_prototypes`, from their own seed, so the task does not depend on the run's seed). Every
sequence is padded (mask False) to T = `frames_width(...)`.
"""

from __future__ import annotations

import numpy as np

PROTOTYPE_SEED = 1234


def frames_width(max_labels: int, max_run: int, max_gap: int) -> int:
    """Padded frame count T: every run and every silence at its longest."""
    return max_labels * max_run + (max_labels + 1) * max(max_gap, 1)


def make_prototypes(num_classes: int, feature_dim: int,
                    seed: int = PROTOTYPE_SEED) -> np.ndarray:
    """[num_classes + 1, feature_dim]: row c is label c's mean frame; row 0 (blank/silence) is
    zero."""
    protos = np.random.default_rng(seed).standard_normal((num_classes, feature_dim))
    return np.concatenate([np.zeros((1, feature_dim)), protos]).astype(np.float32)


def check(num_classes, min_labels, max_labels, min_run, max_run, max_gap, noise) -> None:
    """ValueError naming the first bad argument of `generate`."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    if not 1 <= min_labels <= max_labels:
        raise ValueError(f"need 1 <= min_labels <= max_labels, got {min_labels!r}, "
                         f"{max_labels!r}")
    if not 1 <= min_run <= max_run:
        raise ValueError(f"need 1 <= min_run <= max_run, got {min_run!r}, {max_run!r}")
    if max_gap < 0 or noise < 0:
        raise ValueError(f"max_gap={max_gap!r} and noise={noise!r} must be >= 0")


def generate(rng: np.random.Generator, prototypes: np.ndarray, batch_size: int,
             min_labels: int = 2, max_labels: int = 6, min_run: int = 2, max_run: int = 5,
             max_gap: int = 2, noise: float = 1.0):
    """One batch (see the module docstring).

    Returns (frames [batch, T, features] float32, mask [batch, T] bool, labels
    [batch, max_labels] int32 right-padded with 0).
    """
    num_classes = prototypes.shape[0] - 1
    check(num_classes, min_labels, max_labels, min_run, max_run, max_gap, noise)
    width = frames_width(max_labels, max_run, max_gap)
    frames = np.zeros((batch_size, width, prototypes.shape[1]), np.float32)
    mask = np.zeros((batch_size, width), bool)
    labels = np.zeros((batch_size, max_labels), np.int32)
    for b in range(batch_size):
        n = int(rng.integers(min_labels, max_labels + 1))
        seq = rng.integers(1, num_classes + 1, n)
        classes = []
        for i, c in enumerate(seq):
            low = 1 if i and seq[i - 1] == c else 0
            classes += [0] * int(rng.integers(low, max(max_gap, low) + 1))
            classes += [int(c)] * int(rng.integers(min_run, max_run + 1))
        classes += [0] * int(rng.integers(0, max_gap + 1))
        t = len(classes)
        frames[b, :t] = prototypes[classes] + noise * rng.standard_normal(
            (t, prototypes.shape[1]))
        mask[b, :t] = True
        labels[b, :n] = seq
    return frames, mask, labels


__all__ = ["PROTOTYPE_SEED", "frames_width", "generate", "make_prototypes"]
