"""``reports/pictures.md``'s tables: models x preprocessing on the picture sets, measured.

Not a stage and no params. Issue 25 asked whether the preprocessing of
``pipeline.serve.images`` and the training augmentation of
``pipeline.rnn.augment`` help on digits that were not drawn like MNIST's, and
what they cost on MNIST; this scores each model given with each preprocessing
(basic = steps 1-7 as before, default, default + deskew) through
``pipeline.serve.pictures.score`` and rewrites the block between the markers
of the report (the prose around it is written by hand):

    python -m pipeline.serve.picture_report --model "lstm (champion)=models/best/model.keras" \\
        --model "lstm, augmented=PATH" --mnist data/raw [--out reports/pictures.md]

The raw results go to the report's ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pipeline import runtime
from pipeline.serve import pictures, rendered
from pipeline.serve.images import BASIC, DEFAULT, Steps

OUT = Path("reports/pictures.md")
BEGIN, END = "<!-- pictures:begin -->", "<!-- pictures:end -->"
PREPROCESSING = {"basic (before)": BASIC, "default": DEFAULT, "default + deskew": Steps(deskew=True)}
CONFUSIONS = ("1->7", "1->8", "1->9", "1->2", "4->6", "4->9", "6->0", "9->0")


def measure(models: dict[str, str], mnist_dir: Path, also: dict[str, str] | None = None
            ) -> list[dict]:
    """One ``pictures.score`` per model and preprocessing (``also``: the default only)."""
    runs = []
    todo = [(label, model, PREPROCESSING) for label, model in models.items()]
    todo += [(label, model, {"default": DEFAULT}) for label, model in (also or {}).items()]
    for label, model, preprocessing in todo:
        for name, steps in preprocessing.items():
            result = pictures.score([rendered.OUT_DIR, pictures.OUT_DIR], mnist_dir, model, steps,
                                    as_pictures=True)
            runs.append({"label": label, "preprocessing": name, **result})
            print(f"picture_report: {label}, {name}: "
                  f"{result['pictures'][str(rendered.OUT_DIR)]['accuracy']:.2%}", file=sys.stderr)
    return runs


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def tables(runs: list[dict]) -> str:
    """The markdown block: overall, per kind of picture, per class, and the confusions."""
    new, old = str(rendered.OUT_DIR), str(pictures.OUT_DIR)
    lines = [f"Rendered set: `{new}` ({runs[0]['pictures'][new]['images']} pictures); "
             f"MNIST-made set: `{old}` ({runs[0]['pictures'][old]['images']}).", "",
             "| model | preprocessing | rendered | fonts | strokes | low resolution | light on dark "
             "| `data/pictures` | MNIST test | MNIST test as pictures |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["pictures"][new]
        lines.append(
            f"| {r['label']} | {r['preprocessing']} | **{_pct(s['accuracy'])}** | "
            f"{_pct(s.get('kind', {}).get('font'))} | {_pct(s.get('kind', {}).get('strokes'))} | "
            f"{_pct(s.get('low_res', {}).get('1'))} | {_pct(s.get('light_on_dark', {}).get('1'))} | "
            f"{_pct(r['pictures'][old]['accuracy'])} | "
            f"{_pct(r.get('mnist_test', {}).get('accuracy'))} | "
            f"{_pct(r.get('mnist_test_as_pictures', {}).get('accuracy'))} |")
    lines += ["", "Per class on the rendered set:", "",
              "| model | preprocessing | " + " | ".join(map(str, range(10))) + " |",
              "|---|---|" + "---|" * 10]
    for r in runs:
        per = r["pictures"][new]["per_class"]
        lines.append(f"| {r['label']} | {r['preprocessing']} | "
                     + " | ".join(_pct(per.get(str(c))) for c in range(10)) + " |")
    lines += ["", "Confusions on the rendered set (true -> read, pictures; of "
              f"{runs[0]['pictures'][new]['images'] // 10} per class):", "",
              "| model | preprocessing | " + " | ".join(c.replace("->", " → ") for c in CONFUSIONS)
              + " | all errors |", "|---|---|" + "---|" * (len(CONFUSIONS) + 1)]
    for r in runs:
        conf = r["pictures"][new]["confusions"]
        lines.append(f"| {r['label']} | {r['preprocessing']} | "
                     + " | ".join(str(conf.get(c, 0)) for c in CONFUSIONS)
                     + f" | {sum(conf.values())} |")
    return "\n".join(lines)


def write(report: Path, runs: list[dict], command: str) -> None:
    """Replace the block between the markers (or start the file with it); raw JSON beside."""
    m = runtime.machine()
    block = "\n".join([BEGIN, f"Measured on an {m['cpu_model']}, {m['cpu_count']} cores "
                       f"({m['isa_flags']}; TensorFlow {m['tensorflow']}, {m['kernels']}) by",
                       "", "```sh", command, "```", "", tables(runs), END])
    text = report.read_text() if report.exists() else f"# Pictures\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    report.parent.mkdir(parents=True, exist_ok=True)
    runtime.atomic_write_text(report, head + block + tail)
    runtime.write_json(report.with_suffix(".json"), {"command": command, "machine": m,
                                                     "runs": runs})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve.picture_report",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=MODEL",
                        help="a model to score (as predict's --model), with its label")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=MODEL",
                        help="a model to score with the default preprocessing only")
    parser.add_argument("--mnist", type=Path, default=Path("data/raw"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if any("=" not in m for m in args.model + args.also):
        parser.error("--model, --also: expected LABEL=MODEL")
    models = dict(m.split("=", 1) for m in args.model)
    also = dict(m.split("=", 1) for m in args.also)
    command = ("python -m pipeline.serve.picture_report "
               + shlex.join(sys.argv[1:] if argv is None else argv))
    try:
        write(args.out, measure(models, args.mnist, also), command)
    except (pictures.predict.ModelError, FileNotFoundError) as exc:
        print(f"picture_report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
