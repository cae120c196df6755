"""Stage ``train@<model>``: train one classifier, keep its best checkpoint.

Params: ``train`` (shared protocol) and ``models.<model>`` (architecture).
Input: ``data/split/``.
Outputs: ``models/checkpoints/<model>.keras`` (best validation accuracy; a
persistent DVC output), ``metrics/train/<model>/`` (dvclive: per-check
metrics, curves, and a summary with the best validation accuracy, the check it
came from, wall time and parameter count).

The protocol is the tutorial's (Adam, batch 100, best-validation checkpoint,
early stop after ``early_stop_steps`` steps without a better validation
accuracy) with two deliberate knobs: validation runs every
``validate_every_steps`` instead of every 10 steps (Keras "virtual epochs"), and
the learning rate can decay (cosine) so the last epochs refine instead of
bouncing around the optimum. ``train.kernel`` picks who runs the recurrent
layers, ``train.precision`` their products' precision and ``train.batch_parts``
how many parts of each batch run side by side (``pipeline.rnn.kernels``); the maths
is the same either way, the rounding not.

Keras runs ``steps_per_call`` steps per call into TensorFlow
(``steps_per_execution``; ``protocol.plan``: 110 of an epoch's 550, and always a
divisor of every check): Python's fit loop and the callbacks run between calls,
not between steps (``bench/probe.py steps-per-call``, AMD EPYC, 2 cores: BiLSTM 4,143
images/s at 25 steps per call against 3,603 at one). The maths is the same:
the weights come out bit-identical (tested).
Per-batch callbacks see each call's last step, so TerminateOnNaN stops a
diverging run at the end of the call in which its loss first became NaN.

The step budget is exact: ``epochs * ceil(samples / batch_size)`` steps, where
samples is ``max_train_samples`` when set. Validation runs every
``validate_every_steps`` steps and once more at the very end, so the last check
may be shorter than the others; epochs in the summary are real epochs (best
step / steps per epoch), never counts of checks.

A checkpoint is only ever replaced by a *finished* run: training writes to
``tmp/train/<model>/`` and the new file is moved into place at the end. A killed
run leaves the old checkpoint as it was; the next run resumes from Keras'
``BackupAndRestore`` state when the params and data are unchanged, and starts
over when they are not. The dvclive folder is written inside that scratch
folder too and moved to ``metrics/train/<model>/`` at the end, because DVC
deletes a stage's metrics and plots before rerunning it: a resumed run's curves
and summary then show every check, as an uninterrupted run's do. With
``PIPELINE_RESUME_SNAPSHOT`` set, that folder is also packed into the file it
names after every check, for a retry on another worker
(``pipeline/orchestration/resume.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

from pipeline import config
from pipeline.rnn import inputs
from pipeline import runtime
from pipeline.data import arrays
from pipeline.rnn.protocol import BestTracker, epoch_of_check, plan, schedule, step_of_check
from pipeline.runtime import StageError

log = logging.getLogger("pipeline.stages.train")
WORK_ROOT = Path("tmp/train")
# Set by pipeline/orchestration/resume.py: after each check, pack() the work folder there.
SNAPSHOT_ENV = "PIPELINE_RESUME_SNAPSHOT"


def pack(work: Path, target: Path) -> None:
    """The work folder as one tar file at ``target``: written beside it, then moved."""
    part = target.with_name(target.name + ".part")
    with tarfile.open(part, "w") as tar:
        for item in sorted(work.iterdir()):
            tar.add(item, arcname=item.name)
    os.replace(part, target)


def _keep_history(live_dir: Path, done: int) -> None:
    """Drop dvclive rows of checks after ``done`` (a kill may have logged one the
    backup had not recorded; it is replayed)."""
    for tsv in (live_dir / "plots" / "metrics").glob("**/*.tsv"):
        lines = tsv.read_text().splitlines()
        step_col = lines[0].split("\t").index("step") if lines else 0
        kept = [lines[0]] + [l for l in lines[1:] if int(l.split("\t")[step_col]) < done]
        tsv.write_text("\n".join(kept) + "\n")


def _checks_done(backup_dir: Path) -> int:
    """Checks that Keras' BackupAndRestore recorded as finished (0 = fresh start)."""
    meta = backup_dir / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text()).get("epoch", 0))
    except (OSError, ValueError):
        return 0


