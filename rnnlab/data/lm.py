"""Language-model batching: one token stream, `batch` contiguous rows, BPTT windows.

Training (truncated BPTT, Zaremba et al. 2014; Merity et al. 2017):

    stream = LMStream(train_ids, batch=20, bptt=35)   # drops the tail that does not divide
    position = 0                                                # a plain int: checkpoint it
    while ...:
        b = stream.window(position)                             # LMBatch
        if b.reset: carry = model.initial_carry(batch)          # a new epoch starts
        loss, carry = step(params, b.inputs, b.targets, b.mask, carry)
        position = b.next_position

`position` counts target columns over all epochs (epoch = position // stream.span), so a run
resumes exactly from (position, carry). With `random_length=True` the window length is AWD-LSTM's
`max(min_length, int(N(bptt', std)))` with bptt' = bptt, or bptt / 2 with probability 0.05,
drawn from an RNG keyed by (seed, epoch, offset): the same position always gives the same window.

Evaluation covers every token of the stream exactly once:

    for b in LMStream(valid_ids, batch=10, bptt=70, train=False):   # no tail dropped
        ... sum NLL over b.mask ...

In evaluation mode the N - 1 targets of the stream (every token but the first) are split into
`batch` contiguous rows of ceil((N - 1) / batch) targets; the last row is padded (mask False).

Windows are padded to a fixed width (`pad_to`, default the longest possible window) with
`mask` False on padding, so a jitted step sees one shape; padding steps must not move the
carried state (`rnnlab.unroll(..., mask=mask)` leaves it unchanged there).

Multi-host runs: `batch` is always the global number of rows; with `process_index=p,
process_count=P` the stream keeps only rows `rnnlab.data.hosts.process_rows(batch, p, P)` (a
contiguous slice of the token stream) and its windows are [batch / P, width]. The rows of all
processes stacked in process order are exactly the single-process windows, so positions, epochs
and results do not depend on the number of hosts.

`epoch_steps` counts an epoch's train windows (for configs that state epochs as steps);
`generated_corpus` is the pseudo-English corpus of smoke runs and tests (no files).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from rnnlab.data.hosts import process_rows
from rnnlab.data.text import Corpus


class LMBatch(NamedTuple):
    inputs: np.ndarray    # [batch, width] int32 token ids
    targets: np.ndarray   # [batch, width] int32, the next token of each input
    mask: np.ndarray      # [batch, width] bool, False on padding
    length: int           # real window length (columns with any target); <= width
    position: int         # this window's position (see module docstring)
    next_position: int    # position of the following window
    epoch: int
    reset: bool           # first window of an epoch: start from a zero carry


def batchify(ids: np.ndarray, batch: int) -> np.ndarray:
    """[N] -> [batch, N // batch]: contiguous rows, the tail that does not divide dropped."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D token stream, got shape {ids.shape}")
    if batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    n = ids.shape[0] // batch
    if n < 2:
        raise ValueError(f"a stream of {ids.shape[0]} tokens is too short for {batch} rows of "
                         "at least 2 tokens; lower the batch size")
    return ids[: n * batch].reshape(batch, n)


def awd_window_length(rng: np.random.Generator, bptt: int, std: float = 5.0,
                      p_half: float = 0.05, min_length: int = 5) -> int:
    """AWD-LSTM's randomised BPTT length: bptt' ~ bptt or bptt/2 (prob p_half), then
    max(min_length, int(N(bptt', std)))."""
    base = bptt if rng.random() >= p_half else bptt / 2.0
    return max(min_length, int(rng.normal(base, std)))


class LMStream:
    """A token stream cut into `batch` rows and read in BPTT windows.

    Args:
      ids: [N] int token ids of the whole split.
      batch: number of rows (independent contiguous streams).
      bptt: window length (the mean length with `random_length`).
      train: True drops the tail that does not divide into `batch` rows (standard batchify);
        False keeps every token and pads the last row (evaluation covers each target once).
      random_length: AWD-LSTM's randomised window length (see `awd_window_length`).
      seed: RNG seed of the random lengths.
      std, p_half, min_length: parameters of the random length.
      max_length: windows are cut to at most this many steps; default bptt, or bptt + 3 std
        with `random_length` (covers all but ~0.1% of the draws, which are cut).
      pad_to: width of the returned arrays; default `max_length`. None of the shapes change
        from window to window unless `pad_to=0`, which returns each window at its own length.
      process_index, process_count: keep only this process's rows (module docstring); `batch`
        must be a multiple of `process_count`.
    """

    def __init__(self, ids, batch: int, bptt: int, *, train: bool = True,
                 random_length: bool = False, seed: int = 0, std: float = 5.0,
                 p_half: float = 0.05, min_length: int = 5, max_length: int | None = None,
                 pad_to: int | None = None, process_index: int = 0, process_count: int = 1):
        if not isinstance(bptt, (int, np.integer)) or bptt <= 0:
            raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
        ids = np.asarray(ids, np.int32)
        if ids.ndim != 1:
            raise ValueError(f"ids must be a 1-D token stream, got shape {ids.shape}")
        self.batch, self.bptt, self.train = int(batch), int(bptt), train
        self.random_length, self.seed = random_length, int(seed)
        self.std, self.p_half, self.min_length = std, p_half, min_length
        if max_length is None:
            max_length = int(math.ceil(bptt + 3 * std)) if random_length else bptt
        self.max_length = int(max_length)
        self.pad_to = self.max_length if pad_to is None else int(pad_to)
        if self.pad_to and self.pad_to < self.max_length:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest window "
                             f"max_length={self.max_length}")
        if self.batch <= 0:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        mine = process_rows(self.batch, process_index, process_count)  # this process's rows
        self.process_index, self.process_count = int(process_index), int(process_count)
        if train:
            rows = batchify(ids, self.batch)
            self.num_targets = int(rows.shape[0] * (rows.shape[1] - 1))  # over all processes
            rows = rows[mine]
            self._inputs, self._targets = rows[:, :-1], rows[:, 1:]
            self._mask = np.ones(self._inputs.shape, bool)
        else:
            n_targets = ids.shape[0] - 1
            if n_targets < 1:
                raise ValueError(f"a stream of {ids.shape[0]} tokens has nothing to predict")
            per_row = -(-n_targets // self.batch)
            local = mine.stop - mine.start
            inputs = np.zeros((local, per_row), np.int32)
            targets = np.zeros((local, per_row), np.int32)
            mask = np.zeros((local, per_row), bool)
            for i, r in enumerate(range(mine.start, mine.stop)):
                lo, hi = r * per_row, min((r + 1) * per_row, n_targets)
                if hi > lo:
                    inputs[i, : hi - lo] = ids[lo:hi]
                    targets[i, : hi - lo] = ids[lo + 1: hi + 1]
                    mask[i, : hi - lo] = True
            self._inputs, self._targets, self._mask = inputs, targets, mask
            self.num_targets = n_targets
        self.span = int(self._inputs.shape[1])  # target columns per epoch

    # --- positions ------------------------------------------------------------------------
    def epoch_of(self, position: int) -> int:
        return int(position) // self.span

    def window_length(self, position: int) -> int:
        """Length of the window starting at `position` (deterministic in seed and position)."""
        epoch, offset = divmod(int(position), self.span)
        if self.random_length:
            rng = np.random.default_rng([self.seed, epoch, offset])
            length = awd_window_length(rng, self.bptt, self.std, self.p_half, self.min_length)
        else:
            length = self.bptt
        return min(length, self.max_length, self.span - offset)

    def window(self, position: int) -> LMBatch:
        """The window starting at `position`."""
        position = int(position)
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        epoch, offset = divmod(position, self.span)
        length = self.window_length(position)
        sl = slice(offset, offset + length)
        inputs, targets, mask = self._inputs[:, sl], self._targets[:, sl], self._mask[:, sl]
        if self.pad_to and length < self.pad_to:
            pad = ((0, 0), (0, self.pad_to - length))
            inputs, targets = np.pad(inputs, pad), np.pad(targets, pad)
            mask = np.pad(mask, pad)
        return LMBatch(np.ascontiguousarray(inputs), np.ascontiguousarray(targets),
                       np.ascontiguousarray(mask), length, position, position + length, epoch,
                       offset == 0)

    def positions(self, epoch: int = 0) -> list[int]:
        """Start positions of every window of `epoch`."""
        pos, end, out = epoch * self.span, (epoch + 1) * self.span, []
        while pos < end:
            out.append(pos)
            pos += self.window_length(pos)
        return out

    def epoch_windows(self, epoch: int = 0):
        """Iterates over the windows of one epoch, in order."""
        for p in self.positions(epoch):
            yield self.window(p)

    def __iter__(self):
        return self.epoch_windows(0)

    def __len__(self) -> int:
        """Windows per epoch (epoch 0 with random lengths)."""
        return len(self.positions(0))


def epoch_steps(num_tokens: int, batch_size: int, bptt: int, random_length: bool = False,
                std: float = 5.0, seed: int = 0) -> int:
    """Train windows per epoch of a `num_tokens` stream (epoch 0's count with random lengths);
    for configs that state a number of epochs as `train.steps`."""
    stream = LMStream(np.zeros(num_tokens, np.int32), batch_size, bptt,
                      random_length=random_length, std=std, seed=seed)
    return len(stream.positions(0))


def generated_corpus(num_sentences: int = 1200, seed: int = 0) -> Corpus:
    """A small deterministic pseudo-English corpus (a toy grammar): smoke runs and tests that
    need no files. Splits 80/10/10 by sentence; lines end with a newline."""
    rng = np.random.default_rng(seed)
    subjects = ["the cat", "a dog", "the old man", "my sister", "the market", "a bird",
                "the company", "our teacher"]
    verbs = ["sat on", "looked at", "bought", "sold", "saw", "walked to", "liked", "found"]
    objects = ["the mat", "a house", "the river", "some bread", "the shares", "a letter",
               "the garden", "the city"]
    tails = ["", " today", " again", " in the morning", " last year", " with care"]
    lines = []
    for _ in range(num_sentences):
        s, v, o, t = (rng.integers(len(x)) for x in (subjects, verbs, objects, tails))
        lines.append(f"{subjects[s]} {verbs[v]} {objects[o]}{tails[t]} .")
    a, b = int(0.8 * num_sentences), int(0.9 * num_sentences)
    join = lambda ls: "\n".join(ls) + "\n"  # noqa: E731
    return Corpus("generated", join(lines[:a]), join(lines[a:b]), join(lines[b:]))
