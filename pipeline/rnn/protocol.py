"""The protocol's arithmetic: steps, validation checks, patience, learning rate; and
the record of the best check so far.

Why apart from ``pipeline.stages.train``: these are pure functions of the params and
the data's size, which tests and the benchmark use without training, and a small
state file (``BestTracker``) that tests can resume without training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline import config
from pipeline import runtime

STEPS_PER_CALL = 110  # training steps per call into TensorFlow, at most (pipeline.stages.train)


def schedule(cfg: config.TrainConfig, total_steps: int):
    """Adam's learning rate: the tutorial's constant, or warm-up + cosine decay."""
    import keras

    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    if cfg.warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, alpha=cfg.lr_final_ratio,
            warmup_target=cfg.learning_rate, warmup_steps=cfg.warmup_steps)
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps, alpha=cfg.lr_final_ratio)


def plan(cfg: config.TrainConfig, n_train: int) -> dict:
    """Steps, validation checks and early-stop patience for ``n_train`` images.

    ``checks`` validations, every ``steps_per_check`` steps and at the end: the
    last check covers ``last_check_steps`` (<= steps_per_check) so that exactly
    ``total_steps`` run.
    """
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    every = min(cfg.validate_every_steps, total_steps)
    checks = math.ceil(total_steps / every)
    last = total_steps - (checks - 1) * every
    return {"steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "steps_per_check": every, "checks": checks, "last_check_steps": last,
            # "no better val accuracy for early_stop_steps steps", in checks
            "patience": math.ceil(cfg.early_stop_steps / every),
            "steps_per_call": steps_per_call(math.gcd(every, last))}


def steps_per_call(steps: int) -> int:
    """Keras' ``steps_per_execution``: the largest divisor of ``steps`` (every
    check's length) up to ``STEPS_PER_CALL``, so that no check overruns."""
    return max(d for d in range(1, min(steps, STEPS_PER_CALL) + 1) if steps % d == 0)


def step_of_check(check: int, p: dict) -> int:
    """Training steps done when validation check ``check`` (1-based) ran."""
    return min(check * p["steps_per_check"], p["total_steps"])


def epoch_of_check(check: int, p: dict) -> float:
    """The real epoch (fractional) at which check ``check`` ran."""
    return round(step_of_check(check, p) / p["steps_per_epoch"], 2)


class BestTracker:
    """The best val accuracy so far and when the reference's was first reached, kept
    in ``path`` so that a resumed training goes on counting (Keras' callbacks don't).

    ``reached_s``: training seconds when validation first reached ``reference`` (the
    tutorial's best val accuracy), None until then: the "time to the tutorial's
    accuracy" of the runtime reports.
    """

    def __init__(self, path: Path, reference: float | None = None):
        self.path, self.reference = Path(path), reference
        state = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.best = state.get("best_val_accuracy")
        self.best_check = state.get("best_check")
        self.elapsed_s = state.get("elapsed_s", 0.0)
        self.last_check = state.get("last_check", 0)
        self.reached_s = state.get("reached_s")

    def update(self, check: int, val_acc: float, elapsed_s: float) -> None:
        if self.best is None or val_acc > self.best:
            self.best, self.best_check = val_acc, check
        if self.reached_s is None and self.reference is not None and val_acc >= self.reference:
            self.reached_s = elapsed_s
        self.elapsed_s, self.last_check = elapsed_s, check
        runtime.write_json(self.path, {"best_val_accuracy": self.best, "last_check": check,
                                       "best_check": self.best_check, "elapsed_s": elapsed_s,
                                       "reached_s": self.reached_s})
