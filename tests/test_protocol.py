"""protocol: the tutorial's recipe (epochs, a check every N steps, patience in steps)
turned into the exact steps, checks and calls into TensorFlow that train runs.

Pure arithmetic on the real params.yaml and variations of it: no data and no
training, so a wrong step count is caught in milliseconds, not after a run.
"""

import dataclasses
import math

import pytest

from pipeline import config
from pipeline.rnn import protocol


def test_plan_turns_the_tutorial_protocol_into_checks():
    cfg = config.load().train  # real params: 55,000 images, batch 100
    p = protocol.plan(cfg, 55_000)
    assert p["steps_per_epoch"] == 550
    assert p["steps_per_check"] == 550 and p["checks"] == cfg.epochs
    # 2,000 steps without improvement = 4 checks of 550 steps (2,200 >= 2,000)
    assert p["patience"] == 4
    every_10 = protocol.plan(dataclasses.replace(cfg, validate_every_steps=10), 55_000)
    assert every_10["patience"] == 200 and every_10["checks"] == 55 * cfg.epochs
    assert p["steps_per_call"] == 110 and every_10["steps_per_call"] == 10


@pytest.mark.parametrize("samples, batch, epochs, every, total, checks, last, epoch_of_last", [
    # the case: 20,000 images, 4 epochs of 200 steps, a check every 550 steps
    (20_000, 100, 4, 550, 800, 2, 250, 4.0),
    (55_000, 100, 20, 550, 11_000, 20, 550, 20.0),   # the default: one check per epoch
    (55_000, 100, 2, 10, 1_100, 110, 10, 2.0),       # the tutorial's every-10-steps
    (120, 50, 3, 4, 9, 3, 1, 3.0),                   # 3 steps/epoch: checks at 4, 8 and 9
    (120, 50, 3, 100, 9, 1, 9, 3.0),                 # a check rarer than the whole run
    (101, 100, 1, 1, 2, 2, 1, 1.0),                  # a partial last batch is one more step
])
def test_plan_runs_exactly_the_steps_the_params_imply(samples, batch, epochs, every, total,
                                                      checks, last, epoch_of_last):
    cfg = dataclasses.replace(config.load().train, batch_size=batch, epochs=epochs,
                              validate_every_steps=every, max_train_samples=samples)
    p = protocol.plan(cfg, samples)
    assert p["total_steps"] == total == epochs * -(-samples // batch)
    assert (p["checks"], p["last_check_steps"]) == (checks, last)
    # whole calls into TensorFlow fill every check exactly
    assert every_check_is_whole_calls(p)
    assert (p["checks"] - 1) * p["steps_per_check"] + p["last_check_steps"] == total
    assert protocol.step_of_check(p["checks"], p) == total
    assert protocol.epoch_of_check(p["checks"], p) == epoch_of_last == epochs


def every_check_is_whole_calls(p: dict) -> bool:
    return p["steps_per_check"] % p["steps_per_call"] == 0 == p["last_check_steps"] % p["steps_per_call"]


@pytest.mark.parametrize("check, last, per_call", [
    (550, 550, 110),  # the default: an epoch in 5 calls
    (10, 10, 10),     # the tutorial's check every 10 steps
    (500, 250, 50), (4, 1, 1), (97, 97, 97), (550, 275, 55),
])
def test_a_call_runs_the_most_steps_that_fit_every_check(check, last, per_call):
    assert protocol.steps_per_call(math.gcd(check, last)) == per_call <= protocol.STEPS_PER_CALL


def test_best_epoch_is_a_real_epoch():
    cfg = dataclasses.replace(config.load().train, epochs=4, validate_every_steps=550)
    p = protocol.plan(cfg, 20_000)
    assert [protocol.epoch_of_check(c, p) for c in (1, 2)] == [2.75, 4.0]  # never 5.5


def test_cosine_schedule_decays_to_the_final_ratio():
    cfg = config.load().train
    lr = protocol.schedule(cfg, 1000)
    assert float(lr(0)) == pytest.approx(cfg.learning_rate)
    assert float(lr(1000)) == pytest.approx(cfg.learning_rate * cfg.lr_final_ratio)
    assert protocol.schedule(dataclasses.replace(cfg, lr_schedule="constant"), 1000) == cfg.learning_rate


def test_the_tracker_keeps_the_best_and_when_the_reference_was_first_reached(tmp_path):
    """Time to the tutorial's accuracy: the training seconds at the first check whose
    val accuracy reaches the reference, kept across a resume (a new tracker on the file)."""
    from pipeline.rnn.protocol import BestTracker

    t = BestTracker(tmp_path / "best.json", reference=0.99)
    t.update(1, 0.98, 10.0)
    assert t.reached_s is None and t.best == 0.98
    t.update(2, 0.991, 21.5)
    again = BestTracker(tmp_path / "best.json", reference=0.99)  # a resumed training
    again.update(3, 0.995, 33.0)
    again.update(4, 0.993, 44.0)
    assert again.reached_s == 21.5 and again.best == 0.995 and again.best_check == 3
    assert again.elapsed_s == 44.0 and again.last_check == 4
    assert BestTracker(tmp_path / "none.json", reference=None).reached_s is None
