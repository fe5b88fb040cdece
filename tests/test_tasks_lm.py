"""rnnlab.tasks.lm: smoke runs of the LM configs, the step -> window mapping (random AWD
lengths included), the carry across windows and its reset per epoch (epochs of different window
counts included), AWD's update scaled by window length / bptt, NT-ASGD in a real run (evaluation,
test and generation on the averaged weights, exact resume after the trigger), exact resume at the
right data position, plain-file corpora and the offline error for a missing corpus."""

from __future__ import annotations

import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab.data.text import CorpusNotFoundError
from rnnlab.data.vocab import VOCAB_FILE, Vocab
from rnnlab.tasks import make_task
from rnnlab.train import ConfigError, train_and_evaluate, validate
from rnnlab.data.lm import generated_corpus
from rnnlab.tasks.lm import LMTask
from rnnlab.train.metrics import read_metrics
from rnnlab.train.steps import train_step
from _config_helpers import leaves, smoke_config


@pytest.mark.parametrize("name, variants", [
    ("ptb_zaremba", ("small", "medium", "large")), ("awd_lstm", ("ptb", "wt2")),
    ("char_shakespeare", ("",)), ("ptb_char", ("cpu", "awd"))])
def test_configs_validate(name, variants):
    for variant in variants:
        config = smoke_config(name, variant)
        validate(config)
    with pytest.raises(ValueError, match="unknown variant"):
        smoke_config(name, "nope")


def test_published_settings():
    small, large = smoke_config("ptb_zaremba", "small"), smoke_config("ptb_zaremba", "large")
    assert small.train.steps == 13 * 2324 and small.task.bptt == 20
    assert small.model.cell_kwargs == "init_scale=0.1,forget_bias=0.0"
    assert small.task.loss_reduction == "sum_time"  # the gradient scale lr 1 was tuned for
    assert large.model.hidden == 1500 and large.optim.clip_value == 10.0
    assert large.optim.decay_after_epochs == 14 and large.optim.decay_factor == 1 / 1.15
    awd = smoke_config("awd_lstm", "ptb")
    assert (awd.model.hidden, awd.model.last_hidden, awd.model.embed_dim) == (1150, 400, 400)
    assert awd.model.tie_weights and awd.task.random_length and awd.optim.lr == 30.0


def _stream_nll(task, params, batches):
    """Mean NLL per token over a stream of windows, the carry crossing them (no engine code)."""
    loss = jax.jit(lambda p, b, c: task.loss(p, b, c, None, False)[1])
    carry, nll, count = None, 0.0, 0.0
    for b in batches:
        carry = task.initial_carry(b["inputs"].shape[0]) if carry is None else carry
        stats, carry = loss(params, b, carry)
        nll, count = nll + float(stats["nll"]), count + float(stats["count"])
    return nll / count


def test_awd_smoke_nt_asgd_evaluates_the_average_and_resumes_exactly(tmp_path):
    """awd_lstm:smoke (lr 30, NT-ASGD with n = 1, validation every step): averaging starts at
    the evaluation the rule picks; validation after it, the test split and generation use the
    averaged weights; a run resumed from a checkpoint taken after the trigger ends bitwise equal
    to the uninterrupted one."""
    from experiments import generate
    from rnnlab.train.optim import find_average_state
    from test_optim import _nt_reference

    config = smoke_config("awd_lstm")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = train_and_evaluate(config, str(ref_dir))
    records = read_metrics(str(ref_dir))
    evals = [r for r in records if r["split"] == "eval"]
    tests = [r for r in records if r["split"] == "test"]
    assert [r["step"] for r in evals] == list(range(1, 9)) and [r["step"] for r in tests] == [8]
    for r in evals + tests:
        assert np.isclose(r["perplexity"], np.exp(r["loss"]), rtol=1e-5)
    fired = _nt_reference([r["loss"] for r in evals], config.optim.nt_asgd_nonmono)
    assert fired is not None and 0 < evals[fired]["step"] <= 6  # before the step-6 checkpoint
    start = evals[fired]["step"]
    assert [r["average_start"] for r in evals] == [-1] * fired + [start] * (8 - fired)
    assert [r["averaged_iterates"] for r in evals] == [s - start + 1 if s > start else 0
                                                      for s in range(1, 9)]
    avg = find_average_state(ref.state.opt_state)
    assert (int(avg.start), int(avg.num)) == (start, 8 - start + 1)

    task = make_task(config)
    test_avg = _stream_nll(task, avg.mean, task.test_batches())
    assert np.isclose(tests[0]["loss"], test_avg, rtol=1e-5)
    assert not np.isclose(_stream_nll(task, ref.state.params, task.test_batches()), test_avg,
                          rtol=1e-4)
    _, sampled_params, _, step = generate.load_run(str(ref_dir))
    assert step == 8
    for a, b in zip(leaves(sampled_params), leaves(avg.mean)):
        np.testing.assert_array_equal(a, b)

    shutil.copytree(ref_dir, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "8")  # as if killed after the step-6 checkpoint
    resumed = train_and_evaluate(config, str(run_dir))
    for a, b in zip(leaves((ref.state.params, ref.state.carry, ref.state.opt_state)),
                    leaves((resumed.state.params, resumed.state.carry, resumed.state.opt_state))):
        np.testing.assert_array_equal(a, b)
    again = read_metrics(str(run_dir))
    assert [r for r in again if r["split"] != "train"] == evals + tests
    assert Vocab.load(os.path.join(ref_dir, VOCAB_FILE)).level == "word"


