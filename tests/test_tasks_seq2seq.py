"""rnnlab.tasks.seq2seq and its pieces: beam search against brute-force enumeration on a
hand-built model, greedy decoding against a Python loop, teacher forcing against step-by-step
decoding for every attention, the generated tasks and the parallel-files reader, and a smoke
run through train_and_evaluate with its metrics."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.data import seq2seq as data
from rnnlab.models import decoding
from rnnlab.models import seq2seq as s2s
from rnnlab.tasks import make_task
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.train.metrics import read_metrics
from _config_helpers import smoke_config

# --- decoding on a hand-built model ------------------------------------------------------------
# Tokens: PAD 0, BOS 1, EOS 2, a 3, b 4. The "model" is a table of log-probabilities indexed by
# the whole prefix (state = a code of the tokens fed so far), one table per batch row (context).
V, L = 5, 4
A, B_ = 3, 4
CODES = V ** (L + 1)


def _step(table, code, tok):
    code = (code * V + tok) % CODES
    return table[jnp.arange(tok.shape[0]), code], code


def _code(prefix):
    code = 0
    for tok in (data.BOS,) + tuple(prefix):
        code = (code * V + tok) % CODES
    return code


def _tables(batch, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, CODES, V)) * 2.0
    logits[..., data.EOS] -= 1.5  # longer sequences than EOS at every step
    logits[..., [data.PAD, data.BOS]] = -np.inf
    # row 0 by hand: greedy takes "a" (0.6) but every continuation of "a" is worth < 0.36,
    # while "b <eos>" is 0.4 * 0.9 = 0.36
    hand = {(): [0.6, 0.4, 0.0], (A,): [0.35, 0.35, 0.3], (B_,): [0.05, 0.05, 0.9]}
    for prefix, (pa, pb, pe) in hand.items():
        logits[0, _code(prefix)] = [-np.inf, -np.inf, np.log(pe + 1e-30), np.log(pa),
                                    np.log(pb)]
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1))


def _brute_force(table, alpha):
    """All outputs: EOS-ended of length 1..L, or L tokens without EOS; best score and seq."""
    best = (-math.inf, None)
    for n in range(1, L + 1):
        for seq in itertools.product((data.EOS, A, B_), repeat=n):
            if data.EOS in seq[:-1] or (seq[-1] != data.EOS and n < L):
                continue
            logp = sum(float(table[_code(seq[:i]), tok]) for i, tok in enumerate(seq))
            best = max(best, (logp / ((5 + n) / 6) ** alpha, seq))
    return best


def _strip(row):
    return tuple(int(t) for t in row if t != data.PAD)


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_beam_search_returns_the_brute_force_best(alpha):
    batch = 5
    tables = _tables(batch)
    beam = jax.jit(lambda t: decoding.beam_search(
        _step, t, jnp.zeros((batch,), jnp.int32), L, data.BOS, data.EOS, beam_width=16,
        length_penalty=alpha))
    seqs, scores = beam(jnp.asarray(tables))
    for b in range(batch):
        want_score, want_seq = _brute_force(tables[b], alpha)
        assert _strip(seqs[b, 0]) == want_seq
        np.testing.assert_allclose(scores[b, 0], want_score, rtol=1e-5)
        assert np.all(np.diff(np.asarray(scores[b])) <= 1e-6)  # best first
    assert _strip(seqs[0, 0]) == (B_, data.EOS)  # the hand-built row


def test_greedy_follows_the_argmax_path_and_is_not_optimal():
    batch = 5
    tables = _tables(batch)
    toks, logp, lengths = jax.jit(lambda t: decoding.greedy_decode(
        _step, t, jnp.zeros((batch,), jnp.int32), L, data.BOS, data.EOS))(jnp.asarray(tables))
    for b in range(batch):
        prefix, total = [], 0.0
        while len(prefix) < L and (not prefix or prefix[-1] != data.EOS):
            row = tables[b, _code(prefix)]
            prefix.append(int(np.argmax(row)))
            total += float(row[prefix[-1]])
        assert _strip(toks[b]) == tuple(prefix) and int(lengths[b]) == len(prefix)
        np.testing.assert_allclose(logp[b], total, rtol=1e-5)
    assert _strip(toks[0])[0] == A  # greedy starts with "a" on the hand-built row ...
    assert float(logp[0]) < math.log(0.36) - 0.1  # ... and ends below "b <eos>"
    # a beam of width 1 follows the greedy path but also keeps the EOS endings it passes
    _, scores = decoding.beam_search(_step, jnp.asarray(tables), jnp.zeros((batch,), jnp.int32),
                                     L, data.BOS, data.EOS, beam_width=1)
    assert np.all(np.asarray(scores[:, 0]) >= np.asarray(logp) - 1e-5)


def test_match_stats_against_a_python_loop():
    rng = np.random.default_rng(0)
    target = rng.integers(3, 6, (40, 5))
    pred = np.where(rng.random((40, 5)) < 0.2, 7, target)
    for r in range(40):  # EOS at a random place, padding after it
        n = rng.integers(1, 5)
        target[r, n], target[r, n + 1:] = data.EOS, data.PAD
        pred[r, n:] = target[r, n:] if rng.random() < 0.7 else data.PAD
    target[-1] = data.PAD  # a filler row: left out
    got = decoding.match_stats(jnp.asarray(pred[:, :4]), jnp.asarray(target))
    pred = np.pad(pred[:, :4], ((0, 0), (0, 1)))
    real = target != data.PAD
    rows = real.any(1)
    assert got["sequences"] == rows.sum()
    assert got["exact"] == sum(bool(np.all(p == t)) for p, t, r in zip(pred, target, rows) if r)
    assert got["tokens"] == real.sum() and got["correct"] == ((pred == target) & real).sum()


# --- the model ---------------------------------------------------------------------------------


def random_params(model, *args, seed=0, **kwargs):
    """Parameters of `model.init(key, *args)` filled from numpy (N(0, 0.25)): traced by
    eval_shape, never compiled (every jax.random call is a compile of its own)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype), shapes)


