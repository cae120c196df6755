"""pipeline.rnn.native: the C++ op builds once per machine with no warning in our
sources, for AVX2 CPUs too; a CPU without AVX2 and a missing compiler are clear fallbacks.
Where a compiler and TensorFlow's headers are, a failed build fails (tests/native_support.py)."""

import dataclasses
import os
from pathlib import Path

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
