"""The recurrent layers' C++ ops (``pipeline/rnn/native/fused_rnn.cc``): built and loaded here.

Why: TensorFlow runs each time step of a recurrent layer as a dozen small ops,
and at 100 units dispatching them costs more than their arithmetic, even
unrolled (``pipeline.rnn.fused``). The C++ op runs a whole layer's sequence as one
op each way. TensorFlow's pip package ships its headers, so the op is compiled
here, against the TensorFlow that will load it, for this CPU (``-march=native``):
about 20 s the first time, then from a cache keyed by the source, TensorFlow's
version, the compiler and the CPU's flags. Each Airflow worker builds its own.

Where no C++ compiler is found or the build fails, ``load`` returns None after
one warning naming the reason, and ``train.kernel: auto`` falls back to
``pipeline.rnn.fused`` (the same maths in TensorFlow ops, slower). ``why_not`` says
why, for ``train.kernel: native``, which then stops.

Cache: ``$PIPELINE_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/rnn-pipeline/native``
(``~/.cache/...``). ``CXX`` picks the compiler (default ``g++``) and
``PIPELINE_NATIVE_MARCH`` the target (default ``native``; ``x86-64-v3`` builds
what an AVX2-only CPU runs, as a test does).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("pipeline.rnn.native")
SOURCE = Path(__file__).with_name("native") / "fused_rnn.cc"
HEADERS = (SOURCE.with_name("product.h"), SOURCE.with_name("cells.h"))  # included by SOURCE: part of the cache key
_failure: list[str] = []  # why the last load gave None


class BuildError(RuntimeError):
    """The op could not be compiled here; the message is one line."""


def cache_dir() -> Path:
    if os.environ.get("PIPELINE_NATIVE_CACHE"):
        return Path(os.environ["PIPELINE_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnn-pipeline" / "native"


def _command(cxx: str, source: Path, out: Path) -> list[str]:
    import tensorflow as tf

    target = os.environ.get("PIPELINE_NATIVE_MARCH", "native")
    arch = [f"-march={target}" if platform.machine() in ("x86_64", "AMD64") else f"-mcpu={target}"]
    return [cxx, "-O3", *arch, "-shared", "-fPIC", "-w", "-DEIGEN_DONT_PARALLELIZE",
            *tf.sysconfig.get_compile_flags(), str(source), "-o", str(out),
            *tf.sysconfig.get_link_flags()]


def _key(cxx: str, command: list[str]) -> str:
    """What the built library depends on: source, command, TensorFlow, compiler, CPU."""
    import tensorflow as tf

    from pipeline import runtime

    version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()[:1]
    _, flags = runtime._cpuinfo()
    parts = [*(p.read_bytes().decode() for p in (SOURCE, *HEADERS)), " ".join(command[1:]), tf.__version__, *version,
             platform.machine(), " ".join(sorted(flags))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def build(out_dir: Path | None = None) -> Path:
    """The compiled library for this machine, from the cache or built now."""
    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        raise BuildError(f"no C++ compiler {cxx!r} on PATH (install g++ or set CXX)")
    out_dir = Path(out_dir or cache_dir())
    # the key has the sources' text, not their path: every clone of the project
    # (each Airflow task works in a fresh one) finds the library one clone built
    target = out_dir / f"fused_rnn-{_key(cxx, _command(cxx, Path(SOURCE.name), Path('x.so')))}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("native: compiling %s for this CPU (once, about 20 s)", SOURCE.name)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # concurrent builds: last wins
        built = Path(tmp) / target.name
        done = subprocess.run(_command(cxx, SOURCE, built), capture_output=True, text=True,
                              timeout=900)
        if done.returncode:
            errors = [ln for ln in done.stderr.splitlines() if "error" in ln] or [""]
            raise BuildError(f"{cxx} failed on {SOURCE}: {errors[0].strip()[:300]}")
        built.replace(target)
    return target


@functools.cache
def load():
    """The ops module (``fused_rnn_forward``/``fused_rnn_backward``), or None."""
    import tensorflow as tf

    try:
        return tf.load_op_library(str(build()))
    except (BuildError, OSError, subprocess.SubprocessError, tf.errors.NotFoundError) as exc:
        _failure[:] = [str(exc).splitlines()[0] if str(exc) else type(exc).__name__]
        log.warning("native: %s; the recurrent layers run on TensorFlow ops instead",
                    _failure[0])
        return None


def bf16_supported() -> bool:
    """Whether the op was built with bfloat16 products: ``-march=native`` builds
    them where the CPU has AVX512_BF16 (Xeons with AMX have it too)."""
    if load() is None:
        return False
    return bool(ctypes.CDLL(str(build())).fused_rnn_has_bf16())


def why_not() -> str:
    """Why ``load`` gave None (empty when it did not)."""
    return _failure[0] if _failure else ""
