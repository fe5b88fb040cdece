"""Static against adapted perplexity of a trained language model (a task "lm" run): dynamic
evaluation (Krause et al. 2018) and the neural cache (Grave et al. 2017).

    python -m experiments.evaluate --workdir=runs/ptb_small --dynamic --cache \
        [--checkpoint=latest|best|STEP] [--splits=valid,test] [--max_tokens=N]

Reads the run like `experiments.generate` (config.json, vocab.json, a checkpoint, read only;
averaged weights for `optim.average` runs) and the corpus its config names (the same
`--config.task.*` data settings it trained with: for PTB the TFDS data already built, or the
files under download_dir). Each split is scored as ONE stream at batch 1, the hidden state
carried from its first token to its last, every token but the first predicted once; `static` is
the trained model as is. --dynamic adds dynamic evaluation, --cache the neural cache (each on
the static model; the math is in `rnnlab.tasks.lm_eval`). Prints a table and writes
DIR/evaluate.json (or --output): per split and method the tokens, mean NLL (nats), perplexity
(word level) or bits per character, and wall time; it is rewritten after each split, with
"complete": false until all splits are done.

Defaults are the published ones: dynamic evaluation as benkrause/dynamic-evaluation (RMS rule,
segments of 5 tokens, lr 5e-5, decay 2e-3, eps 2e-5, gradient statistics on training windows of
100 rows x 5 tokens; --dynamic_stat_batches=0 uses the whole training split, as their script
does); the cache as AWD-LSTM on PTB (lambda 0.1, theta 1.0, window 500). --dynamic_rule=sgd is
plain SGD (theta <- theta - lr g + decay (theta0 - theta)); it has no published default, so it
needs --dynamic_lr. A bad workdir or flag value stops before any work with one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

from absl import flags

from experiments import cli
from experiments.generate import load_run
from rnnlab.config import RunError

SPLITS = {"valid": "validation", "test": "test", "train": "train"}


def define_flags() -> None:
    """The program's flags (defined only when run as a program, as experiments.generate)."""
    flags.DEFINE_string("workdir", None, "Run directory of a trained LM (task 'lm').")
    flags.DEFINE_string("checkpoint", "latest", "latest | best | a step number.")
    flags.DEFINE_bool("dynamic", False, "Add dynamic evaluation (Krause et al. 2018).")
    flags.DEFINE_bool("cache", False, "Add the neural cache (Grave et al. 2017).")
    flags.DEFINE_string("splits", "valid,test", "Comma-separated: valid, test, train.")
    flags.DEFINE_integer("max_tokens", 0, "Score only the first N tokens of each split "
                         "(0 = all).")
    flags.DEFINE_string("output", "", "JSON file to write (default DIR/evaluate.json).")
    flags.DEFINE_string("dynamic_rule", "rms", "rms (Krause et al.) | sgd.")
    flags.DEFINE_float("dynamic_lr", None, "Learning rate eta (rms default 5e-5; sgd: needed).")
    flags.DEFINE_float("dynamic_decay", 2e-3, "Decay lambda towards the trained weights.")
    flags.DEFINE_float("dynamic_eps", 2e-5, "rms: stabiliser eps in g / (MS + eps).")
    flags.DEFINE_integer("dynamic_segment", 5, "Tokens per update (and per statistics window).")
    flags.DEFINE_integer("dynamic_stat_batches", 100, "Training windows for MS (0 = the whole "
                         "training split).")
    flags.DEFINE_integer("dynamic_stat_batch_size", 100, "Rows of the training stream for MS.")
    flags.DEFINE_float("cache_lambda", 0.1, "Cache interpolation weight, in [0, 1).")
    flags.DEFINE_float("cache_theta", 1.0, "Cache attention sharpness theta.")
    flags.DEFINE_integer("cache_window", 500, "Cache size: previous positions attended to.")
    flags.mark_flag_as_required("workdir")


@dataclasses.dataclass(frozen=True)
class Settings:
    checkpoint: str = "latest"
    dynamic: bool = False
    cache: bool = False
    splits: tuple = ("valid", "test")
    max_tokens: int = 0
    dynamic_rule: str = "rms"
    dynamic_lr: float | None = None
    dynamic_decay: float = 2e-3
    dynamic_eps: float = 2e-5
    dynamic_segment: int = 5
    dynamic_stat_batches: int = 100
    dynamic_stat_batch_size: int = 100
    cache_lambda: float = 0.1
    cache_theta: float = 1.0
    cache_window: int = 500


