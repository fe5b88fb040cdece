"""Samples text from, or scores text with, a trained language model (a task "lm" run).

    python -m experiments.generate --workdir=runs/shakespeare --prompt="ROMEO:" --length=500 \
        --temperature=0.8 [--top_k=20] [--seed=0] [--checkpoint=latest|best|STEP]
    python -m experiments.generate --workdir=runs/ptb_small --score="the company said it expects"

Reads DIR/config.json (the model), DIR/vocab.json (the token mapping the run trained with) and a
checkpoint in DIR/checkpoints, read only (a run still training is safe to sample from): the
newest (`latest`, default), the one with the best validation metric (`best`), or a step. A run
with iterate averaging (`optim.average`, e.g. AWD-LSTM's NT-ASGD) is sampled and scored with the
averaged weights once averaging has started, the weights its validation and test used.

Generation warms the state up on the prompt (word level: the prompt's words after a sentence
start "<eos>"; character level: its characters after a newline), then samples `length` tokens;
the same --seed gives the same text. --score prints, one `key: value` per line, the text's
log-probability (nats and bits; word level: each line ends with "<eos>", as in training), the
token count, perplexity and bits per token; the first token is predicted from the same
sentence-start context.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from experiments import cli
from rnnlab.config import RunError


def define_flags() -> None:
    """The program's flags; defined only when run as a program, so that importing this module
    (tests, notebooks) never collides with another entry point's flags."""
    flags.DEFINE_string("workdir", None, "Run directory of a trained LM (task 'lm').")
    flags.DEFINE_string("prompt", "", "Text the sample continues.")
    flags.DEFINE_integer("length", 200, "Tokens (words or characters) to sample.")
    flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 = greedy.")
    flags.DEFINE_integer("top_k", 0, "Sample among the K most likely tokens (0 = all).")
    flags.DEFINE_integer("seed", 0, "Sampling seed (same seed, same text).")
    flags.DEFINE_string("checkpoint", "latest", "latest | best | a step number.")
    flags.DEFINE_string("score", None, "Score this text instead of sampling.")
    flags.mark_flag_as_required("workdir")


def _pick_step(workdir: str, steps: list[int], which: str, metric: str) -> int:
    if which == "latest":
        return steps[-1]
    if which == "best":
        from rnnlab.train.metrics import read_metrics

        scored = {r["step"]: r[metric] for r in read_metrics(workdir)
                  if r.get("split") == "eval" and r.get("step") in steps and metric in r}
        if not scored:
            raise RunError(f"no checkpoint in {workdir} has a validation {metric!r} in "
                           "metrics.jsonl; use --checkpoint=latest")
        return min(scored, key=scored.get)
    try:
        step = int(which)
    except ValueError:
        raise RunError(f"--checkpoint={which!r} is not valid; use latest, best or one of the "
                       f"saved steps {steps}") from None
    if step not in steps:
        raise RunError(f"there is no checkpoint at step {step}; saved steps: {steps}")
    return step


def load_run(workdir: str, which: str = "latest"):
    """(model, params, vocab, step) of the LM run in `workdir`; RunError if it has none."""
    import ml_collections

    from rnnlab.data.vocab import VOCAB_FILE, Vocab

    if not os.path.isdir(workdir):
        raise RunError(f"workdir {workdir} does not exist")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise RunError(f"{workdir} has no config.json: not a training run directory (train one "
                       "with python -m experiments.train --config=... --workdir=...)")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.task.name != "lm":
        raise RunError(f"{workdir} is a run of task {config.task.name!r}, not a "
                       "language-model run (task 'lm')")
    vocab_path = os.path.join(workdir, VOCAB_FILE)
    if not os.path.exists(vocab_path):
        raise RunError(f"{workdir} has no {VOCAB_FILE}: the vocabulary the run trained with is "
                       "missing (training writes it before the first step)")
    vocab = Vocab.load(vocab_path)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise RunError(f"{workdir} has no checkpoints/ folder: nothing trained to sample from")
    metric = "perplexity" if vocab.level == "word" else "bpc"
    steps = sorted(int(d) for d in os.listdir(ckpt_dir)
                   if d.isdigit() and os.path.isdir(os.path.join(ckpt_dir, d)))
    if not steps:
        raise RunError(f"{ckpt_dir} holds no checkpoint: train (or resume) the run first")
    step = _pick_step(workdir, steps, which, metric)
    import jax

    from rnnlab.tasks.lm import make_model
    from rnnlab.train.checkpoint import read_checkpoint

    # read-only (training may still be writing checkpoints), onto this host's device whatever
    # device mesh wrote it
    restored = read_checkpoint(ckpt_dir, step)
    model = make_model(config, len(vocab))
    params = _evaluated_params(restored)
    expected = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 2), "int32"))["params"])
    shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)  # noqa: E731
    if shapes(expected) != shapes(params):
        raise RunError(f"the checkpoint at step {step} does not match the model in config.json "
                       f"(parameter shapes differ)")
    return model, params, vocab, step


