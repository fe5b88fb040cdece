"""Conditional generation from an image ("caption", one-to-many): describe a rendered strip of
1..k digits (`rnnlab.data.digits`) by its digit tokens + EOS; a small CNN's features initialise
the recurrent decoder (`rnnlab.models.captioner.Captioner`).

    config = caption_config()
    config.model.cell = "gru"
    result = train_and_evaluate(config, workdir)

Train loss: teacher-forced cross-entropy per caption token. Evaluation decodes greedily inside
the jitted eval step (and by beam search with task.beam_width > 0) and reports the metrics of
`rnnlab.tasks.seq2seq.DecoderTask`: `exact_match` (the whole caption right; the task metric),
`token_accuracy`, `tf_accuracy`, `loss` (and `beam_exact_match`). Data position: train batch
`step` is drawn from `np.random.default_rng([seed, 0, step])`; validation and test are
`eval_batches` fixed batches each.
"""

from __future__ import annotations

import ml_collections

from rnnlab.data import digits
from rnnlab.data.seq2seq import GENERATED_VOCAB
from rnnlab.models.captioner import Captioner
from rnnlab.models.seq2seq import Decoder, shift_right
from rnnlab.tasks.base import register
from rnnlab.tasks.seq2seq import (DecoderTask, GeneratedBatches, check_decoder_fields,
                                  decoder_model_fields, decoder_task_fields)
from rnnlab.config import ConfigError, base_config, check_fields, make_cells


def caption_config() -> ml_collections.ConfigDict:
    """`base_config()` plus every field the caption task reads (each declared here)."""
    c = base_config()
    t = c.task
    t.name = "caption"
    t.min_digits = 1  # fewest digits per image
    t.max_digits = 4  # most digits per image; images are 16 x 16·max_digits pixels
    t.noise = 0.3  # standard deviation of the Gaussian pixel noise (ink is 0.7-1)
    t.max_shift = 2  # each digit moves up to this many pixels from its cell's centre
    t.batch_size = 64  # images per train step (and per eval batch)
    t.eval_batches = 8  # validation batches (and as many test batches)
    t.steps_per_epoch = 1000  # steps per "epoch" (schedules only)
    decoder_task_fields(t)

    m = c.model
    m.hidden = 64  # decoder hidden units (model.cell, model.num_layers layers)
    decoder_model_fields(m)
    m.conv_features = (16, 32)  # channels of the conv + 2x2 max-pool blocks
    m.feature_dim = 64  # image feature vector that initialises the decoder's carry
    return c


def make_model(config) -> Captioner:
    m = config.model
    decoder = Decoder(make_cells(m), len(GENERATED_VOCAB), m.embed_dim, m.attention,
                      memory_size=m.conv_features[-1] if m.conv_features else 0,
                      attention_dim=m.attention_dim, init_size=m.feature_dim)
    return Captioner(decoder, tuple(m.conv_features), m.feature_dim, m.dropout, m.unroll)


class CaptionTask(GeneratedBatches, DecoderTask):
    """Digit strips -> digit tokens (see the module docstring)."""

    input_key = "image"

    @classmethod
    def validate(cls, config) -> None:
        check_fields(config, caption_config(), "caption", "rnnlab.tasks.caption.caption_config()")
        t, m = config.task, config.model
        check_decoder_fields(config)
        if not 1 <= t.min_digits <= t.max_digits:
            raise ConfigError(f"need 1 <= config.task.min_digits <= config.task.max_digits, "
                              f"got {t.min_digits!r} and {t.max_digits!r}")
        if t.noise < 0 or not 0 <= t.max_shift <= 4:
            raise ConfigError(f"config.task.noise={t.noise!r} must be >= 0 and "
                              f"config.task.max_shift={t.max_shift!r} in [0, 4]")
        blocks = len(m.conv_features)
        if not blocks or any(f <= 0 for f in m.conv_features) or m.feature_dim <= 0:
            raise ConfigError(f"config.model.conv_features={tuple(m.conv_features)!r} must be "
                              f"positive channel counts (at least one) and config.model."
                              f"feature_dim={m.feature_dim!r} > 0")
        if digits.CELL % 2 ** blocks:
            raise ConfigError(f"config.model.conv_features has {blocks} blocks; each halves "
                              f"the {digits.CELL}-pixel height, so at most 4 are possible")
        try:
            make_model(config)
        except ValueError as e:
            raise ConfigError(f"config.model: {e}") from None

    def __init__(self, config):
        t = config.task
        self.seed, self.batch_size = config.seed, t.batch_size
        self.num_eval_batches, self.steps_per_epoch = t.eval_batches, t.steps_per_epoch
        self.min_digits, self.max_digits = t.min_digits, t.max_digits
        self.noise, self.max_shift = t.noise, t.max_shift
        self.target_width = t.max_digits + 1
        self._set_decoding(t)
        self.model = make_model(config)

    def recurrent_probe(self, params, batch, carry=None):
        """(cell, cell_params, xs, carry) for `rnnlab.diagnostics`: the decoder's first recurrent
        layer on its teacher-forced inputs (embedded BOS, y_1, ...), starting from the carry the
        image features give it. The model has no `Recurrent` layer the engine could find."""
        decoder = self.model.decoder
        if decoder.attention == "bahdanau":
            raise ValueError("diagnostics: with Bahdanau attention the first decoder layer's "
                             "input depends on its own state, so it is not a fixed sequence xs; "
                             "probe a model with model.attention='none' or a Luong attention")
        _, carry = self.model.apply({"params": params}, batch[self.input_key], method="encode")
        p = params["decoder"]
        xs = p["embedding"][shift_right(batch["target"])]
        return decoder.cells[0], p["rnn"][0], xs, carry[0]

    def _generate(self, rng) -> dict:
        images, captions = digits.render_batch(rng, self.batch_size, self.min_digits,
                                               self.max_digits, self.noise, self.max_shift)
        return {"image": images, "target": captions}


register("caption", CaptionTask)

__all__ = ["CaptionTask", "caption_config", "make_model"]
