"""Making digits that were not drawn like MNIST's look like MNIST's: resolution, pen, slant.

Not a stage and no params; ``pipeline.serve.images`` runs these between
finding the digit's box and fitting it into 20x20 (docs/serving.md). Fitting
the box alone (as before issue 25) keeps whatever the picture's maker did: a
marker's strokes stay twice as thick as most MNIST writers', a hairline
becomes a faint grey trace, a small digit enlarged with square pixels keeps
its stair steps, a slanted one its slant. The models saw none of those. Each
step (5a-5d in docs/serving.md) works on the digit's box resampled to ``WORK``
pixels on its longer side (4x MNIST's 20), where one pixel of erosion is a
quarter of one of MNIST's:

1. ``unblock`` (low resolution): a picture enlarged with square pixels
   (nearest neighbour: every edge falls on one column and row in ``k``) is
   first reduced by ``k``, so that the next step enlarges it smoothly;
2. ``to_work``: the box resampled to ``WORK`` px, bicubic when enlarging
   (smooth, no square pixels), area-averaging when reducing (a hairline keeps
   its ink as grey), then levels stretched again so the brightest pixel is 255;
3. ``stroke_width`` / ``normalise_strokes``: the pen's width, measured as
   2 x ink / outline length (the outline is the sum of the gradient's norm, the
   same for any stroke direction), in pixels of the 20-pixel box; outside
   MNIST's 10th-90th percentile (``MNIST_WIDTH``, measured below) the strokes
   are eroded or dilated (3x3 square and cross in turn, an octagon) one pixel
   at a time until they are inside it (erosion stops before it would take
   half the ink: thin joins of a thick digit must not vanish);
4. ``deskew`` (optional, off by default): the slant from the image's second
   moments (x shift per row, ``mu11 / mu02``) sheared away about the centre
   of mass, the classic deskewing of MNIST work. The models trained on MNIST as
   it is, slant included, so it is off unless asked for (``--deskew``), though
   it helped them on reports/pictures.md's set without deskewed training data.

``MNIST_WIDTH``: ``stroke_width`` of the first 5,000 MNIST training digits
after step 2 (their box to ``WORK``): percentiles 10 / 50 / 90 = 1.83 / 2.39
/ 3.24 pixels of the 20-pixel box (``python -m pipeline.serve.normalise
--mnist DIR`` prints them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BOX = 20
WORK = 4 * BOX                 # working resolution: the longer side of the digit's box
MNIST_WIDTH = (1.83, 3.24)     # MNIST's pen width, 10th and 90th percentile, in box pixels
MAX_MORPH_STEPS = 16           # erosions or dilations at most (4 box pixels of width)
BLOCK_SHARE = 0.7              # share of the edges on one column in k: square pixels of k


def _edge_share(a: np.ndarray, k: int, axis: int) -> float:
    """Share of the edge energy along ``axis`` that falls on one column (row) in ``k``."""
    energy = np.abs(np.diff(a, axis=axis)).sum(axis=1 - axis)
    if energy.sum() == 0 or len(energy) < 2 * k:
        return 0.0
    by_phase = [energy[r::k].sum() for r in range(k)]
    return max(by_phase) / energy.sum()


def block_size(a: np.ndarray, largest: int = 10) -> int:
    """The side of the square pixels a picture was enlarged with (1 = none found)."""
    a = a.astype(np.float32)
    for k in range(largest, 1, -1):
        if min(_edge_share(a, k, 0), _edge_share(a, k, 1)) >= BLOCK_SHARE:
            return k
    return 1


def unblock(crop: np.ndarray) -> np.ndarray:
    """Step 1: a crop enlarged with square pixels of side k, reduced by k (means of blocks)."""
    k = block_size(crop)
    if k == 1:
        return crop
    a = crop.astype(np.float32)
    front = []
    for axis in (0, 1):  # the crop may start mid-block: pad so that blocks start at 0
        energy = np.abs(np.diff(a, axis=axis)).sum(axis=1 - axis)
        phase = int(np.argmax([energy[r::k].sum() for r in range(k)]))  # edge after pixel phase
        front.append((k - (phase + 1) % k) % k)
    a = np.pad(a, ((front[0], 0), (front[1], 0)))
    a = np.pad(a, ((0, -a.shape[0] % k), (0, -a.shape[1] % k)))
    h, w = a.shape
    return a.reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def to_work(crop: np.ndarray) -> np.ndarray:
    """Step 2: the box at ``WORK`` px on its longer side, brightest pixel 255."""
    from PIL import Image

    ch, cw = crop.shape
    scale = WORK / max(ch, cw)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
    how = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX
    work = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, how))
    work = np.clip(work, 0, 255)  # bicubic overshoots at edges
    return work * (255.0 / max(float(work.max()), 1e-6))


def stroke_width(work: np.ndarray) -> float:
    """Step 3's measure: the pen's width in pixels of the 20-pixel box (2 x area / outline)."""
    ink = np.pad(np.clip(work / 255.0, 0, 1), 2)
    gy, gx = np.gradient(ink)
    outline = float(np.hypot(gx, gy).sum())
    return 2 * float(ink.sum()) / max(outline, 1e-6) * BOX / max(work.shape)


def _morph(a: np.ndarray, grow: bool, cross: bool) -> np.ndarray:
    """One grey dilation (grow) or erosion by a 3x3 square or a cross."""
    pick = np.maximum if grow else np.minimum
    p = np.pad(a, 1)
    h, w = a.shape
    out = a.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy or dx) and not (cross and dy and dx):
                out = pick(out, p[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w])
    return out


def normalise_strokes(work: np.ndarray, band: tuple[float, float] = MNIST_WIDTH) -> np.ndarray:
    """Step 3: erode or dilate until the pen's width is inside ``band`` (box pixels)."""
    width = stroke_width(work)
    grow = width < band[0]
    if band[0] <= width <= band[1]:
        return work
    mass = work.sum()
    out = np.pad(work, MAX_MORPH_STEPS) if grow else work
    for step in range(MAX_MORPH_STEPS):
        nxt = _morph(out, grow, cross=step % 2 == 1)
        if not grow and nxt.sum() < 0.5 * mass:  # eroding further would erase the digit
            break
        out = nxt
        width = stroke_width(out) * max(out.shape) / max(work.shape)  # same box as the input
        if (width >= band[0]) if grow else (width <= band[1]):
            break
    return out


