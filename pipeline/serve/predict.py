"""``python -m pipeline.serve.predict PATH...``: what the champion says about digit pictures.

Not a stage and no params: the command a user runs after the pipeline.
Inputs: files or folders (searched recursively for .png, .jpg, .jpeg, IDX
files) of pictures of any size and colour, and IDX image files (one
prediction per image). Pictures are brought to MNIST's form by
``pipeline.serve.images`` (see docs/serving.md; ``--deskew`` adds the optional
slant correction, ``--basic`` keeps only the steps from before issue 25). Output, per image: the predicted class,
its probability and the runner-up with its probability, as a table or, with
``--json``, as one JSON object per line.

The model is the champion by default (``models/best``, this workspace's
evaluate output, else ``models/champion``, the published one), or
``--model`` (a name from ``params.yaml``'s models = its checkpoint, a ``.keras``
file, a folder holding ``model.keras``, or a SavedModel export), or
``--version champion@v0.0.2`` (a registry version, read at its git tag
through ``dvc.api``, so it works for versions no longer in the workspace;
``champion#prod`` is the version in production).

A bad file costs one line on stderr naming it; the other files are still
predicted. Exit status: 0 all predicted, 1 some file failed, 2 no model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pipeline import config
from pipeline.serve.images import BASIC, DEFAULT, ImageError, Steps, load

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHAMPIONS = (config.CHAMPION_DIR, Path("models/champion"))


class ModelError(RuntimeError):
    """No usable model; the message is one line naming what was looked for."""


def find_inputs(paths: list[Path]) -> Iterator[Path]:
    """Each file as given; folders expanded to their pictures and IDX files, sorted."""
    for path in map(Path, paths):
        if not path.is_dir():
            yield path
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and (
            p.suffix.lower() in PICTURE_SUFFIXES or "-ubyte" in p.name or p.suffix == ".idx"))
        if not found:
            yield path  # reported as an error: nothing to predict there
        yield from found


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _keras(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from pipeline.rnn import model as model_lib

    try:
        net = model_lib.load(path)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelError(f"{path}: not a loadable Keras model ({_first_line(exc)})") from None

    def probabilities(x: np.ndarray) -> np.ndarray:
        logits = net.predict(x.astype("float32"), batch_size=1000, verbose=0)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return probabilities


def _saved_model(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    try:
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    except Exception as exc:  # TF raises many types for a bad SavedModel
        raise ModelError(f"{path}: not a loadable SavedModel ({_first_line(exc)})") from None
    return lambda x: serve(pixels=tf.constant(x, tf.float32))["probabilities"].numpy()


def _from_registry(version: str, repo: Path) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The champion's checkpoint at a registry version (champion@v0.0.2) or in prod."""
    import dvc.api

    from pipeline.serve import registry

    if version == f"{registry.ARTIFACT}#{registry.PROD}":
        current = registry.production(repo)
        if current is None:
            raise ModelError(f"--version {version}: no version is in {registry.PROD}")
        version = current["tag"]
    if "@" not in version:
        raise ModelError(f"--version {version}: expected champion@<version> (e.g. "
                         f"champion@v0.0.2, see `gto show`) or champion#prod")
    path = f"{CHAMPIONS[1]}/model.keras"
    try:
        with dvc.api.open(path, repo=str(repo), rev=version, mode="rb") as fh:
            data = fh.read()
    except Exception as exc:  # unknown rev, file missing at that rev, remote unreachable
        raise ModelError(f"--version {version}: cannot read {path} at that tag "
                         f"({_first_line(exc)})") from None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model.keras"
        local.write_bytes(data)
        return version, _keras(local)


