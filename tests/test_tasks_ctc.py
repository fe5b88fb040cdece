"""rnnlab.tasks.ctc and its pieces: optax's CTC loss and the prefix beam search against a
brute-force sum over every alignment, greedy decoding and the edit distance against Python
loops, the generated frames, and a smoke run through train_and_evaluate with its metrics."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab.data import ctc as data
from rnnlab.models import ctc
from rnnlab.train import ConfigError, train_and_evaluate, validate
from _config_helpers import smoke_config, smoke_eval_records


def _collapse(path):
    out, prev = [], None
    for p in path:
        if p != prev and p != ctc.BLANK:
            out.append(int(p))
        prev = p
    return tuple(out)


def _labelling_probs(log_probs):
    """{labelling: p(labelling | x)} by summing every alignment (K^T paths), in float64."""
    lp = np.asarray(log_probs, np.float64)
    probs = {}
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        p = np.exp(sum(lp[t, k] for t, k in enumerate(path)))
        probs[_collapse(path)] = probs.get(_collapse(path), 0.0) + p
    return probs


def test_ctc_loss_and_prefix_beam_search_against_brute_force():
    """Tiny cases: 3 symbols (blank + 2 labels), 4 and 5 frames (the 4-frame rows padded to
    5). optax.ctc_loss is -log of the brute-force sum over alignments for several labellings
    (repeats included); prefix beam search with a beam as wide as the number of prefixes
    returns the most probable labelling, and every beam's score is the brute-force
    log-probability of its prefix."""
    rng = np.random.default_rng(0)
    frames = 5
    logits = rng.normal(size=(6, frames, 3)).astype(np.float32) * 1.5
    labels = np.array([[1, 2, 0], [1, 1, 0], [2, 1, 2]] * 2, np.int32)
    mask = np.arange(frames)[None] < np.array([4, 4, 4, 5, 5, 5])[:, None]

    @jax.jit
    def run(logits, mask, labels):
        log_probs = jax.nn.log_softmax(logits, -1)
        return (log_probs, ctc.ctc_loss(logits, mask, labels, labels != 0),
                ctc.prefix_beam_search(log_probs, mask, beam_width=64),
                ctc.greedy_ctc_decode(logits, mask))

    log_probs, loss, (prefixes, lengths, scores), (greedy, glen) = run(logits, mask, labels)
    log_probs = np.asarray(log_probs)
    for b in range(len(labels)):
        probs = _labelling_probs(log_probs[b, :mask[b].sum()])
        assert sum(probs.values()) == pytest.approx(1.0)
        want = tuple(int(x) for x in labels[b] if x)
        np.testing.assert_allclose(loss[b], -np.log(probs[want]), rtol=1e-4)
        best = max(probs, key=probs.get)
        assert tuple(int(x) for x in prefixes[b, 0, :lengths[b, 0]]) == best
        found = 0
        for k in range(64):
            if np.isfinite(scores[b, k]):
                prefix = tuple(int(x) for x in prefixes[b, k, :lengths[b, k]])
                np.testing.assert_allclose(scores[b, k], np.log(probs[prefix]), rtol=1e-4,
                                           atol=1e-5)
                found += 1
        assert found == len(probs)  # every labelling with p > 0, each once
    # greedy (best path) is not always the best labelling: on these rows it differs once
    assert any(tuple(int(x) for x in greedy[b, :glen[b]])
               != tuple(int(x) for x in prefixes[b, 0, :lengths[b, 0]]) for b in range(6))


def test_greedy_decoding_and_edit_distance_against_python():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 9, 4)) * 3
    mask = np.arange(9)[None] < rng.integers(1, 10, (20, 1))
    tokens, lengths = jax.jit(ctc.greedy_ctc_decode)(jnp.asarray(logits), jnp.asarray(mask))
    for b in range(20):
        want = _collapse(np.argmax(logits[b], -1)[mask[b]])
        assert tuple(int(x) for x in tokens[b, :lengths[b]]) == want
        assert not tokens[b, lengths[b]:].any()

    def levenshtein(a, b):
        d = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, y in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
        return d[-1]

    hyp, ref = rng.integers(1, 4, (30, 7)), rng.integers(1, 4, (30, 5))
    hl, rl = rng.integers(0, 8, 30), rng.integers(0, 6, 30)
    got = jax.jit(ctc.edit_distance)(hyp, hl, ref, rl)
    want = [levenshtein(list(h[:n]), list(r[:m])) for h, n, r, m in zip(hyp, hl, ref, rl)]
    np.testing.assert_array_equal(got, want)


def test_generated_frames_spell_their_labels():
    """Noise-free frames are the prototypes: nearest-prototype per frame, collapsed, gives the
    labels back (equal neighbours are kept apart by at least one silent frame)."""
    protos = data.make_prototypes(5, 6)
    frames, mask, labels = data.generate(np.random.default_rng(0), protos, 200, 1, 6, 1, 3,
                                         max_gap=1, noise=0.0)
    assert frames.shape[1] == data.frames_width(6, 3, 1) and mask.any(1).all()
    dist = ((frames[:, :, None, :] - protos[None, None]) ** 2).sum(-1)
    nearest = np.where(mask, dist.argmin(-1), 0)
    seen_repeat = False
    for b in range(200):
        want = tuple(int(x) for x in labels[b] if x)
        assert _collapse(nearest[b]) == want
        seen_repeat |= any(x == y for x, y in zip(want, want[1:]))
        assert not frames[b, ~mask[b]].any()
    assert seen_repeat


def test_smoke_run_reports_ctc_metrics(tmp_path):
    evals = smoke_eval_records("ctc", tmp_path)
    for r in evals:
        assert r["ler"] >= 0 and 0 <= r["sequence_accuracy"] <= 1
        assert np.isfinite(r["loss"]) and r["loss"] > 0


def test_config_errors():
    validate(smoke_config("ctc"))
    validate(smoke_config("ctc", ""))
    with pytest.raises(ValueError, match="unknown variant"):
        smoke_config("ctc", "big")
    with pytest.raises(ConfigError, match="min_run"):
        validate(smoke_config("ctc", **{"task.min_run": 0}))


@pytest.mark.slow
def test_learns_to_label(tmp_path):
    config = smoke_config("ctc", "", **{"train.steps": 400, "train.eval_every": 400,
                                        "task.eval_batches": 2})
    result = train_and_evaluate(config, str(tmp_path))
    assert result.eval_metrics["ler"] < 0.5
    assert abs(result.eval_metrics["beam_ler"] - result.eval_metrics["ler"]) < 0.1
