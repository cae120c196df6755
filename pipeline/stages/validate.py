"""Stage ``validate``: check the raw IDX files before anything trains on them.

Why: the fetch stage proves the bytes are the published ones, but a new entry
in ``datasets`` (or a hand-placed mirror) can still hold wrong shapes, stray
labels, a missing class or test images leaked into training, and each of those
costs a full training run before it shows up as a strange accuracy. A Great
Expectations suite names the broken property instead, and its Data Docs keep
the evidence next to the metrics.

Drift: data can pass every expectation and still differ from the data the
champion was trained on (a class gone, darker or turned digits). So the
training file's profile (``pipeline/data/drift.py``) is compared with the one
beside the champion (``profile.json`` in ``publish.champion_dir``, else in
``models/best``): beyond ``validate.drift``'s thresholds the stage stops with
one line naming the statistic, or with ``on_drift: flag`` goes on and says so.

Params: ``validate`` (class_share_min/max, max_duplicate_share, pixel_min/max,
drift), ``fetch.dataset`` and ``datasets`` (file names, counts, image_shape,
num_classes).
Inputs: ``data/raw/*.gz``; the champion's ``profile.json`` (not a DVC dep: the
champion is made downstream; the Airflow task brings the published one).
Outputs: ``reports/validation/`` (GX Data Docs HTML, ``index.html``; the drift
page ``drift.md`` + ``drift.png``; ``profile.json``, the data's profile, which
evaluate keeps beside the champion) and ``metrics/validate.json`` (a summary
with a ``drift`` block; ``split`` refuses data whose ``success`` is false).
Both are written on failure too, since they explain it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

# GX phones home unless told not to; the pipeline runs offline.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.checkpoint import UpdateDataDocsAction  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig)
from great_expectations.expectations.row_conditions import Column  # noqa: E402

from pipeline import config  # noqa: E402
from pipeline.data import drift, drift_report, idx
from pipeline import runtime
from pipeline.runtime import StageError  # noqa: E402

log = logging.getLogger("pipeline.stages.validate")
# stage_main logs at INFO; GX's INFO lines (config dumps) would drown ours.
logging.getLogger("great_expectations").setLevel(logging.WARNING)
SPLITS = ("train", "test")
SITE = "validate"


def _pad(values: np.ndarray, n: int) -> np.ndarray:
    """Lengthen with NaN so a short file shows up as nulls, not as a crash."""
    if len(values) == n:
        return values
    out = np.full(n, np.nan)
    out[: len(values)] = values
    return out


def _split_frame(images: idx.IdxArray, labels: idx.IdxArray, split: str) -> pd.DataFrame:
    data = images.data
    flat = data.reshape(len(data), int(np.prod(data.shape[1:], dtype=np.int64)))
    # Odd dimensions are reported by the suite (rows/cols/magic), so keep going.
    rows = data.shape[1] if data.ndim > 1 else np.nan
    cols = data.shape[2] if data.ndim > 2 else np.nan
    # A labels file with extra dimensions (wrong magic) still gives one label per row.
    label = labels.data.reshape(len(labels.data), -1)[:, 0] if labels.data.size else np.empty(0)
    if flat.shape[1] == 0:  # a zero in the image dims: no pixels to take min/max of
        flat = np.full((len(flat), 1), np.nan)
    n = max(len(flat), len(label))
    return pd.DataFrame({
        "split": split,
        "label": _pad(label, n),
        "pixel_min": _pad(flat.min(axis=1), n),
        "pixel_max": _pad(flat.max(axis=1), n),
        "rows": _pad(np.full(len(flat), rows), n),
        "cols": _pad(np.full(len(flat), cols), n),
        "images_magic": images.magic,
        "labels_magic": labels.magic,
        # 8-byte BLAKE2b of the pixels: exact duplicates share a digest (a
        # collision among 70k images is ~1e-10 likely). ~70 ms for MNIST.
        "digest": [hashlib.blake2b(r.tobytes(), digest_size=8).hexdigest() for r in flat]
        + [None] * (n - len(flat)),
    })


def build_frame(raw_dir: Path, dataset: config.DatasetConfig) -> pd.DataFrame:
    """One row per image of both splits; raises IdxError on unreadable files."""
    parts = []
    for split in SPLITS:
        images = idx.read(Path(raw_dir) / dataset.file_name(f"{split}_images"))
        labels = idx.read(Path(raw_dir) / dataset.file_name(f"{split}_labels"))
        parts.append(_split_frame(images, labels, split))
    frame = pd.concat(parts, ignore_index=True)
    per_class = frame.groupby(["split", "label"])["label"].transform("size")
    per_split = frame.groupby("split")["split"].transform("size")
    frame["class_share"] = per_class / per_split
    return frame


def build_suite(params: config.Params) -> gx.ExpectationSuite:
    ds, v = params.dataset, params.validate
    classes = list(range(ds.num_classes))
    mostly = 1.0 - v.max_duplicate_share
    checks = [gxe.ExpectColumnValuesToNotBeNull(column=c)
              for c in ("label", "pixel_min", "pixel_max", "digest")]
    checks += [
        gxe.ExpectColumnValuesToBeInSet(column="images_magic", value_set=[idx.IMAGES_MAGIC]),
        gxe.ExpectColumnValuesToBeInSet(column="labels_magic", value_set=[idx.LABELS_MAGIC]),
        gxe.ExpectColumnValuesToBeInSet(column="rows", value_set=[ds.image_shape[0]]),
        gxe.ExpectColumnValuesToBeInSet(column="cols", value_set=[ds.image_shape[1]]),
        gxe.ExpectColumnMinToBeBetween(column="pixel_min", min_value=v.pixel_min),
        gxe.ExpectColumnMaxToBeBetween(column="pixel_max", max_value=v.pixel_max),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
        gxe.ExpectColumnValuesToBeBetween(column="class_share", min_value=v.class_share_min,
                                          max_value=v.class_share_max),
    ]
    for split, count in (("train", ds.train_count), ("test", ds.test_count)):
        in_split = Column("split") == split
        checks += [
            # Table-level docs do not show row_condition, so say which split.
            gxe.ExpectTableRowCountToEqual(value=count, row_condition=in_split,
                                           description=f"{split} split: exactly {count} rows"),
            # ContainSet, not EqualSet: labels outside the set are caught above,
            # and EqualSet's failure result crashes GX 1.24's Data Docs renderer.
            gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes,
                                                       row_condition=in_split),
            gxe.ExpectColumnValuesToBeUnique(column="digest", mostly=mostly,
                                             row_condition=in_split),
        ]
    # Over both splits it also counts test images that appear in train (leakage).
    checks.append(gxe.ExpectColumnValuesToBeUnique(column="digest", mostly=mostly))
    # Passed at construction: add_expectation() would demand an active GX context.
    return gx.ExpectationSuite(name=f"raw_{params.fetch.dataset}", expectations=checks)


def duplicate_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Extra copies within each split, and test images also found in train."""
    digests = {s: frame.loc[frame["split"] == s, "digest"].dropna() for s in SPLITS}
    counts = {f"within_{s}": int(d.duplicated().sum()) for s, d in digests.items()}
    counts["cross"] = int(digests["test"].isin(set(digests["train"])).sum())
    return counts


