"""Token vocabularies for language models: character and word level, saved as JSON with a run.

    vocab = Vocab.build(corpus.train, level="word")           # ids from the train split only
    ids = vocab.encode(corpus.validation)                     # np.int32 [num_tokens]
    text = vocab.decode(ids)
    vocab.save(os.path.join(workdir, VOCAB_FILE)); Vocab.load(...)

Levels:
  "word"  the standard PTB setup (Mikolov; Zaremba et al. 2014; Merity et al. 2017): every line
          is split on whitespace and ends with "<eos>"; words outside the vocabulary become
          "<unk>" (PTB already contains "<unk>"). An empty line is just "<eos>". Character-level
          PTB (tokens are characters separated by spaces) is tokenised this way too.
  "char"  every character is a token, newlines included; no "<eos>" is added. A character
          unseen in the train split maps to "<unk>" when the vocabulary has one (the default
          for level "char" is none, as in char-rnn: 65 symbols for tiny_shakespeare) and is an
          error otherwise.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath  # run files may live in gs:// workdirs

LEVELS = ("char", "word")
VOCAB_FILE = "vocab.json"
_FORMAT = 1


def _word_tokens(text: str, eos: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]  # the text ends with a newline: no extra empty line after it
    out: list[str] = []
    for line in lines:
        out.extend(line.split())
        out.append(eos)
    return out


class Vocab:
    """An id <-> token mapping. Word level: ids 0 and 1 are "<eos>" and "<unk>", the rest are
    sorted by descending train count (ties by token); char level: the sorted characters (then
    "<unk>" if requested)."""

    def __init__(self, tokens: Sequence[str], level: str, unk: str | None = None,
                 eos: str | None = None):
        if level not in LEVELS:
            raise ValueError(f"unknown vocabulary level {level!r}; valid choices: {list(LEVELS)}")
        if level == "word" and eos is None:
            raise ValueError("a word-level vocabulary needs an eos token")
        self.tokens = list(tokens)
        self.level = level
        self.unk = unk
        self.eos = eos
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = [t for t, c in collections.Counter(self.tokens).items() if c > 1]
            raise ValueError(f"duplicate tokens in vocabulary: {dup[:10]}")
        for special in (unk, eos):
            if special is not None and special not in self.index:
                raise ValueError(f"special token {special!r} is not in the vocabulary")

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def build(cls, text: str, level: str, max_size: int | None = None, min_count: int = 1,
              unk: str | None = None, eos: str = "<eos>") -> Vocab:
        """Builds the vocabulary of `text` (the train split).

        Word level keeps at most `max_size` tokens (specials included) seen at least
        `min_count` times; everything else maps to `unk` (default "<unk>"). Char level keeps
        every character of `text`; pass `unk="<unk>"` to map unseen characters to an extra
        token instead of raising.
        """
        if level not in LEVELS:
            raise ValueError(f"unknown vocabulary level {level!r}; valid choices: {list(LEVELS)}")
        if level == "char":
            chars = sorted(set(text) - {unk})
            return cls(chars + ([unk] if unk is not None else []), "char", unk=unk)
        unk = "<unk>" if unk is None else unk
        counts = collections.Counter(_word_tokens(text, eos))
        specials = [eos, unk]
        rest = sorted((t for t, c in counts.items() if c >= min_count and t not in specials),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            if max_size < len(specials):
                raise ValueError(f"max_size must be at least {len(specials)}, got {max_size}")
            rest = rest[: max_size - len(specials)]
        return cls(specials + rest, "word", unk=unk, eos=eos)

    # --- mapping --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else _word_tokens(text, self.eos)

    def encode_tokens(self, tokens: Iterable[str]) -> np.ndarray:
        index, unk_id = self.index, self.index.get(self.unk) if self.unk is not None else None
        ids = []
        for t in tokens:
            i = index.get(t, unk_id)
            if i is None:
                raise ValueError(f"token {t!r} is not in the {self.level}-level vocabulary of "
                                 f"{len(self)} tokens and the vocabulary has no unk token; "
                                 "build it with unk='<unk>' or from text that contains it")
            ids.append(i)
        return np.asarray(ids, np.int32)

    def encode(self, text: str) -> np.ndarray:
        """text -> int32 ids [num_tokens] (word level: one "<eos>" per line)."""
        if self.level == "char" and self.unk is None:
            # fast path: numpy lookup over code points
            try:
                return np.fromiter((self.index[c] for c in text), np.int32, len(text))
            except KeyError as e:
                raise ValueError(
                    f"character {e.args[0]!r} is not in the char-level vocabulary of {len(self)} "
                    "characters; build it with unk='<unk>' to map unseen characters") from None
        return self.encode_tokens(self.tokenize(text))

    def decode_tokens(self, ids) -> list[str]:
        ids = np.asarray(ids).reshape(-1)
        bad = ids[(ids < 0) | (ids >= len(self))]
        if bad.size:
            raise ValueError(f"id {int(bad[0])} is outside the vocabulary [0, {len(self)})")
        return [self.tokens[i] for i in ids.tolist()]

    def decode(self, ids) -> str:
        """ids -> text. Word level: tokens joined by spaces, "<eos>" becomes a newline."""
        toks = self.decode_tokens(ids)
        if self.level == "char":
            return "".join(toks)
        out, line = [], []
        for t in toks:
            if t == self.eos:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(t)
        if line:
            out.append(" ".join(line))
        return "".join(out)

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "level": self.level, "unk": self.unk, "eos": self.eos,
                "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if d.get("format") != _FORMAT:
            raise ValueError(f"unsupported vocabulary format {d.get('format')!r}; "
                             f"expected {_FORMAT}")
        return cls(d["tokens"], d["level"], unk=d["unk"], eos=d["eos"])

    def save(self, path: str) -> None:
        """Writes the vocabulary as JSON (atomically, so a reader never sees half a file)."""
        path = epath.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str) -> Vocab:
        if not epath.Path(path).exists():
            raise FileNotFoundError(f"no vocabulary at {path}; it is written by training "
                                    f"(Vocab.save) into the run's workdir as {VOCAB_FILE}")
        return cls.from_dict(json.loads(epath.Path(path).read_text(encoding="utf-8")))

    @classmethod
    def load_or_build(cls, path: str, text: str, level: str, **build_kwargs) -> Vocab:
        """The vocabulary saved at `path` if there is one (a resumed run, evaluation,
        generation), else one built from `text` and saved there."""
        if epath.Path(path).exists():
            vocab = cls.load(path)
            if vocab.level != level:
                raise ValueError(f"the vocabulary at {path} is {vocab.level}-level, but "
                                 f"level={level!r} was asked for")
            return vocab
        vocab = cls.build(text, level, **build_kwargs)
        vocab.save(path)
        return vocab

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)}, unk={self.unk!r}, eos={self.eos!r})"