def test_zaremba_smoke_resumes_at_the_right_data_position(tmp_path):
    """A run restarted from its step-3 checkpoint ends bitwise equal to the uninterrupted run
    (same windows, same carried state), and metrics.jsonl reads as one run."""
    config = smoke_config("ptb_zaremba")
    ref = train_and_evaluate(config, str(tmp_path / "ref"))
    records = read_metrics(str(tmp_path / "ref"))
    assert {r["split"] for r in records} == {"train", "eval", "test"}
    assert all(np.isfinite(r["perplexity"]) for r in records)

    run = tmp_path / "run"
    shutil.copytree(tmp_path / "ref", run)
    shutil.rmtree(run / "checkpoints" / "6")  # as if killed after the step-3 checkpoint
    resumed = train_and_evaluate(config, str(run))
    for a, b in zip(leaves((ref.state.params, ref.state.carry, ref.state.opt_state)),
                    leaves((resumed.state.params, resumed.state.carry, resumed.state.opt_state))):
        np.testing.assert_array_equal(a, b)
    steps = [(r["step"], r["split"]) for r in read_metrics(str(run))]
    assert steps == [(r["step"], r["split"]) for r in records]


@pytest.mark.parametrize("random_length", [False, True])
def test_train_batches_tile_each_epoch_once(random_length):
    config = smoke_config("awd_lstm", **{"task.random_length": random_length,
                                         "task.batch_size": 3, "task.bptt": 40})
    task = make_task(config)
    stream = task.train_stream
    step = 0
    for epoch in range(3):
        targets = []
        for i, pos in enumerate(stream.positions(epoch)):
            b = task.train_batch(step)
            w = stream.window(pos)
            assert task.locate(step) == (epoch, pos)
            np.testing.assert_array_equal(b["inputs"], w.inputs)
            assert bool(b["reset"]) == (i == 0)
            targets.append(b["targets"][:, : w.length])
            assert b["mask"][:, : w.length].all() and not b["mask"][:, w.length:].any()
            step += 1
        np.testing.assert_array_equal(np.concatenate(targets, 1), stream._targets)
    if random_length:  # epochs differ, and a fresh task maps a late step to the same window
        assert stream.positions(0) != stream.positions(1)
        np.testing.assert_array_equal(make_task(config).train_batch(step - 1)["inputs"],
                                      task.train_batch(step - 1)["inputs"])


def test_eval_batches_cover_every_token_once():
    task = make_task(smoke_config("ptb_zaremba"))
    n = sum(int(b["mask"].sum()) for b in task.eval_batches())
    assert n == task.num_tokens["validation"] - 1
    assert sum(int(b["mask"].sum()) for b in task.test_batches()) == task.num_tokens["test"] - 1