def fingerprint(name: str, params: config.Params, split_dir: Path) -> str:
    """What a resumable state must match: this model's params and the data."""
    h = hashlib.sha256(repr((params.train, params.models[name])).encode())
    for part in ("train", "val"):
        h.update((Path(split_dir) / f"{part}.npz").read_bytes())
    return h.hexdigest()


def compiled(name: str, params: config.Params, total_steps: int, steps_per_call: int = 1):
    """Seeded, deterministic, compiled model for ``name``: what the stage trains
    (and what bench/train_speed.py times as the project's path)."""
    import keras
    import tensorflow as tf

    from pipeline.rnn import adam, heap
    from pipeline.rnn import kernels
    from pipeline.rnn import model as model_lib
    from pipeline.rnn import side_by_side

    heap.keep_freed_memory()  # each step's buffers reused, not faulted in again
    cfg = params.train
    chosen = kernels.choose(params.models[name], cfg)
    side_by_side.set_threads(chosen.n_parts)  # before TensorFlow's first op
    log.info("train@%s: %s", name, chosen.describe())
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()  # same params -> same metrics
    net = model_lib.build(params.models[name], params.dataset.image_shape,
                          params.dataset.num_classes, name, kernel=chosen.kernel,
                          n_parts=chosen.n_parts, bf16=chosen.bf16)
    if chosen.n_parts > 1:
        net = side_by_side.SideBySide(net, chosen.n_parts)
    optimizer = adam.FusedAdam(schedule(cfg, total_steps), clipnorm=cfg.clipnorm or None,
                               name="adam")  # not adam_1 for a second model in-process
    net.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                steps_per_execution=steps_per_call)
    return net


