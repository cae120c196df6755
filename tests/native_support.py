"""What the tests of the C++ op (pipeline.rnn.native) share: where it must build,
which arithmetic this CPU has, and builds for other CPUs in a subprocess.

Where a C++ compiler (``$CXX``, else g++) and TensorFlow's headers are present,
the op must build: a failed build fails the test, with the compiler's error, so
a suite that silently ran the stock-Keras fallback cannot pass. A test skips
only where this machine cannot run what it tests (no compiler or headers at all,
or an arithmetic the CPU lacks: bf16 without avx512_bf16, AVX2 off x86), and
says why. tests/conftest.py's ``native_ops`` fixture is ``ops``.

bf16 products need the op built for this CPU (``-march=native``). Where this
process's op is built for another target (``PIPELINE_NATIVE_MARCH=x86-64-v3``,
to test what an AVX2 CPU runs), a bf16 test computes on a ``-march=native`` build
all the same: ``on_native_build`` runs it in a fresh Python with a cache folder
of its own (a second library in this process would register the ops again, and
TensorFlow aborts the process).
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


def march() -> str:
    """The target this process's op is built for (``PIPELINE_NATIVE_MARCH``)."""
    return os.environ.get("PIPELINE_NATIVE_MARCH", "native")


def needs_bf16() -> None:
    """Skips, saying why, only on a CPU without bfloat16 products (avx512_bf16)."""
    if "avx512_bf16" not in cpu_flags():
        reason = "this CPU has no avx512_bf16 (/proc/cpuinfo flags): no bf16 products to test"
        print(f"skipped: {reason}")
        pytest.skip(reason)


def bf16_ops():
    """The loaded ops, built with bfloat16 products: call it inside ``on_native_build``
    (or where ``march()`` is native). Skips only on a CPU without them."""
    from pipeline.rnn import native

    needs_bf16()
    assert march() == "native", (f"this process's op is built for -march={march()}: compute "
                                 "bf16 through native_support.on_native_build")
    loaded = ops()
    assert native.bf16_supported(), "this CPU has avx512_bf16 but the -march=native build has no bf16"
    return loaded


def native_cache() -> Path:
    """The ``-march=native`` build's cache folder where this process's op is another's."""
    from pipeline.rnn import native

    return native.cache_dir().with_name("native-march-native")


def on_native_build(function, *args):
    """``function(*args)`` on the op built for this CPU (``-march=native``): here
    where this process's op is (the default), else in a fresh Python with
    ``PIPELINE_NATIVE_MARCH=native`` and ``native_cache()``. ``function`` is a test
    module's top-level function; its arguments and result are pickled."""
    import pickle
    import tempfile

    if march() == "native":
        return function(*args)
    with tempfile.TemporaryDirectory() as tmp:
        given, result = Path(tmp, "args.pickle"), Path(tmp, "result.pickle")
        given.write_bytes(pickle.dumps((function.__module__, function.__name__, args)))
        env = {**os.environ, "PIPELINE_NATIVE_MARCH": "native",
               "PIPELINE_NATIVE_CACHE": str(native_cache()), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run([sys.executable, __file__, str(given), str(result)], env=env,
                              capture_output=True, text=True, cwd=ROOT, timeout=900)
        if done.returncode:
            pytest.fail(f"{function.__name__} on the -march=native build (exit {done.returncode}):"
                        f"\n{done.stderr[-3000:]}", pytrace=False)
        return pickle.loads(result.read_bytes())


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


if __name__ == "__main__":  # on_native_build's fresh Python: tests/ is its sys.path[0]
    import importlib
    import pickle

    module, name, arguments = pickle.loads(Path(sys.argv[1]).read_bytes())
    answer = getattr(importlib.import_module(module), name)(*arguments)
    Path(sys.argv[2]).write_bytes(pickle.dumps(answer))
