"""Size and load time of the served champion (models/export), each load in a fresh process.

Usage: python bench/export.py [PROJECT] [--repeats 3]
PROJECT is a checkout after `dvc repro` (default: this one). Prints the
export's and the checkpoint's size, then per fresh process: TensorFlow's
import, `tf.saved_model.load`, the first call and 1,000 images, in seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys, time
t0 = time.perf_counter(); import numpy as np, tensorflow as tf; t1 = time.perf_counter()
model = tf.saved_model.load(sys.argv[1]); t2 = time.perf_counter()
serve = model.signatures["serving_default"]
x = tf.constant(np.zeros((1, 28, 28), "float32")); serve(pixels=x); t3 = time.perf_counter()
x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1000, 28, 28)).astype("float32"))
serve(pixels=x); t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2,
                  "1000_images_s": t4 - t3}))
"""


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=Path.cwd())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    export = next((args.project / "models" / "export").glob("*/*/saved_model.pb")).parent
    card = json.loads((args.project / "models" / "best" / "card.json").read_text())
    print(f"export {export}: {size_mib(export):.2f} MiB; checkpoint models/best/model.keras "
          f"({card['model']}): {size_mib(args.project / 'models/best/model.keras'):.2f} MiB")
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", PROBE, str(export)], capture_output=True,
                             text=True, check=True, cwd="/",
                             env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
        times = json.loads(out.stdout.strip().splitlines()[-1])
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