@pytest.mark.slow  # ~10 s; the resume test above also checks the carried state bitwise
def test_carry_crosses_windows_and_resets_each_epoch(tmp_path):
    """With a learning rate too small to move the parameters, the carry after `steps` steps is
    one unroll over the windows since the last epoch start."""
    config = smoke_config("ptb_zaremba", **{"task.bptt": 200, "task.batch_size": 3,
                                            "optim.lr": 1e-30, "optim.clip": "none",
                                            "checkpoint.every_steps": 0})
    task = make_task(config)
    spe = task.steps_per_epoch
    assert 3 <= spe <= 20
    config.train.steps = spe + 2
    config.train.eval_every = config.train.steps
    result = train_and_evaluate(config, str(tmp_path), task=task)
    windows = [task.train_stream.window(p) for p in task.train_stream.positions(1)[:2]]
    tokens = jnp.concatenate([w.inputs for w in windows], 1)
    expected = task.model.apply({"params": result.state.params}, tokens, train=False).carry
    for got, want in zip(leaves(result.state.carry), leaves(expected)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum_time"])
def test_loss_reduction(reduction):
    """sum_time (Zaremba et al.'s scale) = summed NLL / rows; mean = NLL per token."""
    task = make_task(smoke_config("ptb_zaremba", **{"task.loss_reduction": reduction}))
    params = task.init(jax.random.PRNGKey(0))
    batch = task.train_batch(0)
    loss, (stats, _) = task.loss(params, batch, None, None, False)
    rows, tokens = batch["inputs"].shape[0], batch["mask"].sum()
    assert float(stats["count"]) == tokens
    want = stats["nll"] / (rows if reduction == "sum_time" else tokens)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(task.metrics(stats)["loss"], stats["nll"] / tokens, rtol=1e-6)


def test_plain_files_corpus(tmp_path):
    corpus = generated_corpus(200, seed=1)
    files = {}
    for split, key in (("train", "train"), ("validation", "valid"), ("test", "test")):
        path = tmp_path / f"{key}.txt"
        path.write_text(corpus.split(split))
        files[f"task.files.{key}"] = str(path)
    task = make_task(smoke_config("ptb_zaremba", **{"task.corpus": "files", **files}))
    assert task.metric == "perplexity" and task.num_tokens["train"] > 500
    with pytest.raises(ConfigError, match="task.files"):
        make_task(smoke_config("ptb_zaremba", **{"task.corpus": "files"}))


def test_char_level_reports_bpc():
    task = make_task(smoke_config("char_shakespeare"))
    assert task.metric == "bpc" and task.vocab.level == "char"
    m = task.metrics({"nll": np.float32(2.0 * np.log(2.0)), "count": np.float32(2.0)})
    assert np.isclose(float(m["bpc"]), 1.0)


def test_resumed_run_with_another_vocabulary_is_an_error(tmp_path):
    task = make_task(smoke_config("ptb_zaremba"))
    Vocab.build("a b c\n", "word").save(str(tmp_path / VOCAB_FILE))
    with pytest.raises(ValueError, match="differs"):
        task.prepare(str(tmp_path))


def test_missing_corpus_offline_names_the_files(tmp_path):
    config = smoke_config("ptb_zaremba", **{"task.corpus": "ptb", "task.download": False,
                                            "task.download_dir": str(tmp_path / "dl"),
                                            "task.data_dir": str(tmp_path / "tfds")})
    with pytest.raises(CorpusNotFoundError, match="ptb.train.txt"):
        LMTask(config)


def test_bad_lm_config_is_a_config_error():
    with pytest.raises(ConfigError, match="task.corpus"):
        validate(smoke_config("ptb_zaremba", **{"task.corpus": "ptbx"}))
    with pytest.raises(ConfigError, match="model.dropout_hidden"):
        validate(smoke_config("awd_lstm", **{"model.dropout_hidden": 1.5}))


def _jit_train_step(task, optimizer):
    import functools

    from rnnlab.train.steps import train_step
    return jax.jit(functools.partial(train_step, task, optimizer))


_NO_DROPOUT = {"model.dropout_output": 0.0, "model.dropout_hidden": 0.0,
               "model.dropout_input": 0.0, "model.dropout_embedding": 0.0,
               "model.weight_drop": 0.0}


def test_random_length_epochs_reset_the_carry_and_scale_the_update():
    """Random window lengths, epochs of different window counts. The carry after step m (a
    multiple of steps_per_epoch that is not an epoch start, where a reset every steps_per_epoch
    steps would fire) is one unroll over the windows since the real epoch start; every SGD
    update is lr * length / bptt times the gradient (AWD-LSTM's lr2 = lr * seq_len / bptt)."""
    from rnnlab.train.optim import make_optimizer
    from rnnlab.train.state import create_state

    lr, bptt = 1e-12, 12  # too small to move the parameters, large enough for update_norm
    config = smoke_config("awd_lstm", **{
        "task.batch_size": 24, "task.bptt": bptt, "optim.lr": lr, "optim.clip": "none",
        "optim.weight_decay": 0.0, "optim.average": "none", "model.dropout_output": 0.0,
        "model.dropout_hidden": 0.0, "model.dropout_input": 0.0,
        "model.dropout_embedding": 0.0, "model.weight_drop": 0.0})
    task = make_task(config)
    spe = task.steps_per_epoch
    counts = [len(task.train_stream.positions(e)) for e in range(3)]
    starts = np.cumsum([0] + counts)
    assert counts[1] != counts[0] and spe == counts[0]
    m = 2 * spe  # not an epoch start since counts[1] != counts[0]
    assert m not in starts and m < starts[-1]
    opt = make_optimizer(config.optim, spe, m + 1)
    state = create_state(task, opt, config.seed)
    step_fn = jax.jit(functools.partial(train_step, task, opt))
    lengths = []
    for step in range(m + 1):
        batch = task.train_batch(step)
        lengths.append(task.train_stream.window(task.locate(step)[1]).length)
        assert float(task.update_scale(batch)) == pytest.approx(lengths[-1] / bptt)
        state, metrics = step_fn(state, batch)
        np.testing.assert_allclose(metrics["update_norm"],
                                   lr * lengths[-1] / bptt * metrics["grad_norm"], rtol=1e-4)
    assert len(set(lengths)) > 2
    epoch_start = int(starts[starts <= m][-1])
    windows = [task.train_stream.window(task.locate(s)[1]) for s in range(epoch_start, m + 1)]
    assert windows[0].reset and not any(w.reset for w in windows[1:])
    tokens = jnp.concatenate([w.inputs[:, : w.length] for w in windows], 1)
    expected = task.model.apply({"params": state.params}, tokens, train=False).carry
    for got, want in zip(leaves(state.carry), leaves(expected)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    fixed = make_task(smoke_config("awd_lstm", **{"task.random_length": False}))
    assert float(fixed.update_scale(fixed.train_batch(0))) == 1.0


def test_lm_training_writes_gradient_flow_records(tmp_path):
    """`diagnostics.every` on an LM config: records at step 0 and every N steps, through the
    BPTT window (lags 0..bptt), and the probe's layer reproduces the model's first layer from
    the carried state (so the measured layer is the one trained)."""
    config = smoke_config("ptb_zaremba", **{"diagnostics.every": 3,
                                            "diagnostics.lags": (0, 1, 5, 1000)})
    task = make_task(config)
    train_and_evaluate(config, str(tmp_path), task=task)
    records = [r for r in read_metrics(str(tmp_path)) if r["split"] == "gradient_flow"]
    assert [r["step"] for r in records] == [0, 3, 6]
    for r in records:
        assert np.isfinite(r["rate"]) and np.isfinite(r["grad_norm@5"])
        assert r["grad_norm@0"] > 0 and "grad_norm@1000" not in r

    from experiments import lm_report
    out = tmp_path / "report"
    summary = lm_report.report(str(tmp_path), str(out), {"paper test": 114.5})
    assert {p.name for p in out.iterdir()} == {"metrics.jsonl", "summary.json",
                                                "valid_perplexity.png", "grad_norm_vs_lag.png"}
    evals = [r["perplexity"] for r in read_metrics(str(tmp_path)) if r["split"] == "eval"]
    assert summary["valid_per_epoch"] == evals and summary["test"] > 1
    curves = lm_report.gradient_flow_curves(read_metrics(str(tmp_path)), max_curves=2)
    assert list(curves) == ["step 0", "step 6"] and curves["step 0"][0] == [0, 1, 5]

    from rnnlab.unroll import unroll
    params = task.init(jax.random.PRNGKey(0))
    batch = task.train_batch(1)
    carry = task.model.apply({"params": params}, task.train_batch(0)["inputs"],
                             train=False).carry
    cell, cell_params, xs, c0 = task.recurrent_probe(params, batch, carry)
    _, ys = unroll(cell, cell_params, xs, c0)
    # the first layer's output, recomputed with the model's own first layer alone
    first = task.model.clone(cells=task.model.cells[:1])
    out = first.apply({"params": {k: v for k, v in params.items() if k != "cell_1"}},
                      batch["inputs"], carry[:1], train=False)
    np.testing.assert_allclose(ys, out.hidden, atol=1e-6 * max(1.0, float(jnp.abs(ys).max())))


# --- document boundaries (task.reset_at) -------------------------------------------------------


def _carry_after_last_document(task, params, batch, carry_in):
    """Reference, row by row with no resets: the model over the row's real tokens from its last
    real reset token on, from zeros (or over all real tokens from carry_in if it has none)."""
    rows = []
    for b in range(batch["inputs"].shape[0]):
        real = batch["inputs"][b][batch["mask"][b]]
        hits = np.flatnonzero(real == task.reset_id)
        start = int(hits[-1]) if hits.size else 0
        c0 = None if hits.size else jax.tree_util.tree_map(lambda a: a[b:b + 1], carry_in)
        out = task.model.apply({"params": params}, jnp.asarray(real[None, start:]), c0)
        rows.append(out.carry)
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *rows)


def test_reset_at_document_boundaries_cuts_the_carry():
    """With task.reset_at = "<eos>" the carry leaving a window depends only on the tokens since
    each row's last "<eos>" (in train and in padded eval windows: padding, id 0 = "<eos>", does
    not count); with the default "" the carry crosses them, as before."""
    task = make_task(smoke_config("ptb_zaremba", **{"task.reset_at": "<eos>", "task.bptt": 12}))
    plain = make_task(smoke_config("ptb_zaremba", **{"task.bptt": 12}))
    assert plain.reset_id is None and task.reset_id == task.vocab.index["<eos>"] == 0
    params = task.init(jax.random.PRNGKey(0))
    loss = jax.jit(lambda t, p, b, c: t.loss(p, b, c, None, False)[1], static_argnums=0)
    # without the epoch-start flag (train window 0 has it), so the carry passed in is used
    batches = [{k: v for k, v in task.train_batch(s).items() if k != "reset"} for s in (0, 1)]
    # a row padded the way the eval streams pad (inputs 0 = "<eos>", mask False)
    last = batches[1]
    keep = np.arange(last["mask"].shape[1]) < np.where(np.arange(len(last["mask"])) == 0, 4,
                                                       last["mask"].shape[1])[:, None]
    batches[1] = {**last, "mask": last["mask"] & keep, "inputs": np.where(keep, last["inputs"], 0),
                  "targets": np.where(keep, last["targets"], 0)}
    for batch in batches:
        rows = batch["inputs"].shape[0]
        carry_in = jax.tree_util.tree_map(
            lambda z: z + 0.5, task.initial_carry(rows))
        assert any((batch["inputs"][b][batch["mask"][b]] == 0).any() for b in range(rows))
        _, got = loss(task, params, batch, carry_in)
        leaves_close = lambda a, b: all(  # noqa: E731
            np.allclose(x, y, atol=2e-5 * max(1.0, np.abs(y).max()))
            for x, y in zip(leaves(a), leaves(b)))
        assert leaves_close(got, _carry_after_last_document(task, params, batch, carry_in))
        _, crossed = loss(plain, params, batch, carry_in)
        assert not leaves_close(crossed, got)


def test_reset_at_must_be_a_vocabulary_token():
    with pytest.raises(ConfigError, match=r"task.reset_at='<bos>' is not a token of the "
                       r"word-level vocabulary .* e.g. '<eos>'"):
        make_task(smoke_config("ptb_zaremba", **{"task.reset_at": "<bos>"}))
