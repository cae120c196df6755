"""Bad inputs for the C++ op's two ops, every cell: run by tests/test_op_checks.py in a
subprocess (a crash there fails that test, not pytest). Prints one JSON list of
{op, cell, case, input, mode, error, message, shapes}.

From valid inputs (B, T, F, H = 3, 4, 5, 6), one input changed at a time: each
dimension checked against a size (not those the sizes are read from), one larger
(the widths of w, u, b, b_rec, saved; the batch and time of x and d_hs against
hs; ...); each input's rank one more and one less; each input as float64.
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


def valid(cell: str) -> dict[str, np.ndarray]:
    gh = GATES[cell] * H
    shapes = {"x": (B, T, F), "w": (F, gh), "b": (gh,), "u": (H, gh),
              "b_rec": (gh if cell == "gru" else 0,), "d_hs": (B, T, H), "hs": (B, T, H),
              "saved": (T, B, SAVED[cell] * H)}
    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s) * 0.5).astype("float32") for k, s in shapes.items()}


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
    """The op's outputs' shapes (static ones in graphs), or raises its error."""
    if mode == "eager":
        return [list(o.shape) for o in fn(*inputs, cell=cell)]
    shapes = []
    if mode == "graph":
        def graph():
            outs = fn(*inputs, cell=cell)
            shapes.extend(o.shape.as_list() for o in outs)
            return outs

        tf.function(graph)()
        return shapes
    specs = [tf.TensorSpec(None, getattr(v, "dtype", tf.float32)) for v in inputs]
    return [list(o.shape) for o in tf.function(lambda *v: fn(*v, cell=cell),
                                               input_signature=specs)(*inputs)]


def main():
    tf.get_logger().setLevel("ERROR")  # a graph per case: retracing is the point
    ops = native.load()
    assert ops is not None, native.why_not()
    results = []
    for op, (name, names, sources) in OPS.items():
        fn = getattr(ops, name)
        for cell in GATES:
            arrays = valid(cell)
            cases = [("valid", None, None), *bad(names, sources, arrays)]
            for mode in ("eager", "graph", "unknown"):
                for case, changed, value in cases:
                    inputs = [value if n == changed else arrays[n] for n in names]
                    row = {"op": op, "cell": cell, "case": case, "input": changed, "mode": mode,
                           "error": None, "message": "", "shapes": None}
                    try:
                        row["shapes"] = run(mode, fn, inputs, cell)
                    except Exception as exc:  # noqa: BLE001 - what came is the result
                        row["error"], row["message"] = type(exc).__name__, str(exc)
                    results.append(row)
    # TensorFlow's own refusal of a dtype, without pipeline.rnn.native's check first
    arrays = valid("lstm")
    x = tf.constant(arrays["x"], tf.float64)
    try:
        ops.module.fused_rnn_forward(x, *(arrays[n] for n in ("w", "b", "u", "b_rec")), cell="lstm")
    except Exception as exc:  # noqa: BLE001
        results.append({"op": "FusedRnnForward", "cell": "lstm", "case": "x float64", "input": "x",
                        "mode": "tensorflow", "error": type(exc).__name__, "message": str(exc)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
