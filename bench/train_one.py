"""Train one model with recipe overrides and test it, outside DVC: a recipe probe.

Usage: python bench/train_one.py MODEL [--batch 100] [--lr 0.001] [--epochs 10]
                                 [--out /tmp/probe] [--split data/split]

Runs ``pipeline.stages.train.run`` exactly as the stage does (same callbacks, checkpoint
choice, determinism) with ``train.batch_size``, ``learning_rate`` and ``epochs``
overridden and validation once per epoch, then tests the best checkpoint on the
split's test set. Prints one JSON line. Needs ``data/split`` (``dvc repro split``).
Set TF_NUM_INTRAOP_THREADS=1 to run two probes side by side on two cores (the
numerics then differ from a two-thread run: another sample, not the same run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data import arrays
from pipeline import config  # noqa: E402
from pipeline.rnn import model
from pipeline.stages import split
from pipeline.stages import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("/tmp/probe"))
    ap.add_argument("--split", type=Path, default=config.SPLIT_DIR)
    args = ap.parse_args()
    params = config.load()
    recipe = dataclasses.replace(params.train, batch_size=args.batch, learning_rate=args.lr,
                                 epochs=args.epochs,
                                 validate_every_steps=-(-55_000 // args.batch))
    params = dataclasses.replace(params, train=recipe)
    out = args.out / f"{args.model}-b{args.batch}-lr{args.lr}-e{args.epochs}"
    start = time.time()
    summary = train.run(args.model, params, split_dir=args.split, checkpoint=out / "model.keras",
                        log_dir=out / "live", work_dir=out / "work")
    x, y = arrays.load(args.split, "test")
    pred = model.load(out / "model.keras").predict(x.astype("float32"), batch_size=1000, verbose=0)
    print(json.dumps({"model": args.model, "batch": args.batch, "lr": args.lr,
                      "epochs": args.epochs, "test_accuracy": float((pred.argmax(1) == y).mean()),
                      "best_val_accuracy": summary["best_val_accuracy"],
                      "best_epoch": summary["best_epoch"], "train_s": summary["wall_time_s"],
                      "total_s": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