def _validate(frame: pd.DataFrame, suite: gx.ExpectationSuite, docs_dir: Path):
    """Run the suite through a Checkpoint so Data Docs get built alongside."""
    # In-memory stores, analytics and progress bars off, and only our docs site:
    # the default ephemeral config would also point a site at a stray temp dir.
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(), data_docs_sites={SITE: site},
        analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False)))
    batch = (context.data_sources.add_pandas("raw")
             .add_dataframe_asset("images")
             .add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="raw_images", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="validate", validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="docs", site_names=[SITE])]))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return next(iter(result.run_results.values()))


def _describe(res) -> str:
    """One line: expectation, column/condition, what was observed."""
    kw = res.expectation_config.kwargs
    cond = kw.get("row_condition")
    if isinstance(cond, dict) and "operator" in cond:  # Column("split") == "train"
        cond = f"{cond['column']['name']} {cond['operator']} {cond['parameter']!r}"
    where = ", ".join(str(x) for x in (kw.get("column"), cond) if x)
    r = res.result or {}
    if res.exception_info.get("raised_exception"):
        seen = f"error: {res.exception_info.get('exception_message')}"
    elif r.get("observed_value") is not None:
        seen = f"observed {r['observed_value']}"
    elif r.get("missing_count"):
        seen = f"missing {[_plain(x) for x in r.get('partial_missing_list', [])]}"
    else:
        seen = (f"{r.get('unexpected_count')} unexpected of {r.get('element_count')} "
                f"({r.get('unexpected_percent', 0):.3g}%)")
        examples = [_plain(x) for x in r.get("partial_unexpected_list", []) if not pd.isna(x)]
        if examples:  # nulls say nothing; repeated digests say it once
            seen += f", e.g. {list(dict.fromkeys(examples))[:5]}"
    return f"  {res.expectation_config.type}({where}): {seen}"


