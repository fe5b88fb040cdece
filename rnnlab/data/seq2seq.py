"""Data for encoder-decoder tasks: generated string tasks and parallel text files.

    source, target = generate("reverse", rng, batch_size=64, min_length=1, max_length=10)
    # source [64, 10] int32 ("3 1 4" padded with PAD), target [64, 11] int32 ("4 1 3 <eos>" ...)
    pairs = read_parallel("train.src", "train.tgt", level="word")
    src_vocab, tgt_vocab = build_vocab(pairs, 0), build_vocab(pairs, 1)
    source, target = encode_pairs(pairs, src_vocab, tgt_vocab, 20, 20)

Token ids shared by every sequence-output task (`rnnlab.tasks.seq2seq`, `.caption`):
PAD = 0 (padding; also what decoders emit after EOS), BOS = 1 (the decoder's first input),
EOS = 2 (ends every target). Sources are padded with PAD and have no BOS/EOS; targets are the
output tokens followed by EOS, then PAD. Every batch is padded to a fixed width, so one
compiled step serves every batch.

Generated tasks (`KINDS`), over the digits 0-9 (`GENERATED_VOCAB`):
  reverse  source: n random digits, n uniform in [min_length, max_length]; target: reversed.
  sort     the same sources; target: the digits in ascending order.
  add      source: "a+b" with a and b of 1..max_length digits (count uniform in
           [min_length, max_length], no leading zero); target: the digits of a + b.

Parallel text files: line i of the source file is translated by line i of the target file;
"word" level splits lines on whitespace, "char" level takes every character. Vocabularies are
built from the train pairs (`<pad> <bos> <eos> <unk>`, then tokens by descending count, ties by
token) and saved as JSON with a run (`rnnlab.data.vocab.Vocab`).
"""

from __future__ import annotations

import collections
import os

import numpy as np

from rnnlab.data.vocab import Vocab

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
UNK_TOKEN = "<unk>"
DIGITS = "0123456789"
PLUS = "+"
GENERATED_VOCAB = Vocab(list(SPECIALS) + list(DIGITS) + [PLUS], "char", eos="<eos>")
DIGIT0 = GENERATED_VOCAB.index["0"]  # id of the digit 0; digit d is DIGIT0 + d
PLUS_ID = GENERATED_VOCAB.index[PLUS]
KINDS = ("reverse", "sort", "add")
LEVELS = ("word", "char")


def widths(kind: str, max_length: int) -> tuple[int, int]:
    """(source width, target width incl. EOS) of the padded arrays of a generated task."""
    if kind == "add":
        return 2 * max_length + 1, max_length + 2  # a + b has at most max_length + 1 digits
    return max_length, max_length + 1


def _check(kind: str, min_length: int, max_length: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown generated task {kind!r}; valid choices: {list(KINDS)}")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got min_length={min_length!r}, "
                         f"max_length={max_length!r}")


def _pad_rows(rows: list, width: int) -> np.ndarray:
    out = np.full((len(rows), width), PAD, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _number(rng: np.random.Generator, digits: int) -> int:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.integers(lo, 10 ** digits))


