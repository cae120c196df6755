"""The C++ op refuses every bad input with an error naming it, never a crash or a
write past a buffer: each op, each cell, eager and in graphs (tests/op_cases.py,
in a subprocess, so that a crash fails here instead of killing pytest)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import native_support

CASES = Path(__file__).with_name("op_cases.py")


@pytest.fixture(scope="module")
def results():
    native_support.ops()  # built here first (or the reason): the subprocess loads it
    done = subprocess.run([sys.executable, str(CASES)], capture_output=True, text=True,
                          cwd=native_support.ROOT, timeout=600,
                          env={**native_support.os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def _one(results, mode, op, cell, case):
    [row] = [r for r in results if (r["mode"], r["op"], r["cell"], r["case"]) == (mode, op, cell, case)]
    return row


def _where(r) -> str:
    return f"{r['mode']} {r['op']} {r['cell']} {r['case']}: {r['error']}: {r['message'][-400:]}"


def test_every_bad_input_is_refused_naming_it(results):
    bad = [r for r in results if r["kind"] == "bad" and r["mode"] != "tensorflow"]
    assert len(bad) == 3 * 4 * (20 + 30)  # modes x cells x (forward's + backward's cases)
    for r in bad:
        # the shape function's errors reach Python as ValueError when the graph is built
        static = r["mode"] == "graph" and not r["case"].endswith("float64")
        where = _where(r)
        assert r["error"] == ("ValueError" if static else "InvalidArgumentError"), where
        assert f"{r['op']}: {r['input']} must be " in r["message"], where


def test_valid_inputs_run_and_the_shape_functions_give_the_outputs_shapes(results):
    b, t, f, h = 3, 4, 5, 6
    valid = [r for r in results if r["kind"] == "valid"]
    assert len(valid) == 3 * 4 * 2  # modes x cells x ops
    for r in valid:
        g = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}[r["cell"]] * h
        s = {"relu": 0, "tanh": 0, "lstm": 6, "gru": 4}[r["cell"]] * h
        want = ([[b, t, h], [t, b, s]] if r["op"] == "FusedRnnForward" else
                [[b, t, f], [f, g], [g], [h, g], [g if r["cell"] == "gru" else 0]])
        assert r["error"] is None and r["shapes"] == want, r


def test_a_dimension_past_int_max_is_refused_even_in_an_empty_input(results):
    """x (2^31, 0, 5) has no element, so no buffer is too large; narrowed to int,
    its B was negative and TensorFlow aborted the process. Refused, by name."""
    huge = [r for r in results if r["kind"] == "huge"]
    assert len(huge) == 3 * 4 * 2 * 2  # modes x cells x ops x (B, T)
    for r in huge:
        static = r["mode"] == "graph"  # the shape function's refusal
        assert r["error"] == ("ValueError" if static else "InvalidArgumentError"), _where(r)
        got = "(2147483648, 0, " if r["case"].startswith("B 2^31") else "(0, 2147483648, "
        assert (f"{r['op']}: {r['input']} must be at most 2^31 - 1 = 2147483647 in each "
                f"dimension, got {got}") in r["message"], _where(r)


def test_empty_sizes_give_empty_outputs_and_zero_gradients(results):
    """An empty batch, no step or no unit: stock Keras' empty outputs, and every
    gradient a sum of none (zeros, not what the buffer held). F = 0 runs too."""
    empty = [r for r in results if r["kind"] == "empty"]
    assert len(empty) == 3 * 4 * 2 * 4  # modes x cells x ops x (B, T, H, F)
    for r in empty:
        assert r["error"] is None and r["shapes"] == r["want"], _where(r)
        assert r["zero"] or r["case"] == "F 0", _where(r)
    d_w = _one(results, "eager", "FusedRnnBackward", "lstm", "B 0")
    assert d_w["shapes"][1] == [5, 24] and d_w["zero"]  # d w: (F, 4H), all zeros


def test_the_messages_say_what_the_input_must_be_and_what_came(results):
    saved = _one(results, "eager", "FusedRnnBackward", "lstm", "saved dim 2 + 1")["message"]
    assert "FusedRnnBackward: saved must be (T, B, 6*H) = (4, 3, 36) for lstm, got (4, 3, 37)" in saved
    static = _one(results, "graph", "FusedRnnBackward", "gru", "x dim 0 + 1")["message"]
    assert "FusedRnnBackward: x must be (B, T, F) = (3, 4, 5) for gru, got (4, 4, 5)" in static
    rank = _one(results, "unknown", "FusedRnnForward", "tanh", "u rank + 1")["message"]
    assert "FusedRnnForward: u must be (H, H) for tanh, got (1, 6, 6)" in rank
    b_rec = _one(results, "eager", "FusedRnnForward", "relu", "b_rec dim 0 + 1")["message"]
    assert "FusedRnnForward: b_rec must be (0) = (0) for relu, got (1)" in b_rec  # no GRU: none
    dtype = _one(results, "graph", "FusedRnnBackward", "lstm", "d_hs float64")["message"]
    assert "FusedRnnBackward: d_hs must be float32, got float64" in dtype
    # TensorFlow's own refusal (the ops as loaded, unchecked): by position only
    own = _one(results, "tensorflow", "FusedRnnForward", "lstm", "x float64")
    assert own["error"] == "InvalidArgumentError"
    assert "FusedRnnForward as input #0(zero-based) was expected to be a float tensor" in own["message"]
