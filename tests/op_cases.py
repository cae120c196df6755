"""Bad inputs for the C++ op's two ops, every cell: run by tests/test_op_checks.py in a
subprocess (a crash there fails that test, not pytest). Prints one JSON list of
{op, cell, kind, case, input, mode, error, message, shapes, zero}.

Kinds: ``bad``: from valid inputs (B, T, F, H = 3, 4, 5, 6), one input changed
at a time: each dimension checked against a size (not those the sizes are read
from), one larger (the widths of w, u, b, b_rec, saved; the batch and time of x
and d_hs against hs; ...); each input's rank one more and one less; each input
as float64. ``huge``: every input consistent and empty, but B or T 2^31, past
the kernels' int sizes (it used to pass as an empty input, then abort the
process). ``empty``: valid inputs with B, T, H or F zero, which must run:
``zero`` says whether every output is all zeros (the gradients of a sum of none).
``valid``: the sizes above.
Modes: ``eager`` (Compute's checks); ``graph``, static shapes (the shape
function's: a ValueError when the graph is built, as TensorFlow raises them);
``unknown``, a graph of inputs of unknown shape (Compute's, when it runs).
"""

import json

import numpy as np
import tensorflow as tf

from pipeline.rnn import native

B, T, F, H = 3, 4, 5, 6
GATES = {"relu": 1, "tanh": 1, "lstm": 4, "gru": 3}
SAVED = {"relu": 0, "tanh": 0, "lstm": 6, "gru": 4}
# (function, its inputs, the (input, dimension) that B, T, F and H are read from)
OPS = {"FusedRnnForward": ("fused_rnn_forward", ("x", "w", "b", "u", "b_rec"),
                           {("x", 0), ("x", 1), ("x", 2), ("u", 0)}),
       "FusedRnnBackward": ("fused_rnn_backward", ("d_hs", "x", "w", "hs", "saved", "u"),
                            {("hs", 0), ("hs", 1), ("hs", 2), ("x", 2)})}


def shapes(cell: str, b=B, t=T, f=F, h=H) -> dict[str, tuple]:
    gh = GATES[cell] * h
    return {"x": (b, t, f), "w": (f, gh), "b": (gh,), "u": (h, gh),
            "b_rec": (gh if cell == "gru" else 0,), "d_hs": (b, t, h), "hs": (b, t, h),
            "saved": (t, b, SAVED[cell] * h)}


def valid(cell: str, **sizes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s) * 0.5).astype("float32")
            for k, s in shapes(cell, **sizes).items()}


def outputs(op: str, cell: str, b=B, t=T, f=F, h=H) -> list[list[int]]:
    """The op's outputs' shapes for these sizes."""
    gh, s = GATES[cell] * h, SAVED[cell] * h
    if op == "FusedRnnForward":
        return [[b, t, h], [t, b, s]]
    return [[b, t, f], [f, gh], [gh], [h, gh], [gh if cell == "gru" else 0]]


HUGE = {"B 2^31, T 0": {"b": 2**31, "t": 0}, "B 0, T 2^31": {"b": 0, "t": 2**31}}
EMPTY = {"B 0": {"b": 0}, "T 0": {"t": 0}, "H 0": {"h": 0}, "F 0": {"f": 0}}


def huge(cell: str) -> dict[str, np.ndarray]:
    """Empty inputs (no element: nothing allocated), B or T past 2^31 - 1."""
    return {case: {k: np.zeros(s, "float32") for k, s in shapes(cell, **sizes).items()}
            for case, sizes in HUGE.items()}


def bad(names, sources, arrays):
    """(case, input, value) with one input changed."""
    for name in names:
        a = arrays[name]
        for d in range(a.ndim):
            if (name, d) not in sources:
                shape = list(a.shape)
                shape[d] += 1
                yield f"{name} dim {d} + 1", name, np.zeros(shape, "float32")
        yield f"{name} rank + 1", name, a[None]
        yield f"{name} rank - 1", name, np.zeros(a.shape[:-1], "float32")
        yield f"{name} float64", name, tf.constant(a, tf.float64)


def run(mode: str, fn, inputs: list, cell: str):
    """The op's outputs' shapes (static ones in graphs) and whether every output is
    all zeros, or raises its error."""
    if mode == "eager":
        outs = fn(*inputs, cell=cell)
        return [list(o.shape) for o in outs], _zero(outs)
    static = []
    if mode == "graph":
        def graph():
            outs = fn(*inputs, cell=cell)
            static.extend(o.shape.as_list() for o in outs)
            return outs

        outs = tf.function(graph)()
        return static, _zero(outs)
    specs = [tf.TensorSpec(None, getattr(v, "dtype", tf.float32)) for v in inputs]
    outs = tf.function(lambda *v: fn(*v, cell=cell), input_signature=specs)(*inputs)
    return [list(o.shape) for o in outs], _zero(outs)


def _zero(outs) -> bool:
    return all(not np.any(o.numpy()) for o in outs)


def cases(op: str, names, sources, cell: str):
    """(kind, case, changed input or None, inputs in the op's order, output shapes)."""
    arrays = valid(cell)
    yield "valid", "valid", None, [arrays[n] for n in names], outputs(op, cell)
    for case, changed, value in bad(names, sources, arrays):
        yield "bad", case, changed, [value if n == changed else arrays[n] for n in names], None
    for case, empty in huge(cell).items():  # the first input with B or T names it
        yield "huge", case, names[0], [empty[n] for n in names], None
    for case, sizes in EMPTY.items():
        given = valid(cell, **sizes)
        yield "empty", case, None, [given[n] for n in names], outputs(op, cell, **sizes)


def main():
    tf.get_logger().setLevel("ERROR")  # a graph per case: retracing is the point
    ops = native.load()
    assert ops is not None, native.why_not()
    results = []
    for op, (name, names, sources) in OPS.items():
        fn = getattr(ops, name)
        for cell in GATES:
            for kind, case, changed, inputs, want in cases(op, names, sources, cell):
                for mode in ("eager", "graph", "unknown"):
                    row = {"op": op, "cell": cell, "kind": kind, "case": case, "input": changed,
                           "mode": mode, "error": None, "message": "", "shapes": None,
                           "zero": None, "want": want}
                    try:
                        row["shapes"], row["zero"] = run(mode, fn, inputs, cell)
                    except Exception as exc:  # noqa: BLE001 - what came is the result
                        row["error"], row["message"] = type(exc).__name__, str(exc)
                    results.append(row)
    # TensorFlow's own refusal of a dtype, without pipeline.rnn.native's check first
    arrays = valid("lstm")
    x = tf.constant(arrays["x"], tf.float64)
    try:
        ops.module.fused_rnn_forward(x, *(arrays[n] for n in ("w", "b", "u", "b_rec")), cell="lstm")
    except Exception as exc:  # noqa: BLE001
        results.append({"op": "FusedRnnForward", "cell": "lstm", "kind": "bad", "case": "x float64",
                        "input": "x", "mode": "tensorflow", "error": type(exc).__name__,
                        "message": str(exc)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
