"""pipeline.rnn.native: the C++ op builds once per machine with no warning in our
sources, for AVX2 CPUs too; a CPU without AVX2 and a missing compiler are clear fallbacks;
a first layer's backward skips the gradient of the data and nothing else.
Where a compiler and TensorFlow's headers are, a failed build fails (tests/native_support.py)."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline import config
from pipeline.rnn import kernels
from pipeline.rnn import native
from pipeline.stages import train
from pipeline.runtime import StageError


def test_the_op_is_built_once_and_then_taken_from_the_cache(native_ops):
    first = native.build()  # load() built it: this is the cached file
    assert first.parent == native.cache_dir() and first.suffix == ".so"
    stamp = os.stat(first).st_mtime_ns
    assert native.build() == first and os.stat(first).st_mtime_ns == stamp
    # No check for leftover build folders here: another process may be building into
    # this shared cache. The AVX2 build test checks that, in a cache of its own.


def test_another_clone_of_the_project_takes_the_same_library(tmp_path, monkeypatch, native_ops):
    """Each Airflow task runs in a fresh clone: the cache is keyed on the sources'
    text, so a clone at another path compiles nothing."""
    import shutil

    first = native.build()
    stamp = os.stat(first).st_mtime_ns
    clone = shutil.copytree(native.SOURCE.parent, tmp_path / "clone" / "pipeline" / "native")
    monkeypatch.setattr(native, "SOURCE", clone / native.SOURCE.name)
    monkeypatch.setattr(native, "HEADERS", tuple(clone / h.name for h in native.HEADERS))
    run = native.subprocess.run

    def version_only(cmd, *args, **kwargs):   # asking the compiler its version, no more
        assert cmd[1:] == ["--version"], f"compiled again: {cmd[:3]}"
        return run(cmd, *args, **kwargs)

    monkeypatch.setattr(native.subprocess, "run", version_only)
    assert native.build() == first and os.stat(first).st_mtime_ns == stamp


def test_our_sources_compile_without_a_warning(native_ops):
    """-Wall -Wextra: the build records the warnings in our sources (tests/test_native_builds.py
    checks the AVX2 build's, whose masked loads only it compiles)."""
    assert native.warnings(native.build()) == []


def test_only_the_warnings_located_in_our_sources_count():
    """g++ 12 reports its own intrinsics' false 'may be used uninitialized' where Eigen's
    code, even inlined into ours, calls them: those are not ours to fix."""
    here = native.SOURCE.parent
    ours = f"{here}/cells.h:60:9: warning: unused variable ‘n’ [-Wunused-variable]"
    stderr = "\n".join([
        f"In file included from {here}/fused_rnn.cc:20:",
        f"    inlined from ‘P rnn::cells::Sigmoid(const P&)’ at {here}/cells.h:56:92,",
        "/usr/lib/gcc/x86_64-linux-gnu/12/include/avx512fintrin.h:5946:10: warning: ‘__Y’ may be "
        "used uninitialized [-Wmaybe-uninitialized]",
        ours, f"{here}/cells.h:60:9: note: declared here"])
    assert native._own_warnings(stderr) == [ours]


def test_without_a_compiler_auto_falls_back_and_native_stops_with_the_reason(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PIPELINE_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    native.load.cache_clear()
    try:
        assert native.load() is None
        assert "no C++ compiler 'no-such-compiler'" in native.why_not()
        assert list(tmp_path.iterdir()) == []   # a failed build leaves nothing behind
        assert "TensorFlow ops instead" in caplog.text
        params = config.load(Path(__file__).parent / "fixtures" / "params-tiny.yaml")
        net = train.compiled("lstm", params, total_steps=10)  # auto: TensorFlow's ops
        assert not any(getattr(l, "native", False) for l in net.inner.layers)
        forced = dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                       kernel="native"))
        with pytest.raises(StageError, match="train.kernel: native: no C\\+\\+ compiler"):
            train.compiled("lstm", forced, total_steps=10)
    finally:
        native.load.cache_clear()


def test_precision_auto_follows_the_cpu_and_bf16_elsewhere_is_refused(monkeypatch):
    monkeypatch.setattr(native, "bf16_supported", lambda: True)
    assert kernels.precision("auto", "native") and kernels.precision("bf16", "native")
    assert not kernels.precision("fp32", "native")
    assert not kernels.precision("auto", "fused")  # TensorFlow's ops: fp32 only
    with pytest.raises(StageError, match="train.precision: bf16 needs"):
        kernels.precision("bf16", "keras")
    monkeypatch.setattr(native, "bf16_supported", lambda: False)  # an AVX2-only CPU
    assert not kernels.precision("auto", "native")
    with pytest.raises(StageError, match="AVX512_BF16"):
        kernels.precision("bf16", "native")


@pytest.mark.parametrize("cell", ["relu", "lstm", "gru"])
def test_without_input_grad_the_op_skips_d_x_and_changes_no_other_gradient(cell, native_ops):
    """input_grad=False: d_x comes out zero, every weight's gradient bit for bit the same."""
    import tensorflow as tf

    gates = {"relu": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(3)
    B, T, F, H = 7, 28, 28, 100
    n = lambda *s: tf.constant(rng.standard_normal(s).astype("float32") * 0.1)  # noqa: E731
    x, w, b, u = n(B, T, F), n(F, gates * H), n(gates * H), n(H, gates * H)
    b_rec = n(gates * H if cell == "gru" else 0)
    hs, saved = native_ops.fused_rnn_forward(x, w, b, u, b_rec, cell=cell)
    d_hs = n(B, T, H)
    full = native_ops.fused_rnn_backward(d_hs, x, w, hs, saved, u, cell=cell)
    skip = native_ops.fused_rnn_backward(d_hs, x, w, hs, saved, u, cell=cell, input_grad=False)
    assert np.abs(full[0].numpy()).max() > 0 and not np.any(skip[0].numpy())
    for got, want in zip(skip[1:], full[1:]):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_only_the_first_layer_of_each_stack_drops_its_input_gradient(native_ops):
    """The first layers read the data (nothing to train below them); a layer above
    still passes its gradient down, or the layers below would learn nothing."""
    import tensorflow as tf

    from pipeline.rnn import model

    for name in ("lstm", "bilstm"):
        net = model.build(config.load().models[name], kernel="native")
        rnns = [layer for layer in net.layers if type(layer).__name__ == "FusedRNN"]
        assert [layer.input_grad for layer in rnns] == [layer.name[-1] != "1" for layer in rnns]
        x = tf.constant(np.random.default_rng(0).integers(0, 256, (5, 28, 28)), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(net(x) ** 2)
        grads = tape.gradient(loss, [x, *net.trainable_variables])
        assert grads[0] is None  # the data gets none
        assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads[1:])