@pytest.mark.parametrize("attention, enc, dec, layers", [
    ("bahdanau", "lstm", "gru", 2), ("luong_general", "lstm", "lstm", 1),
    pytest.param("luong_dot", "gru", "gru", 1, marks=pytest.mark.slow),
    pytest.param("none", "elman", "lstm", 2, marks=pytest.mark.slow)])
def test_teacher_forcing_equals_step_by_step_decoding(attention, enc, dec, layers):
    """The teacher-forced logits (hoisted unroll or scan) equal feeding the same tokens one
    step at a time through `Decoder.step` (the function greedy and beam search call)."""
    source, target = data.generate("reverse", np.random.default_rng(0), 3, 1, 5)
    enc_cells = tuple(rnnlab.cells.make(enc, 6) for _ in range(layers))
    dec_cells = tuple(rnnlab.cells.make(dec, 6) for _ in range(layers))
    bridge = s2s.resolve_bridge("auto", enc_cells, dec_cells)
    assert bridge == ("copy" if enc == dec else "project")
    decoder = s2s.Decoder(dec_cells, 14, 4, attention, memory_size=6,
                          init_size=s2s.bridge_width(enc_cells) if bridge == "project" else 0)
    model = s2s.Seq2Seq(enc_cells, decoder, 14, 4)
    inputs = s2s.shift_right(jnp.asarray(target))

    @jax.jit
    def both(params):
        logits = model.apply({"params": params}, source, inputs)
        ctx, carry = model.apply({"params": params}, source, method="encode")

        def body(c, tok):
            out, c = decoder.step(params["decoder"], ctx, c, tok)
            return c, out
        return logits, jnp.moveaxis(jax.lax.scan(body, carry, inputs.T)[1], 0, 1)

    logits, stepped = both(random_params(model, source, inputs))
    np.testing.assert_allclose(logits, stepped, atol=1e-5)


def test_attention_ignores_padding_and_bridge_errors():
    source = np.array([[4, 5, 0, 0], [4, 5, 6, 7]], np.int32)
    cells = (rnnlab.cells.make("elman", 6),)
    decoder = s2s.Decoder(cells, 14, 4, "bahdanau", memory_size=6)
    model = s2s.Seq2Seq(cells, decoder, 14, 4)
    inputs = jnp.ones((2, 3), jnp.int32)

    @jax.jit
    def weights(params):
        ctx, carry = model.apply({"params": params}, source, method="encode")
        return decoder.attention_weights(params["decoder"], ctx, carry, inputs)

    w = weights(random_params(model, source, inputs))
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert float(jnp.abs(w[0, :, 2:]).max()) < 1e-12
    with pytest.raises(ValueError, match="bridge 'copy' needs"):
        s2s.resolve_bridge("copy", cells, (rnnlab.cells.make("lstm", 6),))
    with pytest.raises(ValueError, match="luong_dot"):
        s2s.Decoder(cells, 14, 4, "luong_dot", memory_size=5)


# --- data --------------------------------------------------------------------------------------


def _text(row):
    return "".join(data.GENERATED_VOCAB.tokens[i] for i in row if i not in (data.PAD,
                                                                            data.EOS))


@pytest.mark.parametrize("kind", data.KINDS)
def test_generated_tasks(kind):
    source, target = data.generate(kind, np.random.default_rng(1), 200, 1, 4)
    assert (source.shape[1], target.shape[1]) == data.widths(kind, 4)
    lengths = set()
    for s, t in zip(source, target):
        assert list(t).count(data.EOS) == 1 and t[(t != data.PAD).sum() - 1] == data.EOS
        src, out = _text(s), _text(t)
        if kind == "reverse":
            assert out == src[::-1]
        elif kind == "sort":
            assert out == "".join(sorted(src))
        else:
            a, b = src.split("+")
            assert int(out) == int(a) + int(b) and (a == "0" or a[0] != "0")
        lengths.add(len(src) if kind != "add" else len(src.split("+")[0]))
    assert lengths == {1, 2, 3, 4}


