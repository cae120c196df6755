"""Digits drawn as pen strokes: hand-made skeletons, varied the way hands vary.

Not a stage and no params. Part of the picture set that is *not* MNIST
(``pipeline.serve.rendered``): MNIST's writers all used one kind of pen on one
form and were scanned one way, so a test set drawn from it cannot show what a
different hand does to the models. Each digit here has one to three
skeletons (polylines in a unit box, x to the right, y down: e.g. a 1 with and
without a flag and a base, a 4 open and closed, a 7 with and without a bar),
and each drawing varies them at random: every point jittered, a smooth bend
across the whole digit (curvature), an aspect ratio, a slant, a small rotation
and a pen width from hairline to marker. Lines are drawn 4x larger with round
joins and caps, then reduced, so edges are anti-aliased like a scan.
"""

from __future__ import annotations

import numpy as np

SUPERSAMPLE = 4  # drawn this much larger, then reduced: anti-aliased edges


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float,
        n: int = 24) -> list[tuple[float, float]]:
    """Points of an elliptic arc; angles in degrees, 0 = right, 90 = down (y points down)."""
    t = np.radians(np.linspace(start, end, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def curve(start, control, end, n: int = 16) -> list[tuple[float, float]]:
    """Points of a quadratic Bezier curve from ``start`` to ``end``, pulled towards ``control``."""
    t = np.linspace(0, 1, n)[:, None]
    p = (1 - t) ** 2 * np.array(start) + 2 * t * (1 - t) * np.array(control) + t ** 2 * np.array(end)
    return [tuple(v) for v in p]


def _line(*points: tuple[float, float]) -> list[tuple[float, float]]:
    return list(points)


# One entry per digit: its skeletons, each a list of strokes, each a list of (x, y).
TEMPLATES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[arc(0.5, 0.5, 0.45, 0.5, -90, 270)],
        [arc(0.5, 0.5, 0.42, 0.5, -100, 280)]],                  # start and end overlap
    1: [[_line((0.5, 0.0), (0.5, 1.0))],                           # a plain bar, as in MNIST
        [_line((0.2, 0.28), (0.58, 0.0), (0.58, 1.0))],            # with a flag
        [_line((0.25, 0.22), (0.55, 0.0), (0.55, 1.0)), _line((0.2, 1.0), (0.9, 1.0))]],
    2: [[arc(0.5, 0.28, 0.42, 0.28, 195, 385) + _line((0.05, 1.0), (0.95, 1.0))],
        [arc(0.48, 0.3, 0.4, 0.3, 200, 370) + curve((0.87, 0.35), (0.6, 0.8), (0.05, 0.98))[1:]
         + _line((0.95, 0.95))]],                                    # a curved diagonal
    3: [[arc(0.45, 0.25, 0.42, 0.25, 205, 450) + arc(0.45, 0.74, 0.48, 0.26, 270, 500)],
        [_line((0.1, 0.0), (0.9, 0.0), (0.42, 0.42))
         + arc(0.45, 0.72, 0.48, 0.28, 250, 500)]],                 # flat top
    4: [[_line((0.65, 0.0), (0.05, 0.68), (0.95, 0.68)), _line((0.68, 0.12), (0.68, 1.0))],
        [_line((0.15, 0.0), (0.08, 0.6), (0.95, 0.6)), _line((0.72, 0.05), (0.72, 1.0))]],
    5: [[_line((0.88, 0.0), (0.22, 0.0)),
         _line((0.22, 0.0), (0.19, 0.46)) + arc(0.47, 0.7, 0.43, 0.3, 230, 490)]],
    6: [[_line((0.8, 0.02), (0.5, 0.1), (0.26, 0.32), (0.12, 0.62))
         + arc(0.5, 0.72, 0.38, 0.28, 180, -160)]],
    7: [[_line((0.05, 0.0), (0.95, 0.0), (0.4, 1.0))],
        [_line((0.05, 0.0), (0.95, 0.0), (0.4, 1.0)), _line((0.3, 0.52), (0.86, 0.52))],
        [_line((0.05, 0.05)) + curve((0.95, 0.0), (0.55, 0.45), (0.45, 1.0))]],   # curved stem
    8: [[arc(0.5, 0.25, 0.33, 0.25, 90, 450), arc(0.5, 0.73, 0.43, 0.27, -90, 270)],
        [arc(0.5, 0.26, 0.36, 0.26, 60, 400) + arc(0.5, 0.74, 0.42, 0.26, 240, -60)]],
    9: [[arc(0.5, 0.28, 0.4, 0.28, 0, 360), _line((0.9, 0.28), (0.86, 1.0))],
        [arc(0.5, 0.28, 0.4, 0.28, 10, 370) + curve((0.9, 0.33), (0.9, 0.9), (0.35, 1.0))[1:]]],
}


def _vary(strokes: list[list[tuple[float, float]]], rng: np.random.Generator) -> list[np.ndarray]:
    """Jitter, bend, aspect, slant and rotation of one skeleton; points still in ~[0, 1]."""
    amp = rng.uniform(0.0, 0.06, size=2)                 # the bend: a smooth displacement field
    freq, phase = rng.uniform(0.5, 1.5, size=(2, 2)), rng.uniform(0, 2 * np.pi, size=2)
    aspect = rng.uniform(0.5, 0.85)                       # width / height of the digit
    slant = rng.uniform(-0.15, 0.4)                       # x shift per unit of height
    angle = np.radians(rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out = []
    for stroke in strokes:
        p = np.asarray(stroke, dtype=float) + rng.normal(0, 0.012, size=(len(stroke), 2))
        bend = np.stack([amp[i] * np.sin(2 * np.pi * (freq[i] @ p.T) + phase[i])
                         for i in range(2)], axis=1)
        p = p + bend
        p[:, 0] = (p[:, 0] - 0.5) * aspect + slant * (0.5 - p[:, 1])
        p[:, 1] -= 0.5
        out.append(p @ rot.T)
    return out


def draw(label: int, rng: np.random.Generator, height: int):
    """(``height``-tall ink mask as a PIL "L" image, ink = 255; what was drawn) for ``label``."""
    from PIL import Image, ImageDraw

    variants = TEMPLATES[label]
    choice = int(rng.integers(len(variants)))
    strokes = _vary(variants[choice], rng)
    pen = float(rng.choice([rng.uniform(0.03, 0.07), rng.uniform(0.07, 0.13),
                            rng.uniform(0.13, 0.22)]))  # thin, MNIST-like, thick (x height)
    pts = np.concatenate(strokes)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scale = SUPERSAMPLE * height / max(hi[1] - lo[1], 1e-6)
    margin = pen * scale
    size = np.ceil((hi - lo) * scale + 2 * margin).astype(int) + 1
    big = Image.new("L", (int(size[0]), int(size[1])), 0)
    pen_px = max(1, round(pen * scale))
    ink = ImageDraw.Draw(big)
    for stroke in strokes:
        xy = [tuple(v) for v in (stroke - lo) * scale + margin]
        ink.line(xy, fill=255, width=pen_px, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round caps
            ink.ellipse((x - pen_px / 2, y - pen_px / 2, x + pen_px / 2, y + pen_px / 2), fill=255)
    small = (max(1, round(big.width / SUPERSAMPLE)), max(1, round(big.height / SUPERSAMPLE)))
    mask = big.resize(small, Image.Resampling.BOX)
    return mask, f"strokes {label}/{choice}, pen {pen:.2f} x height"