def _evaluated_params(restored: dict):
    """The parameters the run evaluated: the averaged iterate of `optim.average` (the
    `AverageState` in the optimiser state, restored as a dict) once it holds one, else params."""
    from rnnlab.train.optim import AverageState

    fields = set(AverageState._fields)
    stack = [restored.get("opt_state")]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and set(node) == fields:
            return node["mean"] if int(node["num"]) > 0 else restored["params"]
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return restored["params"]


def _context(vocab) -> list[int]:
    """The sentence-start token: "<eos>" (word level), else a newline, else nothing."""
    if vocab.level == "word":
        return [vocab.index[vocab.eos]]
    return [vocab.index["\n"]] if "\n" in vocab.index else []


def _encode_prompt(vocab, prompt: str):
    if vocab.level == "word":
        toks = prompt.split()
        unknown = [t for t in toks if t not in vocab.index]
        return vocab.encode_tokens(toks).tolist(), unknown
    unknown = sorted({ch for ch in prompt if ch not in vocab.index})
    if unknown and vocab.unk is None:
        raise RunError(f"characters {unknown} are not in the run's {len(vocab)}-character "
                       "vocabulary")
    return vocab.encode_tokens(list(prompt)).tolist(), unknown


def sample_text(model, params, vocab, prompt: str, length: int, temperature: float = 1.0,
                top_k: int = 0, seed: int = 0) -> str:
    """The prompt followed by `length` sampled tokens, decoded."""
    import jax

    from rnnlab.models.lm import generate

    ids, _ = _encode_prompt(vocab, prompt)
    context = _context(vocab)
    full = context + ids
    if not full:
        raise RunError("an empty prompt needs a vocabulary with a newline or <eos>")
    new = generate(model, params, full, length, jax.random.PRNGKey(seed), temperature,
                   top_k or None)
    new = [int(i) for i in jax.device_get(new)]
    if vocab.level == "word":
        head = " ".join(vocab.decode_tokens(ids)) if ids else ""
        tail = vocab.decode(new)
        return f"{head} {tail}" if head else tail
    return vocab.decode(ids + new)


def score_text(model, params, vocab, text: str) -> dict:
    """Log-probability of `text` after the sentence-start context (see the module docstring)."""
    import math

    from rnnlab.models.lm import score

    if vocab.level == "word":
        ids = vocab.encode(text).tolist()
        unknown = [t for t in vocab.tokenize(text) if t not in vocab.index]
    else:
        ids, unknown = _encode_prompt(vocab, text)
    full = _context(vocab) + ids
    if len(full) < 2:
        raise RunError("--score needs at least one token to predict")
    res = score(model, params, full)
    log_prob = float(res["log_prob"])
    n = int(res["num_tokens"])
    return {"tokens": n, "log_prob_nats": log_prob, "log_prob_bits": log_prob / math.log(2.0),
            "perplexity": math.exp(-log_prob / n), "bits_per_token": -log_prob / n / math.log(2),
            "unknown_tokens": len(unknown)}


def main(argv):
    F = flags.FLAGS
    for name, value in (("length", F.length), ("temperature", F.temperature),
                        ("top_k", F.top_k)):
        if value < 0:
            raise RunError(f"--{name}={value} must be >= 0")
    model, params, vocab, step = load_run(F.workdir, F.checkpoint)
    if F.score is not None:
        res = score_text(model, params, vocab, F.score)
        print(f"checkpoint_step: {step}")
        for key, value in res.items():
            print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
        return
    _, unknown = _encode_prompt(vocab, F.prompt)
    if unknown:
        print(f"note: {len(unknown)} prompt token(s) not in the vocabulary map to "
              f"{vocab.unk!r}: {unknown[:10]}", file=sys.stderr)
    print(sample_text(model, params, vocab, F.prompt, F.length,
                      F.temperature, F.top_k, F.seed))


if __name__ == "__main__":
    cli.run("generate", main, define_flags, log_level="error")
