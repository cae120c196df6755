"""pipeline.rnn.native: the C++ op builds once per machine, and its absence is a clear fallback."""

import dataclasses
import os
from pathlib import Path

import pytest

from pipeline import config
from pipeline.rnn import kernels
from pipeline.rnn import native
from pipeline.stages import train
from pipeline.runtime import StageError


def test_the_op_is_built_once_and_then_taken_from_the_cache():
    if native.load() is None:
        pytest.skip(f"no native op here: {native.why_not()}")
    first = native.build()  # load() built it: this is the cached file
    assert first.parent == native.cache_dir() and first.suffix == ".so"
    stamp = os.stat(first).st_mtime_ns
    assert native.build() == first and os.stat(first).st_mtime_ns == stamp
    # No check for leftover build folders here: another process may be building into
    # this shared cache. The AVX2 build test checks that, in a cache of its own.


def test_another_clone_of_the_project_takes_the_same_library(tmp_path, monkeypatch):
    """Each Airflow task runs in a fresh clone: the cache is keyed on the sources'
    text, so a clone at another path compiles nothing."""
    import shutil

    if native.load() is None:
        pytest.skip(f"no native op here: {native.why_not()}")
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


def test_an_avx2_build_computes_what_keras_computes(tmp_path):
    """What an AVX2-only CPU builds (no bf16): same outputs and gradients as Keras."""
    import platform
    import subprocess
    import sys

    if platform.machine() not in ("x86_64", "AMD64") or native.load() is None:
        pytest.skip("needs an x86 compiler")
    check = (
        "import numpy as np, keras, tensorflow as tf\n"
        "from pipeline import config, model, native\n"
        "assert not native.bf16_supported(), 'an AVX2 build has no bf16'\n"
        "cfg = config.load().models['lstm']\n"
        "x = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype('float32')\n"
        "stock, ours = model.build(cfg, kernel='keras'), model.build(cfg, kernel='native')\n"
        "ours.set_weights(stock.get_weights())\n"
        "def run(net):\n"
        "    with tf.GradientTape() as tape:\n"
        "        out = net(x)\n"
        "        loss = tf.reduce_sum(out * out)\n"
        "    return out.numpy(), tape.gradient(loss, net.trainable_variables)\n"
        "(a, ga), (b, gb) = run(stock), run(ours)\n"
        "np.testing.assert_allclose(b, a, atol=1e-5)\n"
        "for u, v in zip(ga, gb):\n"
        "    np.testing.assert_allclose(v.numpy(), u.numpy(), atol=1e-4 * max(1, abs(u.numpy()).max()))\n"
        "print('ok')\n")
    env = {**os.environ, "PIPELINE_NATIVE_MARCH": "x86-64-v3",
           "PIPELINE_NATIVE_CACHE": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True,
                          text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    assert [p.suffix for p in tmp_path.iterdir()] == [".so"]  # built there, for AVX2
