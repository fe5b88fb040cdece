"""The one helper every entry point of `experiments/` runs through: absl flags defined only when
run as a program, a `--config=FILE.py[:variant]` that fails with one line naming the file, the
variant or the unknown override key, `--debug` for the traceback, and `RunError` (config, data,
workdir, checkpoint problems) printed as one line `PROG: message` with exit status 1.

    def define_flags():                     # the entry point's own flags
        cli.define_config("Experiment config file, ...", default=None)
        flags.DEFINE_string("workdir", None, "Run directory.")

    def main(argv):                         # argv: what is left after the flags
        ...                                 # raise RunError / ConfigError for the user's fixes

    if __name__ == "__main__":
        cli.run("train", main, define_flags)
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags


# glibc malloc settings for XLA:CPU processes (mallopt parameter numbers from <malloc.h>): one
# arena, no mmap below 1 GiB and no trimming below 2 GiB, so the large buffers a step frees
# (XLA's temp buffer, the CPU kernel's saved activations: 64 MB per layer on workload L) are
# reused by the next step instead of being unmapped and faulted in afresh, page by page.
# Measured on the 2-core EPYC (L LSTM training step, CPU kernel, `experiments.benchmarks.speed
# --malloc=system` against the default): 22.6k -> 31.5k tokens/s, as fast as preloading
# tcmalloc; the cost is a resident set that keeps its peak.
MALLOPT = {"M_ARENA_MAX": (-8, 1), "M_MMAP_THRESHOLD": (-3, 1 << 30),
           "M_TRIM_THRESHOLD": (-1, 2**31 - 1)}


def keep_freed_memory() -> str:
    """Applies `MALLOPT` to this process (glibc only; `RNNLAB_MALLOC=system` keeps glibc's
    defaults). Returns what was done: "tuned", "system" or why not ("no glibc")."""
    if os.environ.get("RNNLAB_MALLOC", "tuned") == "system":
        return "system"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "no glibc"
    ok = all(mallopt(param, value) == 1 for param, value in MALLOPT.values())
    return "tuned" if ok else "mallopt refused"


def define_config(help_text: str, default: str | None = None) -> None:
    """--config=FILE.py[:variant] (overrides: --config.a.b=value), and --debug."""
    config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)


def fail(prog: str, message: str, debug: bool = False):
    """Exits with `PROG: message` (the traceback too with --debug)."""
    if debug:
        traceback.print_exc()
    sys.exit(f"{prog}: {message}")


def _load_config(spec: str):
    """The config that `--config=PATH[:variant]` names (to explain a bad override)."""
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_experiment_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def _config_spec(argv) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)


def unknown_override(argv, default: str | None = None) -> str:
    """Names the first --config.a.b override whose key does not exist in the config."""
    spec = _config_spec(argv) or default
    if spec is None:
        return ""
    config = _load_config(spec)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node, path = config, arg[len("--config."):].split("=", 1)[0].split(".")
        for i, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node:
                where = "config." + ".".join(path[:i]) if i else "config"
                valid = sorted(node.keys()) if hasattr(node, "keys") else []
                return (f"bad override {arg}: {where} has no field {key!r}; valid fields: "
                        f"{valid}")
            node = node[key]
    return ""


def config_spec_problem(argv) -> str:
    """Why `--config=PATH[:variant]` cannot be loaded ("" if it can)."""
    spec = _config_spec(argv)
    if spec is None:
        return ""
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        return (f"--config={spec}: no config file {path}; give experiments/configs/<name>.py"
                "[:variant]")
    try:
        _load_config(spec)
    except Exception as e:  # the config file's own error, e.g. an unknown variant
        return f"--config={spec}: {type(e).__name__}: {e}"
    return ""


def flags_parser(prog: str, config_default: str | None = None):
    """An absl `flags_parser` that turns every flag or config problem into one line
    (`config_default`: the --config file used when the flag is not given)."""

    def parse(argv):
        debug = "--debug" in argv
        has_config = "config" in flags.FLAGS
        default = config_default
        problem = (lambda: config_spec_problem(argv)) if has_config else (lambda: "")
        try:
            parsed = flags.FLAGS(argv)
            spec = (flags.FLAGS["config"].config_filename
                    if has_config and flags.FLAGS["config"].present else "")
            if spec and not os.path.isfile(spec.partition(":")[0]):  # ml_collections fails later
                fail(prog, problem(), debug)
            return parsed
        except (AttributeError, KeyError) as e:  # ml_collections: override of a missing key
            fail(prog, problem() or (unknown_override(argv, default) if has_config else "")
                 or str(e), debug)
        except flags.Error as e:
            fail(prog, problem() or str(e), debug)
        except Exception as e:  # the config file failed to load (missing, unknown variant, ...)
            fail(prog, problem() or f"{type(e).__name__}: {e}", debug)

    return parse


def compile_cache() -> str:
    """Turns on JAX's persistent compilation cache in `$RNNLAB_CACHE/xla` (default
    ~/.cache/rnnlab/xla, beside the CPU kernel's builds), so that a resumed run, a rerun and the
    study's worker processes and further seeds (the same programs) load their compiled steps
    instead of compiling them again. Entries are keyed by the program, the XLA flags, the jax
    version and the devices; compiles under JAX's default 1 s are not stored. A directory
    already set (`JAX_COMPILATION_CACHE_DIR`) is kept; `RNNLAB_COMPILE_CACHE=off` turns it off.
    Returns the directory ("" when off)."""
    import jax

    from rnnlab.fused.cpu import cache_dir

    if os.environ.get("RNNLAB_COMPILE_CACHE", "on") == "off":
        return ""
    path = jax.config.jax_compilation_cache_dir
    if not path:
        path = cache_dir("xla")
        jax.config.update("jax_compilation_cache_dir", path)
    return path


def prepare_process() -> None:
    """What every entry point's process (and the study's worker processes) sets up first:
    `keep_freed_memory` and `compile_cache`."""
    keep_freed_memory()
    compile_cache()


def run(prog: str, main, define_flags=None, config_default: str | None = None,
        log_level: str = "warning") -> None:
    """Defines the flags (`define_flags()`, plus --debug), parses them and runs `main(argv)`;
    a `RunError` from `main` is one line `PROG: ...` (ConfigError: `PROG: bad config: ...`),
    extra positional arguments too. absl logging (Orbax logs every save at INFO, read-only
    restores at WARNING) starts at `log_level` unless --verbosity is given. glibc's malloc keeps
    freed memory for reuse and compiled programs are cached on disk (`prepare_process`)."""
    prepare_process()
    if define_flags is not None:
        define_flags()
    if "debug" not in flags.FLAGS:
        flags.DEFINE_bool("debug", False, "On an error, show the full traceback, not one line.")

    def wrapped(argv):
        from rnnlab.config import ConfigError, RunError

        if len(argv) > 1:
            sys.exit(f"{prog}: unexpected arguments {argv[1:]}")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(log_level)
        try:
            return main(argv)
        except ConfigError as e:
            fail(prog, f"bad config: {e}", flags.FLAGS.debug)
        except RunError as e:  # data files, workdir, checkpoints, a diverged run
            fail(prog, str(e), flags.FLAGS.debug)

    app.run(wrapped, flags_parser=flags_parser(prog, config_default))
