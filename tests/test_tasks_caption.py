"""rnnlab.tasks.caption and its pieces: the rendered digit strips (glyphs where the caption
says), the captioner's teacher forcing against step-by-step decoding, and a smoke run through
train_and_evaluate with its metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnlab
from rnnlab.data import digits
from rnnlab.data.seq2seq import DIGIT0, EOS, PAD
from rnnlab.models import seq2seq as s2s
from rnnlab.models.captioner import Captioner
from rnnlab.train import ConfigError, train_and_evaluate, validate
from _config_helpers import smoke_config, smoke_eval_records
from test_tasks_seq2seq import random_params


def test_rendered_strips_show_the_captioned_digits():
    """Without noise and shift every cell holds exactly its digit's glyph (times an intensity
    in [0.7, 1]) and the cells after the last digit are blank."""
    images, captions = digits.render_batch(np.random.default_rng(0), 50, 1, 4, noise=0.0,
                                           max_shift=0)
    assert images.shape == (50, 16, 64, 1) and captions.shape == (50, 5)
    top, left = (16 - digits.GLYPH_H) // 2, (16 - digits.GLYPH_W) // 2
    for img, cap in zip(images[..., 0], captions):
        n = int(np.argmax(cap == EOS))
        assert n >= 1 and np.all(cap[n + 1:] == PAD)
        for i in range(4):
            cell = img[:, 16 * i:16 * (i + 1)]
            if i >= n:
                assert not cell.any()
                continue
            glyph = digits.GLYPHS[cap[i] - DIGIT0]
            crop = cell[top:top + digits.GLYPH_H, left:left + digits.GLYPH_W]
            ink = crop[glyph > 0]
            assert 0.7 <= ink.min() and ink.max() <= 1.0 and np.allclose(ink, ink[0])
            assert not crop[glyph == 0].any() and cell.sum() == pytest.approx(crop.sum())
    assert {int((c == EOS).argmax()) for c in captions} == {1, 2, 3, 4}
    noisy, _ = digits.render_batch(np.random.default_rng(0), 50, 1, 4, noise=0.3, max_shift=0)
    assert 0.25 < np.std(noisy - images) < 0.35


def test_captioner_teacher_forcing_equals_step_decoding():
    images, captions = digits.render_batch(np.random.default_rng(1), 3, 1, 2)
    decoder = s2s.Decoder((rnnlab.cells.make("lstm", 8),), 14, 4, "bahdanau", memory_size=4,
                          init_size=6)
    model = Captioner(decoder, conv_features=(3, 4), feature_dim=6)
    inputs = s2s.shift_right(jnp.asarray(captions))
    params = random_params(model, images, inputs)
    assert params["conv_1"]["kernel"].shape == (3, 3, 3, 4)

    @jax.jit
    def both(params):
        logits = model.apply({"params": params}, images, inputs)
        ctx, carry = model.apply({"params": params}, images, method="encode")
        assert ctx.memory.shape == (3, 4 * 8, 4)  # 16 x 32 pixels pooled twice

        def body(c, tok):
            out, c = decoder.step(params["decoder"], ctx, c, tok)
            return c, out
        return logits, jnp.moveaxis(jax.lax.scan(body, carry, inputs.T)[1], 0, 1)

    logits, stepped = both(params)
    np.testing.assert_allclose(logits, stepped, atol=1e-5)


def test_smoke_run_reports_caption_metrics(tmp_path):
    evals = smoke_eval_records("caption", tmp_path)
    for r in evals:
        for key in ("exact_match", "token_accuracy", "tf_accuracy"):
            assert 0.0 <= r[key] <= 1.0
        assert np.isfinite(r["loss"])


def test_config_errors():
    validate(smoke_config("caption"))
    validate(smoke_config("caption", ""))
    with pytest.raises(ValueError, match="unknown variant"):
        smoke_config("caption", "big")
    for key, value in [("model.conv_features", (4, 4, 4, 4, 4)), ("task.min_digits", 0),
                       ("model.attention", "dot")]:
        with pytest.raises(ConfigError):
            validate(smoke_config("caption", **{key: value}))


@pytest.mark.slow
def test_learns_to_read_digits(tmp_path):
    config = smoke_config("caption", "", **{"train.steps": 400, "train.eval_every": 400,
                                            "task.eval_batches": 2, "task.beam_width": 3})
    result = train_and_evaluate(config, str(tmp_path))
    assert result.eval_metrics["token_accuracy"] > 0.5
    assert result.eval_metrics["beam_exact_match"] >= result.eval_metrics["exact_match"] - 0.1


def test_recurrent_probe_is_the_decoders_first_layer():
    """The probe's (cell, params, xs, carry) rerun through `unroll` give the model's logits
    (one layer, no attention: logits = outputs @ w_out + b_out), and diagnostics run on it."""
    from rnnlab.diagnostics import gradient_flow_metrics
    from rnnlab.tasks import make_task

    task = make_task(smoke_config("caption"))
    params = task.init(jax.random.PRNGKey(0))
    batch = task.train_batch(0)
    cell, cell_params, xs, carry = task.recurrent_probe(params, batch)
    outs = rnnlab.unroll(cell, cell_params, xs, carry)[1]
    p = params["decoder"]
    logits = task.model.apply({"params": params}, batch["image"],
                              s2s.shift_right(batch["target"]))
    np.testing.assert_allclose(outs @ p["w_out"] + p["b_out"], logits, atol=1e-5)
    flow = gradient_flow_metrics(cell, cell_params, xs, carry=carry, lags=(1, 2), prefix="")
    assert np.isfinite(flow["rate"]) and flow["grad_norm@1"] > 0
    bahdanau = make_task(smoke_config("caption", **{"model.attention": "bahdanau"}))
    with pytest.raises(ValueError, match="Bahdanau"):
        bahdanau.recurrent_probe(bahdanau.init(jax.random.PRNGKey(0)), batch)