def resolve(model: str | None, version: str | None = None,
            root: Path = Path(".")) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(what was loaded, probabilities function) for the CLI's model options."""
    root = Path(root)
    if version:
        return _from_registry(version, root)
    if model is None:
        for folder in CHAMPIONS:
            if (root / folder / "model.keras").is_file():
                return str(folder / "model.keras"), _keras(root / folder / "model.keras")
        raise ModelError(f"no champion: neither {CHAMPIONS[0]}/model.keras nor "
                         f"{CHAMPIONS[1]}/model.keras exists (run `dvc repro` or `dvc pull`)")
    path = Path(model)
    named = root / config.MODELS_DIR / "checkpoints" / f"{model}.keras"
    if not path.exists() and path.suffix == "" and named.is_file():
        return str(named), _keras(named)
    if path.is_dir() and (path / "model.keras").is_file():
        return str(path / "model.keras"), _keras(path / "model.keras")
    if path.is_dir():
        # An export root (champion/ with 1/, 2/, ...) serves its highest version.
        versions = sorted((p for p in path.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name))
        path = versions[-1] if versions and not (path / "saved_model.pb").exists() else path
        if (path / "saved_model.pb").is_file():
            return str(path), _saved_model(path)
        raise ModelError(f"{model}: folder holds neither model.keras nor a SavedModel")
    if path.is_file():
        return str(path), _keras(path)
    raise ModelError(f"{model}: no such model (not a file or folder, and no {named})")


def rank(probs: np.ndarray) -> list[dict]:
    """Top class, its probability and the runner-up for each row."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return [{"prediction": int(o[0]), "probability": round(float(p[o[0]]), 4),
             "runner_up": int(o[1]), "runner_up_probability": round(float(p[o[1]]), 4)}
            for p, o in zip(probs, order)]


def predict_paths(paths: list[Path], probabilities: Callable[[np.ndarray], np.ndarray],
                  on_error: Callable[[str], None] = print,
                  steps: Steps = DEFAULT) -> tuple[list[dict], int]:
    """Predict every input; returns (one record per image, number of failed inputs)."""
    records, failed = [], 0
    for path in find_inputs(paths):
        try:
            if path.is_dir():
                raise ImageError(f"{path}: folder holds no .png, .jpg, .jpeg or IDX files")
            digits = load(path, steps)
        except ImageError as exc:
            on_error(str(exc))
            failed += 1
            continue
        picture = path.suffix.lower() in PICTURE_SUFFIXES and len(digits) == 1
        for i, result in enumerate(rank(probabilities(digits)) if len(digits) else []):
            records.append({"file": str(path) if picture else f"{path}[{i}]", **result})
    return records, failed


def run(paths: list[Path], model: str | None = None, version: str | None = None,
        root: Path = Path("."), on_error: Callable[[str], None] = print,
        steps: Steps = DEFAULT) -> tuple[list[dict], int]:
    """Load the model the options name, then ``predict_paths``."""
    return predict_paths(paths, resolve(model, version, root)[1], on_error, steps)


def add_step_options(parser: argparse.ArgumentParser) -> None:
    """``--deskew`` and ``--basic``: the optional preprocessing steps (docs/serving.md)."""
    parser.add_argument("--deskew", action="store_true",
                        help="also shear each picture's slant away (off: the models learnt slants)")
    parser.add_argument("--basic", action="store_true", help="only the basic steps 1-7 (no "
                        "low-resolution or stroke-width step), as before issue 25")


def steps_of(args: argparse.Namespace) -> Steps:
    base = BASIC if args.basic else DEFAULT
    return Steps(low_res=base.low_res, strokes=base.strokes, deskew=args.deskew)


def table(records: list[dict]) -> str:
    width = max([len("file")] + [len(r["file"]) for r in records])
    lines = [f"{'file':<{width}}  digit  prob    runner-up  prob"]
    lines += [f"{r['file']:<{width}}  {r['prediction']:>5}  {r['probability']:.4f}  "
              f"{r['runner_up']:>9}  {r['runner_up_probability']:.4f}" for r in records]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="pictures (PNG, JPEG), IDX image files, or folders of them")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="a model name (lstm, ...), a .keras file, or a folder "
                       "with model.keras or a SavedModel (default: the champion)")
    which.add_argument("--version", help="a registry version, e.g. champion@v0.0.2, "
                       "or champion#prod for the production one")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_step_options(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def error(message: str) -> None:
        print(f"predict: error: {message}", file=sys.stderr)

    try:
        records, failed = run(args.paths, args.model, args.version, on_error=error,
                              steps=steps_of(args))
    except ModelError as exc:
        error(str(exc))
        return 2
    if args.json:
        for r in records:
            print(json.dumps(r))
    elif records:
        print(table(records))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