def check_settings(s: Settings) -> Settings:
    """`s` with its defaults filled in; RunError naming the first bad value."""
    bad = [x for x in s.splits if x not in SPLITS]
    if bad or not s.splits or len(set(s.splits)) != len(s.splits):
        raise RunError(f"--splits={','.join(s.splits)!r} is not valid; give distinct names "
                       f"from {list(SPLITS)}, comma-separated")
    if s.max_tokens < 0:
        raise RunError(f"--max_tokens={s.max_tokens} must be >= 0 (0 = whole split)")
    if s.dynamic_rule not in ("rms", "sgd"):
        raise RunError(f"--dynamic_rule={s.dynamic_rule!r} is not valid; use rms or sgd")
    lr = s.dynamic_lr
    if lr is None:
        if s.dynamic and s.dynamic_rule == "sgd":
            raise RunError("--dynamic_rule=sgd has no published default learning rate; give "
                           "--dynamic_lr")
        lr = 5e-5
    checks = [(lr >= 0, f"--dynamic_lr={lr} must be >= 0"),
              (s.dynamic_decay >= 0, f"--dynamic_decay={s.dynamic_decay} must be >= 0"),
              (s.dynamic_eps > 0, f"--dynamic_eps={s.dynamic_eps} must be > 0"),
              (s.dynamic_segment > 0, f"--dynamic_segment={s.dynamic_segment} must be > 0"),
              (s.dynamic_stat_batches >= 0,
               f"--dynamic_stat_batches={s.dynamic_stat_batches} must be >= 0 (0 = all)"),
              (s.dynamic_stat_batch_size > 0,
               f"--dynamic_stat_batch_size={s.dynamic_stat_batch_size} must be > 0"),
              (0 <= s.cache_lambda < 1, f"--cache_lambda={s.cache_lambda} must be in [0, 1)"),
              (math.isfinite(s.cache_theta), f"--cache_theta={s.cache_theta} must be finite"),
              (s.cache_window > 0, f"--cache_window={s.cache_window} must be > 0")]
    for ok, message in checks:
        if not ok:
            raise RunError(message)
    return dataclasses.replace(s, dynamic_lr=lr)


