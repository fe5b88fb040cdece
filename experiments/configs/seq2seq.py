"""Encoder-decoder seq2seq (many-to-many delayed): reverse, sort or add digit strings, or
translate parallel text files; teacher forcing, greedy and beam-search decoding, optional
Bahdanau/Luong attention. Variant = comma-separated words: a kind (reverse, sort, add, files),
an attention (bahdanau, luong_dot, luong_general; default none), or smoke.

    python -m experiments.train --config=experiments/configs/seq2seq.py:reverse \
        --workdir=runs/s2s_reverse
    python -m experiments.train --config=experiments/configs/seq2seq.py:reverse,bahdanau \
        --workdir=runs/s2s_reverse_att
    python -m experiments.train --config=experiments/configs/seq2seq.py:add,luong_general \
        --workdir=runs/s2s_add
    # parallel text files; demo files (DIR = runs/rev_files): python -c "from
    #   rnnlab.data.seq2seq import write_generated_files as w; w('runs/rev_files', 'reverse',
    #   {'train': 20000, 'valid': 512, 'test': 512}, 1, 10)"
    python -m experiments.train --config=experiments/configs/seq2seq.py:files,luong_general \
        --workdir=runs/s2s_files --config.task.files.train_source=DIR/train.src \
        --config.task.files.train_target=DIR/train.tgt ... (valid_*, test_* likewise)
    # a seconds-long smoke run: seq2seq.py:smoke (also smoke,bahdanau ...)

Metric: `exact_match` (greedy decode equals the target, EOS included) on splits "eval" and
"test"; also `token_accuracy`, `tf_accuracy`, the teacher-forced `loss`, and
`beam_exact_match` with --config.task.beam_width=K.

Measured (shared 2-core CPU, load average ~8; default config: reverse digit strings of length
1-20, 1-layer LSTM 128 encoder and decoder, batch 64, 3,000 steps; 512 validation and 512
test strings):
  reverse            exact match 0.430 @500 steps, 0.602 @1000, 0.953 @3000 (token accuracy
                     0.982); test 0.955; 4 min 27 s wall
  reverse,bahdanau   exact match 0.992 @500, 1.000 from @1000 on; test 1.000; 16 min 57 s wall
                     (a step costs ~1.8x the no-attention step: the attention is a scan)
  files,luong_general  on files written by the demo command above (20,000 reversed strings of
                     length 1-10), --config.train.steps=1000: exact match 1.000 @500 and
                     @1000, test 1.000; 2 min 6 s wall
sort, add and beam search at full size were not measured.
"""

from experiments.configs._common import adam_cosine, train_schedule
from rnnlab.config import ConfigError, parse_variant, smoke_schedule
from rnnlab.models.seq2seq import ATTENTIONS as MODEL_ATTENTIONS
from rnnlab.tasks.seq2seq import KINDS, seq2seq_config

ATTENTIONS = tuple(a for a in MODEL_ATTENTIONS if a != "none")  # variant words: no "none"


def get_config(variant: str = "reverse"):
    words = parse_variant(variant, KINDS + ATTENTIONS + ("smoke",), "seq2seq.py", multiple=True)
    if sum(w in KINDS for w in words) > 1 or sum(w in ATTENTIONS for w in words) > 1:
        raise ConfigError(f"unknown variant {variant!r} of seq2seq.py; valid: comma-separated, "
                          f"at most one kind of {list(KINDS)}, at most one attention of "
                          f"{list(ATTENTIONS)}, and/or 'smoke'")
    c = seq2seq_config()  # strings from length 1; 1-layer LSTM 128 encoder and decoder
    c.task.kind = next((w for w in words if w in KINDS), c.task.kind)
    c.task.max_length = {"sort": 10, "add": 5}.get(c.task.kind, 20)  # longest source (add: most
    # digits per operand)
    c.model.attention = next((w for w in words if w in ATTENTIONS), c.model.attention)
    adam_cosine(c)
    train_schedule(c, 3_000, 500, checkpoint_every=1_000)

    if "smoke" in words:  # seconds: tiny model, short strings, greedy and beam evaluation
        c.task.max_length = 4
        c.task.batch_size = 8
        c.task.eval_batches = 2
        c.task.beam_width = 2
        c.model.embed_dim = 4
        smoke_schedule(c)  # hidden 8; 6 steps, logging every 2, evaluating every 3
    return c
