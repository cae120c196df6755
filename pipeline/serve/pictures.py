"""Digit pictures "as people make them", and a model's accuracy on them.

Not a stage and no params. MNIST's test accuracy says little about a photo of
a digit written on paper, so two small committed sets test the champion the
way users feed it:

* ``data/pictures/`` is made from the MNIST *test* set (the models never
  trained on it) by doing what paper and cameras do: dark ink on light, tinted
  paper, a larger and uneven canvas, off-centre placement, a slight rotation,
  blur, noise, JPEG or PNG, coloured ink. It tests the camera side only;
* ``data/pictures-rendered/`` holds digits that never were MNIST: fonts and
  drawn pen strokes, thick and thin, small and upscaled, slanted, dark on light
  and light on dark (``pipeline.serve.rendered``).

``labels.csv`` gives each file's digit and what was done to it.

    python -m pipeline.serve.pictures make  [--kind mnist|rendered] [--mnist DIR] [--out DIR]
    python -m pipeline.serve.pictures score [--model M] [--mnist DIR] [--pictures DIR...]
                                            [--basic] [--deskew] [--mnist-as-pictures]

``make`` is seeded, so it rewrites the same files; ``--kind mnist`` reads
``t10k-images/labels-idx*-ubyte.gz`` from ``--mnist`` (default ``data/raw``,
the fetch stage's output). ``score`` predicts each set through
``pipeline.serve.predict`` exactly as a user would (``--basic``/``--deskew``
as predict's) and, beside them, the MNIST test set from the same folder; it
prints one JSON object: accuracy overall, per class, per kind of picture, and
the confusions (``make pictures-accuracy``). ``python -m pipeline.serve.picture_report``
scores several models and preprocessings into reports/pictures.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.data import idx
from pipeline.serve import predict, rendered
from pipeline.serve.images import DEFAULT, Steps, to_mnist

OUT_DIR = Path("data/pictures")
SEED = 10
INKS = [(20, 20, 20), (25, 40, 140), (10, 10, 60), (60, 30, 30)]      # black, blue, navy, brown
PAPERS = [(255, 255, 255), (245, 240, 220), (230, 235, 240), (250, 245, 200), (210, 210, 210)]


def _mnist(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    images = idx.read(Path(mnist_dir) / "t10k-images-idx3-ubyte.gz").data
    labels = idx.read(Path(mnist_dir) / "t10k-labels-idx1-ubyte.gz").data
    return images, labels


def draw(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, str]:
    """One MNIST digit as a picture: (file bytes, suffix, what was done)."""
    from PIL import Image, ImageFilter

    size = int(rng.integers(40, 121))                  # digit's box in the new picture
    angle = float(rng.uniform(-12, 12))
    ink, paper = INKS[rng.integers(len(INKS))], PAPERS[rng.integers(len(PAPERS))]
    mask = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    pad = rng.integers(int(0.05 * size), int(0.6 * size) + 1, size=4)  # left, top, right, bottom
    w, h = mask.width + pad[0] + pad[2], mask.height + pad[1] + pad[3]
    canvas = Image.new("RGB", (int(w), int(h)), paper)
    canvas.paste(Image.new("RGB", mask.size, ink), (int(pad[0]), int(pad[1])), mask)
    blur = float(rng.choice([0, 0, 0.8, 1.5]))
    if blur:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur * size / 60))
    # Photos (JPEG) get sensor noise; PNGs stay clean, like a digit drawn on screen
    # (noise would also make PNGs ten times larger).
    jpeg = rng.random() < 0.6
    noise = float(rng.choice([0, 6, 12, 20])) if jpeg else 0.0
    pixels = np.asarray(canvas, dtype=np.float32)
    if noise:
        pixels = pixels + rng.normal(0, noise, pixels.shape)
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    grey = rng.random() < 0.2
    if grey:
        canvas = canvas.convert("L")
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG" if jpeg else "PNG", **({"quality": 80} if jpeg else {}))
    what = (f"{canvas.width}x{canvas.height}, box {size}px, rotated {angle:+.0f} deg, "
            f"ink {ink}, paper {paper}, blur {blur}, noise {noise:g}{', grey' if grey else ''}")
    return buf.getvalue(), ".jpg" if jpeg else ".png", what


def make(mnist_dir: Path, out: Path = OUT_DIR, count: int = 50, seed: int = SEED) -> list[dict]:
    """Write ``count`` pictures (an equal share per class) and ``labels.csv`` to ``out``."""
    images, labels = _mnist(mnist_dir)
    rng = np.random.default_rng(seed)
    per_class = -(-count // 10)
    chosen = sorted(i for c in range(10)
                    for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False))
    chosen = chosen[:count]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("digit-*"):
        old.unlink()
    rows = []
    for n, i in enumerate(chosen):
        data, suffix, what = draw(images[i], rng)
        name = f"digit-{n:02d}{suffix}"
        (out / name).write_bytes(data)
        rows.append({"file": name, "label": int(labels[i]), "mnist_test_index": int(i),
                     "made_by": what})
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


GROUPS = ("kind", "low_res", "light_on_dark")  # labels.csv columns scored apart, where present


def summary(truth: list[int], predicted: list[int | None], rows: list[dict] | None = None) -> dict:
    """Accuracy overall, per class, per group of ``GROUPS``, and the confusions (true->read).

    ``None`` is a picture that could not be read: wrong, and counted as failed.
    """
    y, p = np.array(truth), np.array([-1 if v is None else v for v in predicted])
    right = p == y
    out = {"images": len(y), "failed": int((p == -1).sum()),
           "accuracy": round(float(right.mean()), 4) if len(y) else 0.0,
           "per_class": {str(c): round(float(right[y == c].mean()), 4)
                         for c in range(10) if (y == c).any()}}
    for column in GROUPS:
        values = [r.get(column) for r in rows or []]
        if rows and all(v is not None for v in values):
            out[column] = {v: round(float(right[[w == v for w in values]].mean()), 4)
                           for v in sorted(set(values))}
    pairs = Counter(f"{a}->{b}" for a, b in zip(y, p) if a != b and b != -1)
    out["confusions"] = dict(pairs.most_common())
    return out


def score_set(pictures: Path, probabilities, steps: Steps = DEFAULT) -> dict:
    """``summary`` of one picture set (a folder with labels.csv), read as ``predict`` reads."""
    with open(Path(pictures) / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    files = [str(Path(pictures) / r["file"]) for r in rows]
    records, _ = predict.predict_paths(
        sorted(map(Path, files)), probabilities, steps=steps,
        on_error=lambda m: print(f"pictures: {m}", file=sys.stderr))
    read = {r["file"]: r["prediction"] for r in records}
    return summary([int(r["label"]) for r in rows], [read.get(f) for f in files], rows)


def mnist_as_pictures(images: np.ndarray, labels: np.ndarray, probabilities,
                      steps: Steps = DEFAULT) -> dict:
    """MNIST test digits inverted to dark on light and read as pictures: what the steps
    cost digits that already look like MNIST's."""
    x = np.stack([to_mnist(255.0 - d.astype(np.float32), f"mnist[{i}]", steps)
                  for i, d in enumerate(images)])
    pred = probabilities(x).argmax(axis=1)
    return {"images": len(labels), "accuracy": round(float((pred == labels).mean()), 4)}