def load_streams(workdir: str, vocab, names) -> dict:
    """{split name: ids [N]} of the corpus the run's config.json names, encoded with its
    vocabulary."""
    import ml_collections

    from rnnlab.tasks.lm import load_corpus
    from rnnlab.config import ConfigError

    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    try:
        corpus = load_corpus(config.task)
        streams = {n: vocab.encode(corpus.split(SPLITS[n])) for n in names}
    except (ConfigError, OSError, ValueError) as e:
        raise RunError(f"cannot read the run's corpus {config.task.corpus!r}: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    short = [n for n, ids in streams.items() if len(ids) < 2]
    if short:
        raise RunError(f"split(s) {short} have fewer than 2 tokens: nothing to predict")
    return streams


def _summary(nll, level: str, seconds: float) -> dict:
    import numpy as np

    loss = float(np.mean(np.asarray(nll, np.float64)))
    key, value = ("perplexity", math.exp(loss)) if level == "word" else ("bpc", loss / math.log(2))
    return {"loss": loss, key: value, "seconds": round(seconds, 2)}


def evaluate_run(workdir: str, settings: Settings, progress=lambda s: None,
                 on_split=lambda result: None) -> dict:
    """Scores the run in `workdir` (module docstring); returns what evaluate.json holds.
    `on_split(result so far)` is called after each split (the CLI saves partial results)."""
    from rnnlab.tasks import lm_eval

    s = check_settings(settings)
    model, params, vocab, step = load_run(workdir, s.checkpoint)
    names = list(s.splits) + (["train"] if s.dynamic and "train" not in s.splits else [])
    streams = load_streams(workdir, vocab, names)
    metric = "perplexity" if vocab.level == "word" else "bpc"
    result = {"workdir": workdir, "checkpoint_step": step, "metric": metric,
              "settings": dataclasses.asdict(s), "complete": False, "splits": {}}
    ms = None
    if s.dynamic and s.dynamic_rule == "rms":
        t0 = time.perf_counter()
        ms = lm_eval.gradient_rms(model, params, streams["train"], s.dynamic_stat_batch_size,
                                  s.dynamic_segment, s.dynamic_stat_batches)
        result["gradient_statistics_seconds"] = round(time.perf_counter() - t0, 2)
        progress(f"gradient statistics: {result['gradient_statistics_seconds']} s")
    for name in s.splits:
        ids = streams[name][: s.max_tokens or None]
        row = {"tokens": len(ids) - 1}
        t0 = time.perf_counter()
        static = lm_eval.stream_pass(model, params, ids)
        row["static"] = _summary(static.nll, vocab.level, time.perf_counter() - t0)
        progress(f"{name} static: {format_value(metric, row['static'][metric])}")
        if s.cache:
            t0 = time.perf_counter()
            nll = lm_eval.cache_nll(static.nll, static.hidden, ids[1:], s.cache_lambda,
                                    s.cache_theta, s.cache_window)
            row["cache"] = _summary(nll, vocab.level, time.perf_counter() - t0)
            progress(f"{name} cache: {format_value(metric, row['cache'][metric])}")
        if s.dynamic:
            t0 = time.perf_counter()

            def report(done, total, name=name, t0=t0, static=static.nll):
                now, before = (_summary([x], vocab.level, 0.0)[metric]
                               for x in (total / done, static[:done].mean(dtype="float64")))
                progress(f"{name} dynamic: {done}/{len(ids) - 1} tokens, {metric} so far "
                         f"{format_value(metric, now)} (static on them "
                         f"{format_value(metric, before)}, {time.perf_counter() - t0:.0f} s)")

            nll, _ = lm_eval.dynamic_eval(model, params, ids, ms, s.dynamic_rule, s.dynamic_lr,
                                          s.dynamic_decay, s.dynamic_eps, s.dynamic_segment,
                                          progress=report)
            row["dynamic"] = _summary(nll, vocab.level, time.perf_counter() - t0)
        result["splits"][name] = row
        if name != s.splits[-1]:
            on_split(result)
    result["complete"] = True
    return result


def format_value(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric == "perplexity" else f"{value:.4f}"


def format_table(result: dict) -> str:
    metric = result["metric"]
    methods = [m for m in ("static", "cache", "dynamic")
               if any(m in r for r in result["splits"].values())]
    lines = [f"checkpoint step {result['checkpoint_step']}, {metric} (one stream, batch 1)",
             f"{'split':<6} {'tokens':>8} " + " ".join(f"{m:>9}" for m in methods)]
    for name, row in result["splits"].items():
        cells = " ".join(f"{format_value(metric, row[m][metric]) if m in row else '-':>9}"
                         for m in methods)
        lines.append(f"{name:<6} {row['tokens']:>8} {cells}")
    return "\n".join(lines)


def write_json(result: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv):
    F = flags.FLAGS
    settings = Settings(
        checkpoint=F.checkpoint, dynamic=F.dynamic, cache=F.cache,
        splits=tuple(x.strip() for x in F.splits.split(",") if x.strip()),
        max_tokens=F.max_tokens, dynamic_rule=F.dynamic_rule, dynamic_lr=F.dynamic_lr,
        dynamic_decay=F.dynamic_decay, dynamic_eps=F.dynamic_eps,
        dynamic_segment=F.dynamic_segment, dynamic_stat_batches=F.dynamic_stat_batches,
        dynamic_stat_batch_size=F.dynamic_stat_batch_size, cache_lambda=F.cache_lambda,
        cache_theta=F.cache_theta, cache_window=F.cache_window)
    output = F.output or os.path.join(F.workdir, "evaluate.json")
    check_settings(settings)
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise RunError(f"--output={output}: its folder does not exist")
    result = evaluate_run(F.workdir, settings,
                          progress=lambda s: print(s, file=sys.stderr, flush=True),
                          on_split=lambda r: write_json(r, output))
    write_json(result, output)
    print(format_table(result))
    print(f"wrote {output}")


if __name__ == "__main__":
    cli.run("evaluate", main, define_flags, log_level="error")
