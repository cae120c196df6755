"""Which changes in a diff are real, and whether both sides ran on the same kind of machine.

``pipeline.review.diff`` reads both revisions' per-image test predictions
(``reports/predictions.csv``; runs made before it existed have the same rows in
``reports/confusion/<model>.csv``) and ``metrics/evaluate.json``'s machine
record; these pure functions turn them into verdicts and sentences:

- ``paired_tests``: McNemar's exact test (``pipeline.evaluation.stats``) per changed model on
  the same test images, e.g. ``+3 images (5 fixed, 2 broken), p = 0.45: within
  noise``. Only significant changes count as changed in the report's summary;
  a model that cannot be tested (no predictions on one side, other test images)
  still counts as changed, with the reason.
- ``machine_note``: floating-point results are bit-identical only on the same
  kind of machine (CPU model, ISA flags, TensorFlow version), so the report says
  plainly when base and head differ there.
"""

from __future__ import annotations

from pipeline import config
from pipeline.evaluation import report
from pipeline import runtime
from pipeline.evaluation import stats

PREDICTIONS = config.PREDICTIONS_FILE.as_posix()
CONFUSION = config.CONFUSION_DIR.as_posix()

Predictions = tuple[list[int], dict[str, list[int]]]  # (labels, {model: predicted classes})


def load_predictions(text_of, names: list[str]) -> Predictions | None:
    """Labels and each model's predictions at one revision; ``text_of(path)`` reads a file."""
    text = text_of(PREDICTIONS)
    if text:
        return report.read_predictions_csv(text)
    labels, preds = None, {}
    for name in names:  # older runs: one confusion CSV per model, rows in test-set order
        text = text_of(f"{CONFUSION}/{name}.csv")
        if not text:
            continue
        rows = [line.split(",") for line in text.strip().splitlines()[1:]]
        y = [int(r[0]) for r in rows]
        if labels is not None and y != labels:
            continue
        labels, preds[name] = y, [int(r[1]) for r in rows]
    return (labels, preds) if labels is not None else None


def paired_tests(old: Predictions | None, new: Predictions | None,
                 names: list[str]) -> dict[str, stats.Paired | str]:
    """Per model: McNemar's exact test, or the reason there is none."""
    out: dict[str, stats.Paired | str] = {}
    for name in names:
        if old is None or name not in old[1]:
            out[name] = "no per-image predictions at the base revision"
        elif new is None or name not in new[1]:
            out[name] = "no per-image predictions in the compared run"
        elif old[0] != new[0]:
            out[name] = "the two runs tested different images"
        else:
            out[name] = stats.paired(old[0], old[1][name], new[1][name])
    return out


def significant(tests: dict[str, stats.Paired | str]) -> list[str]:
    """Models whose change is real, or cannot be tested (so it is not called noise)."""
    return [n for n, t in tests.items() if not isinstance(t, stats.Paired) or t.significant]


def words(test: stats.Paired | str) -> str:
    if isinstance(test, stats.Paired):
        if not test.fixed and not test.broken:
            return "the same prediction on every test image"
        return test.words()
    return f"no paired test: {test}"


def machine_note(old: dict | None, new: dict | None) -> str | None:
    """A sentence when base and head may have run on different kinds of machine, else None."""
    if runtime.machine_kind(old) == runtime.machine_kind(new):
        return None
    if not old or not new:
        side = "the base" if not old else "the compared run"
        return (f"{side} records no machine (it predates machine records), so whether both "
                "ran on the same kind of machine is unknown; differences of a few images can "
                "come from the CPU alone.")
    return (f"**Base and head ran on different kinds of machine** ({describe(old)} vs "
            f"{describe(new)}). Floating-point results are bit-identical only on the same "
            "kind of machine: expect differences of a few images even with the same commit "
            "and params, and trust only the significant ones.")


def describe(machine: dict) -> str:
    chosen = f", {machine['kernels']} kernels" if machine.get("kernels") else ""
    return (f"{machine.get('cpu_model', '?')}, {machine.get('isa_flags') or 'no listed ISA flags'}"
            f"{chosen}, TensorFlow {machine.get('tensorflow', '?')}")


def section(tests: dict[str, stats.Paired | str]) -> list[str]:
    """The report's "Is it real?" section."""
    if not tests:
        return []
    lines = ["## Is it real? Paired test on the same test images", "",
             "McNemar's exact test: of the test images on which the two runs disagree, "
             "*fixed* = wrong before and right now, *broken* = the reverse; with no real "
             "difference each is a coin flip. Significant = p < 0.05 (two-sided). "
             "Only significant changes count as changed in the summary.", ""]
    lines += [f"- **{n}**: {words(t)}" for n, t in tests.items()]
    return lines + [""]
