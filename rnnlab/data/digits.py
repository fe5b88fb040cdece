"""Rendered digit strips for conditional generation (the image-captioning shape): an image of
1..k digits drawn from a fixed 5x7 bitmap font, shifted and noised; its caption is the digits'
tokens followed by EOS.

    images, captions = render_batch(rng, batch_size=64, min_digits=1, max_digits=4)
    # images [64, 16, 64, 1] float32 in about [0, 1]; captions [64, 5] int32 (ids of
    # rnnlab.data.seq2seq.GENERATED_VOCAB: digits, EOS, then PAD)

Each digit occupies one 16x16 cell from the left: its glyph is scaled 2x (10x14 pixels) and
placed at a random offset of up to `max_shift` pixels around the cell's centre (so neighbours
may touch), with a random intensity in [0.7, 1]; then Gaussian noise of standard deviation
`noise` is added to every pixel, blank cells included. The image is 16 x 16·max_digits.
"""

from __future__ import annotations

import numpy as np

from rnnlab.data.seq2seq import DIGIT0, EOS, PAD

CELL = 16  # pixels per digit cell (height and width)
SCALE = 2  # glyph pixels per font pixel

# 5 columns x 7 rows per digit, "#" = ink
FONT = {
    0: (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    1: ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    2: (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    3: ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    4: ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    5: ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    6: ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    7: ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    8: (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    9: (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
}
GLYPHS = np.stack([np.kron(np.array([[ch == "#" for ch in row] for row in FONT[d]], np.float32),
                           np.ones((SCALE, SCALE), np.float32)) for d in range(10)])  # [10,14,10]
GLYPH_H, GLYPH_W = GLYPHS.shape[1:]


def image_shape(max_digits: int) -> tuple[int, int, int]:
    """(height, width, channels) of the images for at most `max_digits` digits."""
    return CELL, CELL * max_digits, 1


def render(digits, rng: np.random.Generator, max_digits: int, noise: float = 0.2,
           max_shift: int = 2) -> np.ndarray:
    """One image [16, 16·max_digits, 1] of `digits` (a sequence of ints 0..9)."""
    if not 1 <= len(digits) <= max_digits:
        raise ValueError(f"need 1..{max_digits} digits, got {list(digits)}")
    if not 0 <= max_shift <= (CELL - GLYPH_W) // 2 + 1:
        raise ValueError(f"max_shift must be in [0, {(CELL - GLYPH_W) // 2 + 1}], "
                         f"got {max_shift!r}")
    img = np.zeros((CELL, CELL * max_digits), np.float32)
    top0, left0 = (CELL - GLYPH_H) // 2, (CELL - GLYPH_W) // 2
    for i, d in enumerate(digits):
        dy, dx = rng.integers(-max_shift, max_shift + 1, 2)
        top = int(np.clip(top0 + dy, 0, CELL - GLYPH_H))
        left = int(np.clip(i * CELL + left0 + dx, 0, CELL * max_digits - GLYPH_W))
        patch = img[top:top + GLYPH_H, left:left + GLYPH_W]
        np.maximum(patch, GLYPHS[int(d)] * rng.uniform(0.7, 1.0), out=patch)
    img += noise * rng.standard_normal(img.shape).astype(np.float32)
    return img[..., None]


def render_batch(rng: np.random.Generator, batch_size: int, min_digits: int, max_digits: int,
                 noise: float = 0.2, max_shift: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random digit strips and their captions.

    The number of digits is uniform in [min_digits, max_digits], each digit uniform in 0..9.
    Returns (images [batch, 16, 16·max_digits, 1] float32, captions [batch, max_digits + 1]
    int32: token ids DIGIT0 + d, then EOS, then PAD).
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits!r}, "
                         f"{max_digits!r}")
    images = np.zeros((batch_size, *image_shape(max_digits)), np.float32)
    captions = np.full((batch_size, max_digits + 1), PAD, np.int32)
    for b in range(batch_size):
        digits = rng.integers(0, 10, int(rng.integers(min_digits, max_digits + 1)))
        images[b] = render(digits, rng, max_digits, noise, max_shift)
        captions[b, :len(digits)] = DIGIT0 + digits
        captions[b, len(digits)] = EOS
    return images, captions


__all__ = ["CELL", "FONT", "GLYPHS", "image_shape", "render", "render_batch"]
