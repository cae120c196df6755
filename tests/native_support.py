"""What the tests of the C++ op (pipeline.rnn.native) share: where it must build,
which arithmetic this CPU has, and builds for other CPUs in a subprocess.

Where a C++ compiler (``$CXX``, else g++) and TensorFlow's headers are present,
the op must build: a failed build fails the test, with the compiler's error, so
a suite that silently ran the stock-Keras fallback cannot pass. A test skips
only where this machine cannot run what it tests (no compiler or headers at all,
or an arithmetic the CPU lacks: bf16 without avx512_bf16, AVX2 off x86), and
says why. tests/conftest.py's ``native_ops`` and ``native_bf16_ops`` fixtures
are these functions.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> set[str]:
    """This CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def missing_tools() -> str:
    """Why the op cannot be built here at all ("" where a compiler and TensorFlow's headers are)."""
    import tensorflow as tf

    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        return f"no C++ compiler {cxx!r} on PATH"
    header = Path(tf.sysconfig.get_include(), "tensorflow", "core", "framework", "op.h")
    return "" if header.exists() else f"no TensorFlow headers ({header} is missing)"


def ops():
    """The loaded ops; fails where they could be built and were not."""
    from pipeline.rnn import native

    loaded = native.load()
    if loaded is None:
        why = missing_tools()
        if not why:
            pytest.fail(f"the C++ op did not build, with a compiler and TensorFlow's headers "
                        f"here: {native.why_not()}", pytrace=False)
        pytest.skip(f"{why}: the C++ op cannot be built here")
    return loaded


def bf16_ops():
    """The loaded ops, built with bfloat16 products; skips only on a CPU without them."""
    from pipeline.rnn import native

    loaded = ops()
    if "avx512_bf16" not in cpu_flags():
        pytest.skip("this CPU has no avx512_bf16 (/proc/cpuinfo): no bf16 products to test")
    march = os.environ.get("PIPELINE_NATIVE_MARCH", "native")
    if march != "native":
        pytest.skip(f"the op is built for PIPELINE_NATIVE_MARCH={march}, not this CPU")
    assert native.bf16_supported(), "this CPU has avx512_bf16 but the -march=native build has no bf16"
    return loaded


def x86_only():
    """Skips off x86, where -march targets (AVX2, AVX) mean nothing."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"an x86 -march target; this CPU is {platform.machine()}")


def run_for(march: str, cache: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python whose op is built for ``-march=march`` into ``cache``."""
    env = {**os.environ, "PIPELINE_NATIVE_MARCH": march, "PIPELINE_NATIVE_CACHE": str(cache),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