def generate(kind: str, rng: np.random.Generator, batch_size: int, min_length: int,
             max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch of a generated task (see the module docstring).

    Returns (source [batch, S] int32, target [batch, T] int32) with (S, T) =
    `widths(kind, max_length)`.
    """
    _check(kind, min_length, max_length)
    width_s, width_t = widths(kind, max_length)
    sources, targets = [], []
    for _ in range(batch_size):
        if kind == "add":
            a = _number(rng, int(rng.integers(min_length, max_length + 1)))
            b = _number(rng, int(rng.integers(min_length, max_length + 1)))
            src = [DIGIT0 + int(d) for d in str(a)] + [PLUS_ID] + [DIGIT0 + int(d) for d in str(b)]
            out = [DIGIT0 + int(d) for d in str(a + b)]
        else:
            n = int(rng.integers(min_length, max_length + 1))
            digits = rng.integers(0, 10, n)
            src = (DIGIT0 + digits).tolist()
            out = src[::-1] if kind == "reverse" else sorted(src)
        sources.append(src)
        targets.append(out + [EOS])
    return _pad_rows(sources, width_s), _pad_rows(targets, width_t)


# --- parallel text files ------------------------------------------------------------------------


def _tokens(line: str, level: str) -> list[str]:
    return line.split() if level == "word" else list(line)


def read_parallel(source_path: str, target_path: str, level: str = "word") -> list:
    """Reads aligned lines -> [(source tokens, target tokens)], skipping pairs where either side
    is empty. Raises if a file is missing or the line counts differ."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; valid choices: {list(LEVELS)}")
    lines = []
    for path in (source_path, target_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"parallel text file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            lines.append(f.read().rstrip("\n").split("\n"))
    if len(lines[0]) != len(lines[1]):
        raise ValueError(f"{source_path} has {len(lines[0])} lines but {target_path} has "
                         f"{len(lines[1])}; parallel files need one target line per source line")
    pairs = [(_tokens(s.rstrip("\r"), level), _tokens(t.rstrip("\r"), level))
             for s, t in zip(*lines)]
    return [(s, t) for s, t in pairs if s and t]


def build_vocab(pairs: list, side: int, level: str = "word", max_size: int = 0) -> Vocab:
    """The vocabulary of one side (0 = source, 1 = target) of the train pairs: the specials and
    `<unk>`, then tokens by descending count (at most `max_size` in all; 0 = every token)."""
    counts = collections.Counter(tok for pair in pairs for tok in pair[side])
    specials = list(SPECIALS) + [UNK_TOKEN]
    rest = sorted((t for t in counts if t not in specials), key=lambda t: (-counts[t], t))
    if max_size:
        if max_size <= len(specials):
            raise ValueError(f"max_size must be > {len(specials)} (the special tokens), "
                             f"got {max_size}")
        rest = rest[:max_size - len(specials)]
    return Vocab(specials + rest, level, unk=UNK_TOKEN, eos="<eos>")


def encode_pairs(pairs: list, source_vocab: Vocab, target_vocab: Vocab, source_width: int,
                 target_width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Token pairs -> (source [n, source_width], target [n, target_width] with EOS, dropped):
    pairs whose source is longer than source_width or whose target (with EOS) is longer than
    target_width are left out and counted in `dropped`."""
    kept = [(s, t) for s, t in pairs if len(s) <= source_width and len(t) + 1 <= target_width]
    src = [source_vocab.encode_tokens(s) for s, _ in kept]
    tgt = [np.append(target_vocab.encode_tokens(t), EOS) for _, t in kept]
    return _pad_rows(src, source_width), _pad_rows(tgt, target_width), len(pairs) - len(kept)


def decode_target(vocab: Vocab, ids) -> list[str]:
    """Output ids -> tokens, stopping at the first EOS (PAD and BOS are dropped)."""
    out = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(vocab.tokens[i])
    return out


def write_generated_files(directory: str, kind: str, sizes: dict, min_length: int,
                          max_length: int, seed: int = 0) -> dict:
    """Writes a generated task as parallel text files (digits separated by spaces): for each
    split name -> number of pairs in `sizes`, `<directory>/<split>.src` and `<split>.tgt`.
    Returns {split: (source path, target path)} (a stand-in corpus for the files reader)."""
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for i, (split, n) in enumerate(sorted(sizes.items())):
        source, target = generate(kind, np.random.default_rng([seed, i]), n, min_length,
                                  max_length)
        paths[split] = tuple(os.path.join(directory, f"{split}.{ext}") for ext in ("src", "tgt"))
        for path, ids in zip(paths[split], (source, target)):
            with open(path, "w", encoding="utf-8") as f:
                for row in ids:
                    f.write(" ".join(GENERATED_VOCAB.tokens[j] for j in row
                                     if j not in (PAD, EOS)) + "\n")
    return paths


__all__ = ["BOS", "EOS", "GENERATED_VOCAB", "KINDS", "LEVELS", "PAD", "build_vocab",
           "decode_target", "encode_pairs", "generate", "read_parallel", "widths",
           "write_generated_files"]
