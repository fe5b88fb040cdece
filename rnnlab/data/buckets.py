"""Variable-length examples in padded batches, bucketed by length, with padding masks.

    vocab = padded_vocab(train_token_lists, max_words=20000)    # "<pad>" = 0, "<unk>" = 1
    data = PaddedExamples(token_ids, labels, lengths=bucket_lengths(400, 4))
    order = data.epoch_order(batch_size=64, epoch=3, seed=0)     # list of index arrays
    batch = data.batch(order[i], rows=64)
    # {"inputs": int32 [rows, T], "mask": bool [rows, T], "targets": int32 [rows] or [rows, T],
    #  "weights": float32 [rows]}

T is the smallest bucket length that holds the batch's longest example, so a run compiles one
step per bucket length, not one per batch. Padding tokens are id 0 (`PAD_ID`) and masked out;
rows beyond the examples (the last evaluation batch) have weight 0 and an all-False mask.

Train order (`epoch_order`): a permutation of the examples drawn from (seed, epoch), cut into
pools of `pool` batches; each pool is sorted by length and cut into batches (similar lengths
share a batch, little padding) and the batch order is shuffled. The remainder that does not
fill a whole batch is left out of that epoch (a different remainder each epoch). Evaluation
order (`eval_order`): every example once, sorted by length.
"""

from __future__ import annotations

import numpy as np

from rnnlab.data.vocab import Vocab

PAD_ID = 0
PAD, UNK = "<pad>", "<unk>"


def padded_vocab(token_lists, max_words: int = 0) -> Vocab:
    """Word vocabulary of tokenised train sequences: "<pad>" (id 0 = `PAD_ID`), "<unk>" (id 1),
    then the most frequent tokens (all if `max_words` is 0, else the top `max_words`).

    It is an `rnnlab.data.vocab.Vocab` (saved and loaded like the LM vocabularies) whose
    end-of-line slot holds "<pad>", which is never appended to a sequence.
    """
    text = "\n".join(" ".join(tokens) for tokens in token_lists)
    vocab = Vocab.build(text, "word", max_size=max_words + 2 if max_words else None, unk=UNK,
                        eos=PAD)
    assert vocab.index[PAD] == PAD_ID
    return vocab


def bucket_lengths(max_length: int, num_buckets: int, multiple: int = 8) -> tuple[int, ...]:
    """Padded lengths max_length / 2^k (k = num_buckets - 1, ..., 0), rounded up to a multiple of
    `multiple` (the largest is exactly max_length), without duplicates."""
    if max_length < 1 or num_buckets < 1:
        raise ValueError(f"max_length={max_length!r} and num_buckets={num_buckets!r} must be "
                         ">= 1")
    out = {max_length}
    for k in range(1, num_buckets):
        n = -(-max_length // 2**k)
        out.add(min(max_length, -(-n // multiple) * multiple))
    return tuple(sorted(out))


class PaddedExamples:
    """Token sequences with a label per sequence or per token (see the module docstring).

    tokens: list of int arrays [length_i] (length_i >= 1, at most lengths[-1]); labels: int
    array [num_examples] (one per sequence) or a list of int arrays [length_i] (one per token).
    """

    def __init__(self, tokens, labels, lengths: tuple[int, ...]):
        self.tokens = [np.asarray(t, np.int32) for t in tokens]
        self.per_token = not (isinstance(labels, np.ndarray) and labels.ndim == 1)
        self.labels = ([np.asarray(y, np.int32) for y in labels] if self.per_token
                       else labels.astype(np.int32))
        if len(self.labels) != len(self.tokens):
            raise ValueError(f"{len(self.tokens)} sequences but {len(self.labels)} labels")
        self.lengths = np.array([len(t) for t in self.tokens], np.int64)
        self.bucket_lengths = tuple(sorted(lengths))
        if len(self.tokens) and self.lengths.min() < 1:
            raise ValueError("every sequence needs at least one token")
        if len(self.tokens) and self.lengths.max() > self.bucket_lengths[-1]:
            raise ValueError(f"a sequence of {self.lengths.max()} tokens is longer than the "
                             f"largest bucket length {self.bucket_lengths[-1]}; truncate first")
        if self.per_token:
            bad = [i for i, (t, y) in enumerate(zip(self.tokens, self.labels))
                   if len(t) != len(y)]
            if bad:
                raise ValueError(f"sequence {bad[0]} has {len(self.tokens[bad[0]])} tokens but "
                                 f"{len(self.labels[bad[0]])} labels")

    def __len__(self) -> int:
        return len(self.tokens)

    def padded_length(self, indices) -> int:
        longest = int(self.lengths[indices].max()) if len(indices) else 1
        return next(n for n in self.bucket_lengths if n >= longest)

    def batch(self, indices, rows: int) -> dict:
        """The examples `indices` padded to one bucket length; `rows - len(indices)` empty rows
        (weight 0) are appended."""
        indices = np.asarray(indices, np.int64)
        if len(indices) > rows:
            raise ValueError(f"{len(indices)} examples do not fit a batch of {rows} rows")
        t = self.padded_length(indices)
        inputs = np.full((rows, t), PAD_ID, np.int32)
        mask = np.zeros((rows, t), bool)
        targets = np.zeros((rows, t) if self.per_token else (rows,), np.int32)
        for r, i in enumerate(indices):
            n = self.lengths[i]
            inputs[r, :n], mask[r, :n] = self.tokens[i], True
            if self.per_token:
                targets[r, :n] = self.labels[i]
            else:
                targets[r] = self.labels[i]
        weights = (np.arange(rows) < len(indices)).astype(np.float32)
        return {"inputs": inputs, "mask": mask, "targets": targets, "weights": weights}

    def epoch_order(self, batch_size: int, epoch: int, seed: int, pool: int = 50) -> list:
        """The train batches (index arrays of `batch_size`) of `epoch`, deterministic in
        (seed, epoch): length-sorted within pools of `pool` batches, batches shuffled."""
        n_batches = len(self) // batch_size
        if n_batches == 0:
            raise ValueError(f"{len(self)} examples do not fill one batch of {batch_size}")
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(len(self))[: n_batches * batch_size]
        batches = []
        chunk = batch_size * max(pool, 1)
        for start in range(0, len(perm), chunk):
            part = perm[start:start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches.extend(part.reshape(-1, batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def eval_order(self, batch_size: int) -> list:
        """Every example once, sorted by length, in batches of at most `batch_size`."""
        order = np.argsort(self.lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