def score(pictures: Path | list[Path] = OUT_DIR, mnist_dir: Path | None = config.RAW_DIR,
          model: str | None = None, steps: Steps = DEFAULT, as_pictures: bool = False) -> dict:
    """Accuracy of a model on picture sets and, if available, on MNIST's test set."""
    loaded, probabilities = predict.resolve(model)
    sets = [pictures] if isinstance(pictures, (str, Path)) else pictures
    result = {"model": loaded, "steps": asdict(steps),
              "pictures": {str(s): score_set(s, probabilities, steps) for s in sets}}
    test_gz = Path(mnist_dir or "") / "t10k-images-idx3-ubyte.gz"
    if mnist_dir and test_gz.exists():
        images, labels = _mnist(mnist_dir)
        pred = probabilities(images).argmax(axis=1)  # IDX files are used unchanged
        result["mnist_test"] = {"images": len(labels),
                                "accuracy": round(float((pred == labels).mean()), 4)}
        if as_pictures:
            result["mnist_test_as_pictures"] = mnist_as_pictures(images, labels, probabilities,
                                                                 steps)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve.pictures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="write a picture set: from MNIST's test set, or rendered")
    mk.add_argument("--kind", choices=("mnist", "rendered"), default="mnist",
                    help="mnist: data/pictures from MNIST's test digits; rendered: "
                    "data/pictures-rendered from fonts and drawn strokes (not MNIST)")
    mk.add_argument("--mnist", type=Path, default=config.RAW_DIR)
    mk.add_argument("--out", type=Path, help="default: data/pictures or data/pictures-rendered")
    mk.add_argument("--count", type=int, help="pictures (mnist, default 50) or pictures per "
                    f"class (rendered, default {rendered.PER_CLASS})")
    sc = sub.add_parser("score", help="accuracy on picture sets and on MNIST's test set")
    sc.add_argument("--pictures", type=Path, nargs="+", default=[OUT_DIR, rendered.OUT_DIR])
    sc.add_argument("--mnist", type=Path, default=config.RAW_DIR)
    sc.add_argument("--model", help="as predict's --model (default: the champion)")
    sc.add_argument("--mnist-as-pictures", action="store_true", help="also read MNIST's test "
                    "digits as dark-on-light pictures through the preprocessing (slow)")
    predict.add_step_options(sc)
    args = parser.parse_args(argv)
    try:
        if args.command == "make" and args.kind == "rendered":
            rows = rendered.make(args.out or rendered.OUT_DIR, args.count or rendered.PER_CLASS)
            print(f"pictures: wrote {len(rows)} pictures and labels.csv to "
                  f"{args.out or rendered.OUT_DIR}")
        elif args.command == "make":
            rows = make(args.mnist, args.out or OUT_DIR, args.count or 50)
            print(f"pictures: wrote {len(rows)} pictures and labels.csv to {args.out or OUT_DIR}")
        else:
            print(json.dumps(score(args.pictures, args.mnist, args.model, predict.steps_of(args),
                                   args.mnist_as_pictures)))
    except (idx.IdxError, predict.ModelError, FileNotFoundError) as exc:
        print(f"pictures: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
