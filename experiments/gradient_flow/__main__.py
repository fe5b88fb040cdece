"""`python -m experiments.gradient_flow --workdir=DIR [--config=...:smoke] [--config.k=v ...]`:
runs the study (`run_study`) and prints each finding."""

from __future__ import annotations

import os
import sys

from absl import flags

from experiments import cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                              "gradient_flow.py")


def define_flags() -> None:
    cli.define_config("Study config, experiments/configs/gradient_flow.py[:variant].",
                      DEFAULT_CONFIG)
    flags.DEFINE_string("workdir", None, "Output directory (created).")
    flags.mark_flags_as_required(["workdir"])


def main(argv) -> None:
    from experiments.gradient_flow import check_config, run_study

    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    check_config(config)
    result = run_study(config, workdir, progress=lambda s: print(s, flush=True),
                       command="python -m experiments.gradient_flow " + " ".join(sys.argv[1:]))
    for f in result["findings"]:
        mark = {True: "HOLDS", False: "DOES NOT HOLD", None: "measured"}[f["holds"]]
        print(f"[{mark}] {f['title']}: {f['text']}")
    print(f"wrote {os.path.join(workdir, 'report.md')} in {result['wall_time_s']:.0f} s")


if __name__ == "__main__":
    cli.run("gradient_flow", main, define_flags, config_default=DEFAULT_CONFIG)
