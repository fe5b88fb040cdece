"""Task families: each module holds one family's defaults (`*_config()`), validation, objective,
metrics and model factory, on top of the `Task` protocol (`rnnlab.tasks.base`) and the data
pipelines of `rnnlab.data`.

Modules: `synthetic` (adding, copy, temporal_order), `lm` (language models; `lm_eval`: dynamic
evaluation and the neural cache), `classify` (many-to-one, IMDB), `tagging` (many-to-many),
`forecast` (time series), `padded` (shared base for padded-batch tasks), `seq2seq`
(encoder-decoder), `caption` (one-to-many), `ctc` (alignment-free labelling). The synthetic
tasks are the reference implementation. A new task family is one module here (registered with
`register`, imported below) and one config file in `experiments/configs/` (README: "Adding a
task family").
"""

from __future__ import annotations

from rnnlab.tasks.base import TASKS, Task, dropout_rngs, make_task, register

__all__ = ["TASKS", "Task", "dropout_rngs", "make_task", "register"]

# Each module below registers its task families on import.
from rnnlab.tasks import caption, classify, ctc, forecast, lm, seq2seq, synthetic, tagging  # noqa: E402,F401