def test_parallel_files_task(tmp_path):
    paths = data.write_generated_files(str(tmp_path), "reverse",
                                       {"train": 40, "valid": 11, "test": 5}, 1, 6)
    config = smoke_config("seq2seq", "files,bahdanau,smoke")
    for split, (src, tgt) in paths.items():
        config.task.files[f"{split}_source"], config.task.files[f"{split}_target"] = src, tgt
    validate(config)
    task = make_task(config)
    assert task.steps_per_epoch == 40 // config.task.batch_size
    assert task.source_vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert task.target_width == 7 and task.source_width == 6
    batches = task.eval_batches()
    assert [len(b["source"]) for b in batches] == [8, 8]  # 11 pairs: the last batch is filled
    tgt = np.concatenate([b["target"] for b in batches])
    assert (tgt[:, 0] != data.PAD).sum() == 11
    with open(paths["valid"][0]) as f:
        first = f.readline().split()
    assert [task.source_vocab.tokens[i] for i in batches[0]["source"][0] if i] == first
    assert data.decode_target(task.target_vocab, batches[0]["target"][0]) == first[::-1]
    np.testing.assert_array_equal(task.train_batch(7)["source"], task.train_batch(7)["source"])
    task.prepare(str(tmp_path))
    assert (tmp_path / "source_vocab.json").exists()

    config.task.files.test_source = ""
    with pytest.raises(ConfigError, match="test_source"):
        validate(config)


def test_config_errors():
    for variant in ("reverse", "sort,bahdanau", "add,luong_dot", "smoke,luong_general"):
        validate(smoke_config("seq2seq", variant))
    with pytest.raises(ValueError, match="unknown variant"):
        smoke_config("seq2seq", "reverse,sort")
    for key, value, match in [("model.attention", "luong", "attention"),
                              ("task.kind", "copy", "kind"),
                              ("model.bridge", "copy", "bridge 'copy' needs"),
                              ("task.min_length", 0, "min_length")]:
        config = smoke_config("seq2seq", "smoke", **{key: value})
        if key == "model.bridge":
            config.model.decoder_cell = "gru"
        with pytest.raises(ConfigError, match=match):
            validate(config)


# --- training ----------------------------------------------------------------------------------


def test_smoke_run_reports_decoding_metrics(tmp_path):
    config = smoke_config("seq2seq", "smoke")
    result = train_and_evaluate(config, str(tmp_path))
    assert int(result.state.step) == config.train.steps
    records = read_metrics(str(tmp_path))
    evals = [r for r in records if r["split"] in ("eval", "test")]
    assert [(r["step"], r["split"]) for r in evals] == [(3, "eval"), (6, "eval"), (6, "test")]
    for r in evals:
        for key in ("exact_match", "token_accuracy", "tf_accuracy", "beam_exact_match"):
            assert 0.0 <= r[key] <= 1.0
        assert np.isfinite(r["loss"]) and r["loss"] > 0
    train = [r for r in records if r["split"] == "train"]
    assert train and all("exact_match" not in r and 0 <= r["tf_accuracy"] <= 1 for r in train)
    assert (tmp_path / "target_vocab.json").exists()


@pytest.mark.slow
def test_learns_to_reverse(tmp_path):
    """300 steps of the full-size reverse config (lengths 1-10) decode most strings exactly."""
    config = smoke_config("seq2seq", "reverse", **{"train.steps": 300, "train.eval_every": 300,
                                                   "task.beam_width": 3, "task.max_length": 10,
                                                   "task.eval_batches": 2})
    result = train_and_evaluate(config, str(tmp_path))
    assert result.eval_metrics["exact_match"] > 0.4
    assert result.eval_metrics["beam_exact_match"] >= result.eval_metrics["exact_match"] - 0.05


@pytest.mark.slow
def test_files_smoke_run(tmp_path):
    paths = data.write_generated_files(str(tmp_path / "data"), "sort",
                                       {"train": 64, "valid": 10, "test": 10}, 1, 5)
    overrides = {f"task.files.{s}_{side}": p for s, pair in paths.items()
                 for side, p in zip(("source", "target"), pair)}
    config = smoke_config("seq2seq", "files,luong_general,smoke", **overrides)
    train_and_evaluate(config, str(tmp_path / "run"))
    tests = [r for r in read_metrics(str(tmp_path / "run")) if r["split"] == "test"]
    assert len(tests) == 1 and 0.0 <= tests[0]["exact_match"] <= 1.0