def deskew(work: np.ndarray) -> np.ndarray:
    """Step 4: shear the slant away (x -= mu11 / mu02 * (y - cy)), about the centre of mass."""
    from PIL import Image

    mass = work.sum()
    ys, xs = np.indices(work.shape)
    cy, cx = (ys * work).sum() / mass, (xs * work).sum() / mass
    mu02 = ((ys - cy) ** 2 * work).sum() / mass
    mu11 = ((ys - cy) * (xs - cx) * work).sum() / mass
    alpha = mu11 / mu02 if mu02 > 0 else 0.0
    pad = int(np.ceil(abs(alpha) * work.shape[0] / 2)) + 1
    wide = np.pad(work, ((0, 0), (pad, pad))).astype(np.float32)
    # Output pixel (x, y) reads input (x + alpha * (y - cy), y).
    sheared = Image.fromarray(wide, mode="F").transform(
        wide.shape[::-1], Image.Transform.AFFINE, (1, alpha, -alpha * cy, 0, 1, 0),
        resample=Image.Resampling.BILINEAR)
    return np.asarray(sheared)


def mnist_widths(mnist_dir: Path, count: int = 5000) -> np.ndarray:
    """``stroke_width`` of the first ``count`` MNIST training digits (after ``to_work``)."""
    from pipeline.data import idx

    digits = idx.read(Path(mnist_dir) / "train-images-idx3-ubyte.gz").data[:count]
    out = []
    for d in digits:
        rows, cols = np.nonzero(d > 51)
        out.append(stroke_width(to_work(d[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1])))
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve.normalise",
                                     description="MNIST's pen width (MNIST_WIDTH), measured")
    parser.add_argument("--mnist", type=Path, default=Path("data/raw"))
    args = parser.parse_args(argv)
    p10, p50, p90 = np.percentile(mnist_widths(args.mnist), [10, 50, 90])
    print(f"stroke width in box pixels: p10 {p10:.2f}, median {p50:.2f}, p90 {p90:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
