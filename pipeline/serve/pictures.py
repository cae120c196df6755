"""Digit pictures "as people make them", and the champion's accuracy on them.

Not a stage and no params. MNIST's test accuracy says little about a photo of
a digit written on paper, so ``data/pictures/`` holds a small committed set
made from the MNIST *test* set (the models never trained on it) by doing what
paper and cameras do: dark ink on light, tinted paper, a larger and
uneven canvas, off-centre placement, a slight rotation, blur, noise, JPEG or
PNG, coloured ink. ``labels.csv`` gives each file's digit, source index and
what was done to it.

    python -m pipeline.serve.pictures make  [--mnist DIR] [--out data/pictures] [--count 50]
    python -m pipeline.serve.pictures score [--model M] [--mnist DIR]

``make`` reads ``t10k-images/labels-idx*-ubyte.gz`` from ``--mnist`` (default
``data/raw``, the fetch stage's output) and is seeded, so it rewrites the same
files. ``score`` predicts the set through ``pipeline.serve.predict`` exactly as a user
would and, beside it, the MNIST test set from the same folder; it prints one
JSON object with both accuracies (``make pictures-accuracy``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.data import idx
from pipeline.serve import predict

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


def score(pictures: Path = OUT_DIR, mnist_dir: Path | None = config.RAW_DIR,
          model: str | None = None) -> dict:
    """Accuracy of a model on the picture set and, if available, on MNIST's test set."""
    with open(Path(pictures) / "labels.csv", newline="") as fh:
        truth = {str(Path(pictures) / r["file"]): int(r["label"]) for r in csv.DictReader(fh)}
    loaded, probabilities = predict.resolve(model)
    records, failed = predict.predict_paths(
        sorted(map(Path, truth)), probabilities,
        on_error=lambda m: print(f"pictures: {m}", file=sys.stderr))
    right = sum(r["prediction"] == truth[r["file"]] for r in records)
    result = {"model": loaded, "pictures": {"images": len(truth), "failed": failed,
                                            "accuracy": round(right / len(truth), 4)}}
    test_gz = Path(mnist_dir or "") / "t10k-images-idx3-ubyte.gz"
    if mnist_dir and test_gz.exists():
        records, _ = predict.predict_paths([test_gz], probabilities)
        labels = _mnist(mnist_dir)[1]
        pred = np.array([r["prediction"] for r in records])
        result["mnist_test"] = {"images": len(labels),
                                "accuracy": round(float((pred == labels).mean()), 4)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve.pictures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="write the picture set from MNIST's test set")
    mk.add_argument("--mnist", type=Path, default=config.RAW_DIR)
    mk.add_argument("--out", type=Path, default=OUT_DIR)
    mk.add_argument("--count", type=int, default=50)
    sc = sub.add_parser("score", help="accuracy on the picture set and on MNIST's test set")
    sc.add_argument("--pictures", type=Path, default=OUT_DIR)
    sc.add_argument("--mnist", type=Path, default=config.RAW_DIR)
    sc.add_argument("--model", help="as predict's --model (default: the champion)")
    args = parser.parse_args(argv)
    try:
        if args.command == "make":
            rows = make(args.mnist, args.out, args.count)
            print(f"pictures: wrote {len(rows)} pictures and labels.csv to {args.out}")
        else:
            print(json.dumps(score(args.pictures, args.mnist, args.model)))
    except (idx.IdxError, predict.ModelError, FileNotFoundError) as exc:
        print(f"pictures: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