def run(name: str, params: config.Params, split_dir: Path = config.SPLIT_DIR,
        checkpoint: Path | None = None, log_dir: Path | None = None,
        work_dir: Path | None = None) -> dict:
    if name not in params.models:
        raise StageError(f"params.yaml: models.{name}: no such model "
                         f"(have {', '.join(params.models)})")
    checkpoint = Path(checkpoint or config.MODELS_DIR / "checkpoints" / f"{name}.keras")
    log_dir = Path(log_dir or config.TRAIN_LOG_DIR / name)
    work = Path(work_dir or WORK_ROOT / name)

    import keras
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from pipeline.rnn import model as model_lib

    cfg = params.train
    x_train, y_train = arrays.load(split_dir, "train")
    x_val, y_val = arrays.load(split_dir, "val")
    if cfg.max_train_samples:
        x_train, y_train = x_train[: cfg.max_train_samples], y_train[: cfg.max_train_samples]
    p = plan(cfg, len(x_train))

    # A leftover state from other params or data cannot be resumed: start over.
    stamp = fingerprint(name, params, split_dir)
    stamp_file = work / "fingerprint"
    if work.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        log.info("train@%s: discarding an interrupted run made with other params/data", name)
        shutil.rmtree(work)
    resuming = (work / "backup").exists()
    work.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    live_dir = work / "live"  # moved to log_dir when training ends (see the docstring)
    done = _checks_done(work / "backup") if resuming else 0
    if not resuming:
        shutil.rmtree(live_dir, ignore_errors=True)

    net = compiled(name, params, p["total_steps"], p["steps_per_call"])
    if not resuming:
        net.summary(print_fn=lambda line, **_: log.info(line))
    log.info("train@%s: x_train %s, x_val %s, %s%s", name, x_train.shape, x_val.shape, p,
             " (resuming)" if resuming else "")

    reference = params.dataset.references.get(name)  # the tutorial's, where known
    tracker = BestTracker(work / "best.json", reference.val_accuracy if reference else None)
    work_ckpt = work / "best.keras"
    started = time.perf_counter()

    class _Track(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracker.update(epoch + 1, float(logs["val_accuracy"]),
                           tracker_base + time.perf_counter() - started)

    class _StepBudget(keras.callbacks.Callback):
        """Stop after exactly total_steps; Keras still validates that last, short check.
        Only needed (and installed) when the last check is short."""
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) >= p["total_steps"]:
                self.model.stop_training = True

    tracker_base = tracker.elapsed_s
    live = Live(dir=str(live_dir), resume=resuming, save_dvc_exp=False, dvcyaml=None,
                report=None)
    if resuming:  # continue the curves after the last finished check
        _keep_history(live_dir, done)
        live.step = done
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        *([_StepBudget()] if p["last_check_steps"] < p["steps_per_check"] else []),
        # Order matters: the tracker, checkpoint and dvclive see an epoch before the
        # backup records it as done, so a kill in between replays that epoch (and
        # _keep_history drops the replayed epoch's first rows).
        keras.callbacks.ModelCheckpoint(
            work_ckpt, monitor="val_accuracy", mode="max", save_best_only=True,
            initial_value_threshold=tracker.best),
        _Track(),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                      patience=p["patience"]),
        DVCLiveCallback(live=live),
        keras.callbacks.BackupAndRestore(str(work / "backup")),
        *([keras.callbacks.LambdaCallback(   # after the backup, so the pack holds it
            on_epoch_end=lambda *_: pack(work, Path(os.environ[SNAPSHOT_ENV])))]
          if os.environ.get(SNAPSHOT_ENV) else []),
    ]
    history = net.fit(
        inputs.training(x_train, y_train, cfg), epochs=p["checks"],
        steps_per_epoch=p["steps_per_check"], validation_data=inputs.validation(x_val, y_val),
        callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 2)

    losses = history.history.get("loss", [])
    if losses and not all(math.isfinite(v) for v in losses):
        live.end()
        raise StageError(f"train@{name}: training diverged (loss became NaN); "
                         f"{checkpoint} was left as it was")
    if not work_ckpt.exists():
        raise StageError(f"train@{name}: no checkpoint was written; {checkpoint} left as it was")

    from pipeline.rnn import kernels

    checks_run = tracker.last_check
    summary = {
        "best_val_accuracy": round(tracker.best, 6),
        "best_check": tracker.best_check,
        "best_epoch": epoch_of_check(tracker.best_check, p),
        "best_step": step_of_check(tracker.best_check, p),
        "checks_run": checks_run,
        "steps_run": int(net.optimizer.iterations),
        "epochs_run": epoch_of_check(checks_run, p),
        "early_stopped": checks_run < p["checks"],
        "wall_time_s": round(tracker.elapsed_s, 1),
        "seconds_per_epoch": round(tracker.elapsed_s / epoch_of_check(checks_run, p), 1),
        **({"seconds_to_reference_val": round(tracker.reached_s, 1)}
           if tracker.reached_s is not None else {}),
        "params": int(net.count_params()),
        "arithmetic": kernels.choose(params.models[name], params.train).describe(),
    }
    live.summary.update(summary)
    live.make_summary()
    live.end()

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    # Checkpoints hold Keras' stock layers, whatever kernel trained them (model.stock_copy).
    model_lib.stock_copy(model_lib.load(work_ckpt), params.models[name]).save(work / "stock.keras")
    runtime.stable_keras_copy(work / "stock.keras", work / "final.keras")  # no save time inside
    (work / "final.keras").replace(checkpoint)  # atomic: same filesystem
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(live_dir), log_dir)
    shutil.rmtree(work)
    log.info("train@%s: best val accuracy %.4f at check %d; %s written", name,
             tracker.best, tracker.best_check, checkpoint)
    return summary


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.stages.train <model name from params.yaml>")
    name = sys.argv[1]
    runtime.stage_main(f"train@{name}", lambda: run(name, config.load()),
                       record_as=f"train-{name}")


if __name__ == "__main__":
    main()