def _plain(x):
    """numpy scalars print as np.uint8(10) in lists; show just the value."""
    x = x.item() if hasattr(x, "item") else x
    return round(x, 4) if isinstance(x, float) else x


def _num(x) -> float | None:
    return None if pd.isna(x) else round(float(x), 4)


def train_profile(raw_dir: Path, params: config.Params) -> dict:
    """The drift profile of the training file, with its dataset and every raw file's sha256."""
    ds, raw_dir = params.dataset, Path(raw_dir)
    read = lambda role: idx.read(raw_dir / ds.file_name(role)).data  # noqa: E731
    files = {ds.file_name(r): hashlib.sha256((raw_dir / ds.file_name(r)).read_bytes()).hexdigest()
             for r in config.FILE_ROLES}
    return {"dataset": params.fetch.dataset, "files": files,
            **drift.profile(read("train_images"), read("train_labels"), ds.num_classes)}


def run(params: config.Params, raw_dir: Path = config.RAW_DIR,
        docs_dir: Path = config.VALIDATION_DOCS_DIR,
        metrics_path: Path = config.VALIDATION_METRICS, references=None) -> dict:
    """``references``: champion folders to take the drift reference from, first found wins
    (default: ``publish.champion_dir``, then ``models/best``)."""
    # A stale "success" from an earlier run must not outlive a failed one:
    # split trusts this file.
    Path(metrics_path).unlink(missing_ok=True)
    frame = build_frame(raw_dir, params.dataset)
    docs_dir = Path(docs_dir)
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    references = (params.publish.champion_dir, config.CHAMPION_DIR) if references is None \
        else references
    # Build the docs aside and swap them in, so old pages never mix with new.
    scratch = Path(tempfile.mkdtemp(dir=docs_dir.parent, prefix=f".{docs_dir.name}-"))
    try:
        result = _validate(frame, build_suite(params), scratch)
        block = {"checked": False, "reason": "the expectations failed: drift not checked"}
        if result.success:   # a profile needs well-formed files
            new, found = train_profile(raw_dir, params), drift.find_reference(references)
            block = drift.block(params.validate.drift, new, found)
            runtime.write_json(scratch / "profile.json", new)
            drift_report.write(scratch, block, found and found[1], new)
        shutil.rmtree(docs_dir, ignore_errors=True)
        scratch.replace(docs_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stats = result.statistics
    splits = frame.groupby("split")
    stopped = block.get("passed") is False and not block["flagged"]
    summary = {
        "dataset": params.fetch.dataset, "success": bool(result.success) and not stopped,
        "expectations_evaluated": int(stats["evaluated_expectations"]),
        "expectations_failed": int(stats["unsuccessful_expectations"]),
        "images": {s: int(splits["pixel_min"].count().get(s, 0)) for s in SPLITS},
        "labels": {s: int(splits["label"].count().get(s, 0)) for s in SPLITS},
        "duplicates": duplicate_counts(frame),
        "class_share_min": _num(frame["class_share"].min()),
        "class_share_max": _num(frame["class_share"].max()),
        "drift": block,
    }
    runtime.write_json(metrics_path, summary)
    if stopped:
        raise StageError(f"drift in {raw_dir} against the champion's data in "
                         f"{block['reference']['from']}: {drift.failures(block['statistics'])}; "
                         f"see {docs_dir / 'drift.md'} (validate.drift.on_drift: flag goes on)")
    if not result.success:
        failed = [_describe(r) for r in result.results if not r.success]
        raise StageError("\n".join(
            [f"{summary['expectations_failed']} of {summary['expectations_evaluated']} "
             f"expectations failed on {raw_dir} ({params.fetch.dataset}); "
             f"details in {docs_dir / 'index.html'}", *failed]))
    log.info("validate: %d expectations passed on %s (%s); drift: %s",
             summary["expectations_evaluated"], raw_dir, params.fetch.dataset,
             block.get("reason") or (drift.failures(block["statistics"]) + ", flagged"
                                     if block["flagged"] else "none"))
    return summary


def main() -> None:
    runtime.stage_main("validate", lambda: run(config.load()))


if __name__ == "__main__":
    main()
