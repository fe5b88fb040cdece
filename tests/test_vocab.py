"""Vocabularies: PTB-style word level (<eos> per line, <unk>), char level, JSON round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rnnlab.data.vocab import VOCAB_FILE, Vocab

PTB_LIKE = " the cat sat \n the <unk> ran \n\n a cat \n"


def test_word_level_ptb_setup():
    v = Vocab.build(PTB_LIKE, "word")
    toks = v.tokenize(PTB_LIKE)
    # Every line (the empty one too) ends with <eos>; PTB's own <unk> is one token.
    assert toks == ["the", "cat", "sat", "<eos>", "the", "<unk>", "ran", "<eos>", "<eos>",
                    "a", "cat", "<eos>"]
    assert v.tokens[:2] == ["<eos>", "<unk>"] and len(v) == 7
    assert v.tokens[2:4] == ["cat", "the"]  # by count, ties by token
    ids = v.encode(PTB_LIKE)
    assert ids.dtype == np.int32 and len(ids) == len(toks)
    assert v.decode(ids) == "the cat sat\nthe <unk> ran\n\na cat\n"
    # Out-of-vocabulary words map to <unk>.
    assert v.decode_tokens(v.encode("the dog\n")) == ["the", "<unk>", "<eos>"]


def test_word_level_max_size():
    v = Vocab.build(PTB_LIKE, "word", max_size=4)
    assert v.tokens == ["<eos>", "<unk>", "cat", "the"]
    assert v.decode_tokens(v.encode("sat\n")) == ["<unk>", "<eos>"]


def test_char_level_round_trip():
    text = "First Citizen:\nBefore we proceed\n"
    v = Vocab.build(text, "char")
    assert v.tokens == sorted(set(text)) and v.unk is None and v.eos is None
    assert v.decode(v.encode(text)) == text
    with pytest.raises(ValueError, match="'Z'"):
        v.encode("Z")
    vu = Vocab.build(text, "char", unk="<unk>")
    assert vu.decode_tokens(vu.encode("Z")) == ["<unk>"]


def test_save_load(tmp_path):
    path = os.path.join(tmp_path, "run", VOCAB_FILE)
    v = Vocab.build(PTB_LIKE, "word")
    v.save(path)
    w = Vocab.load(path)
    assert w == v and w.tokens == v.tokens
    np.testing.assert_array_equal(w.encode(PTB_LIKE), v.encode(PTB_LIKE))
    # load_or_build reuses the saved mapping even when given other text.
    assert Vocab.load_or_build(path, "completely different text\n", "word") == v
    with pytest.raises(ValueError, match="word-level"):
        Vocab.load_or_build(path, "x", "char")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        Vocab.load(os.path.join(tmp_path, "nowhere", VOCAB_FILE))


def test_bad_level_and_ids():
    with pytest.raises(ValueError, match="valid choices"):
        Vocab.build("x", "byte")
    v = Vocab.build("ab", "char")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        v.decode([5])
