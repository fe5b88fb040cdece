"""LM batching: windows tile the stream once, evaluation covers every token once, random
window lengths are deterministic, positions resume exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab.data.lm import LMStream, batchify


def covered(stream, epoch=0):
    """Every (row, input, target) triple the windows of one epoch deliver, in order per row."""
    rows = [[] for _ in range(stream.batch)]
    for b in stream.epoch_windows(epoch):
        assert b.inputs.shape == b.targets.shape == b.mask.shape
        for r in range(stream.batch):
            m = b.mask[r]
            rows[r].extend(zip(b.inputs[r][m].tolist(), b.targets[r][m].tolist()))
    return rows


def test_batchify_drops_tail():
    ids = np.arange(23)
    rows = batchify(ids, 4)
    assert rows.shape == (4, 5)
    np.testing.assert_array_equal(rows.reshape(-1), np.arange(20))
    with pytest.raises(ValueError, match="too short"):
        batchify(np.arange(3), 4)


@pytest.mark.parametrize("bptt", [1, 3, 4, 7, 100])
def test_train_windows_tile_stream_once(bptt):
    ids = np.arange(103)
    s = LMStream(ids, batch=4, bptt=bptt)
    rows = batchify(ids, 4)
    got = covered(s)
    for r in range(4):
        want = list(zip(rows[r, :-1].tolist(), rows[r, 1:].tolist()))
        assert got[r] == want  # contiguous, in order, each pair once
    positions = s.positions(0)
    assert positions[0] == 0 and s.window(positions[-1]).next_position == s.span
    assert [s.window(p).reset for p in positions] == [True] + [False] * (len(positions) - 1)
    # Fixed shapes: every window is padded to bptt columns (the last one masked).
    assert {s.window(p).inputs.shape for p in positions} == {(4, bptt)}


def test_eval_covers_every_token_once():
    ids = np.random.default_rng(0).integers(0, 50, 101)
    for batch in (1, 3, 7, 10):
        s = LMStream(ids, batch=batch, bptt=6, train=False)
        pairs = [p for row in covered(s) for p in row]
        assert pairs == list(zip(ids[:-1].tolist(), ids[1:].tolist()))
        assert s.num_targets == len(ids) - 1
        assert sum(int(b.mask.sum()) for b in s) == len(ids) - 1


def test_random_length_deterministic_and_resumable():
    ids = np.arange(5000)
    kw = dict(batch=5, bptt=20, random_length=True, seed=3)
    a, b = LMStream(ids, **kw), LMStream(ids, **kw)
    lengths = [a.window(p).length for p in a.positions(0)]
    assert len(set(lengths)) > 3 and min(lengths) >= 5  # varied, AWD's minimum of 5
    assert lengths == [b.window(p).length for p in b.positions(0)]
    assert a.positions(1) != [p + a.span for p in a.positions(0)]  # epochs differ
    assert LMStream(ids, **{**kw, "seed": 4}).positions(0) != a.positions(0)
    # Windows still tile each epoch exactly once.
    rows = batchify(ids, 5)
    assert covered(a, epoch=1)[2] == list(zip(rows[2, :-1].tolist(), rows[2, 1:].tolist()))
    # Resuming from a saved integer position continues the identical sequence of windows.
    pos = a.positions(1)[7]
    resumed = b.window(pos)
    np.testing.assert_array_equal(resumed.inputs, a.window(pos).inputs)
    assert resumed.epoch == 1 and not resumed.reset
    widths = {a.window(p).inputs.shape[1] for p in a.positions(0)}
    assert widths == {a.max_length}  # one shape for jit


def test_random_length_distribution():
    s = LMStream(np.arange(200_000), batch=1, bptt=70, random_length=True, seed=0)
    lengths = np.array([s.window_length(p) for p in range(0, 100_000, 37)])
    assert abs(np.mean(lengths > 50) - 0.95) < 0.02  # ~5% of windows use bptt / 2
    full = lengths[lengths > 50]
    assert abs(full.mean() - 69.5) < 0.5 and abs(full.std() - 5) < 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="bptt"):
        LMStream(np.arange(10), batch=2, bptt=0)
    with pytest.raises(ValueError, match="pad_to"):
        LMStream(np.arange(100), batch=2, bptt=10, pad_to=5)


@pytest.mark.parametrize("train", [True, False])
def test_masks_pad_only_at_the_end_of_rows(train):
    """The LM task hands the model per-row lengths instead of the mask (the cuDNN path's
    form), which is only the same when every row's mask is a prefix of True values."""
    ids = np.random.default_rng(0).integers(0, 50, 997)
    s = LMStream(ids, batch=8, bptt=7, train=train, random_length=train, seed=1)
    for epoch in range(2 if train else 1):
        for pos in s.positions(epoch):
            m = s.window(pos).mask
            lengths = m.sum(-1)
            np.testing.assert_array_equal(m, np.arange(m.shape[1])[None] < lengths[:, None])
