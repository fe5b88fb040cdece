"""Per-token tagging data (many-to-many, synchronised): a synthetic labelling rule with a known
answer, and CoNLL-style token/tag files.

    tokens, tags = synthetic_tags(rng, 1000, min_length=10, max_length=50, symbols=8,
                                  num_tags=2, rule="count")        # lists of int arrays
    sentences = read_conll("train.txt")                            # [(tokens, tags), ...]

Synthetic sequences draw symbols 1..`symbols` uniformly (0 is the padding id) with a length
uniform in [min_length, max_length]; the tag of step t is

    "count"  (number of 1s among x_0..x_t) mod num_tags   (num_tags = 2: the running parity;
             needs memory of the whole prefix)
    "lag"    x_{t-lag} mod num_tags, and 0 for t < lag    (needs exactly the last lag+1 steps)

CoNLL files: one token per line with its columns separated by tabs or spaces (the token in
`token_column`, the tag in `tag_column`, default the first and the last), a blank line between
sentences, "-DOCSTART-" lines skipped.
"""

from __future__ import annotations

import os

import numpy as np

from rnnlab.data.text import CorpusNotFoundError

RULES = ("count", "lag")


def tag_rule(x: np.ndarray, num_tags: int, rule: str, lag: int = 1) -> np.ndarray:
    """Tags [time] of one symbol sequence x [time] under `rule` (see the module docstring)."""
    if rule == "count":
        return (np.cumsum(x == 1) % num_tags).astype(np.int32)
    if rule == "lag":
        tags = np.zeros(len(x), np.int32)
        if lag < len(x):
            tags[lag:] = x[:len(x) - lag] % num_tags
        return tags
    raise ValueError(f"unknown rule {rule!r}; valid choices: {list(RULES)}")


def synthetic_tags(rng: np.random.Generator, num: int, min_length: int, max_length: int,
                   symbols: int, num_tags: int, rule: str, lag: int = 1):
    """`num` random sequences and their tags (lists of int32 arrays)."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    if symbols < 1 or num_tags < 1:
        raise ValueError(f"symbols={symbols} and num_tags={num_tags} must be >= 1")
    lengths = rng.integers(min_length, max_length + 1, num)
    tokens = [rng.integers(1, symbols + 1, n).astype(np.int32) for n in lengths]
    return tokens, [tag_rule(x, num_tags, rule, lag) for x in tokens]


def read_conll(path: str, token_column: int = 0, tag_column: int = -1,
               lowercase: bool = False) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL-style file as (tokens, tags) pairs (see the module docstring)."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise CorpusNotFoundError(f"the tagging file {path} does not exist")
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            if cols[0] == "-DOCSTART-":
                continue
            if len(cols) < 2:
                raise ValueError(f"{path}:{n}: expected a token and a tag separated by a tab "
                                 f"or spaces, got {line.strip()!r}")
            try:
                token, tag = cols[token_column], cols[tag_column]
            except IndexError:
                raise ValueError(f"{path}:{n}: {len(cols)} columns {cols}, but token_column="
                                 f"{token_column} and tag_column={tag_column}") from None
            tokens.append(token.lower() if lowercase else token)
            tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise ValueError(f"{path} holds no sentences")
    return sentences


def tag_index(train_sentences) -> dict[str, int]:
    """Tag name -> id, the sorted tags of the train sentences."""
    return {t: i for i, t in enumerate(sorted({t for _, tags in train_sentences for t in tags}))}


def encode_tags(sentences, index: dict[str, int], split: str) -> list[np.ndarray]:
    """Per-sentence int32 tag arrays; a tag the train split never had is an error naming it."""
    unseen = sorted({t for _, tags in sentences for t in tags} - set(index))
    if unseen:
        raise ValueError(f"tag(s) {unseen[:10]} of the {split} file are not in the train file's "
                         f"tags {sorted(index)}")
    return [np.asarray([index[t] for t in tags], np.int32) for _, tags in sentences]
