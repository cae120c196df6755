"""The recurrent layers' C++ ops (``pipeline/rnn/native/fused_rnn.cc``): built and loaded here.

Why: TensorFlow runs each time step of a recurrent layer as a dozen small ops,
and at 100 units dispatching them costs more than their arithmetic, even
unrolled (``pipeline.rnn.fused``). The C++ op runs a whole layer's sequence as one
op each way. TensorFlow's pip package ships its headers, so the op is compiled
here, against the TensorFlow that will load it, for this CPU (``-march=native``):
about 20 s the first time, then from a cache keyed by the source, TensorFlow's
version, the compiler and the CPU's flags. Each Airflow worker builds its own.

Where no C++ compiler is found or the build fails (also on purpose: an x86
target without AVX2), ``load`` returns None after one warning naming the reason,
and ``train.kernel: auto`` falls back to ``pipeline.rnn.fused`` (the same maths in
TensorFlow ops, slower). ``why_not`` says why, for ``train.kernel: native``, which
then stops.

Warnings: ``-Wall -Wextra`` on our sources, TensorFlow's and Eigen's headers as
system headers; the build never fails on a warning (a newer compiler may add
one), but each build records those in our sources beside the library
(``warnings``), and a test requires none.

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
HEADERS = tuple(SOURCE.with_name(h) for h in ("product.h", "f32.h", "cells.h", "checks.h"))  # SOURCE's: in the key
INPUTS = {"fused_rnn_forward": ("FusedRnnForward", ("x", "w", "b", "u", "b_rec")),
          "fused_rnn_backward": ("FusedRnnBackward", ("d_hs", "x", "w", "hs", "saved", "u"))}
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
    x86 = platform.machine() in ("x86_64", "AMD64")
    # TensorFlow's Eigen fails to compile its AVX512-FP16 packets (PacketMathFP16.h,
    # TensorFlow 2.21); the op has no half precision, so Eigen is not told of them
    arch = [f"-march={target}", "-U__AVX512FP16__"] if x86 else [f"-mcpu={target}"]
    # TensorFlow's (and Eigen's) headers as system headers: the warnings are our sources'
    flags = []
    for flag in tf.sysconfig.get_compile_flags():
        flags += ["-isystem", flag[2:]] if flag.startswith("-I") else [flag]
    # -Wfatal-errors: a refused target (cells.h's #error) stops there, not after every header
    return [cxx, "-O3", *arch, "-shared", "-fPIC", "-Wall", "-Wextra", "-Wfatal-errors",
            "-DEIGEN_DONT_PARALLELIZE", *flags, str(source), "-o", str(out),
            *tf.sysconfig.get_link_flags()]


def _own_warnings(stderr: str) -> list[str]:
    """The compiler's warnings located in our sources (not those it reports in its
    own or TensorFlow's headers, even where our code inlined them)."""
    folder = f"{SOURCE.parent}{os.sep}"
    return [ln for ln in stderr.splitlines() if ln.startswith(folder) and ": warning:" in ln]


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
            lines = done.stderr.splitlines()
            errors = ([ln for ln in lines if ": error:" in ln or ": fatal error:" in ln]
                      or [ln for ln in lines if "error" in ln] or [""])
            raise BuildError(f"{cxx} failed on {SOURCE}: {errors[0].strip()[:300]}")
        ours = _own_warnings(done.stderr)
        if ours:
            log.warning("native: %d compiler warning(s) in our sources, first: %s", len(ours), ours[0])
        record = Path(tmp) / f"{target.stem}.warnings"  # before the library: found with it
        record.write_text("".join(f"{w}\n" for w in ours))
        record.replace(target.with_suffix(".warnings"))
        built.replace(target)
    return target


def warnings(library: Path) -> list[str] | None:
    """The compiler's warnings in our sources when it built ``library`` (None: not recorded)."""
    record = Path(library).with_suffix(".warnings")
    return record.read_text().splitlines() if record.exists() else None


@functools.cache
def load():
    """The ops (``fused_rnn_forward``/``fused_rnn_backward``, dtypes checked), or None."""
    import tensorflow as tf

    try:
        return _Checked(tf.load_op_library(str(build())))
    except (BuildError, OSError, subprocess.SubprocessError, tf.errors.NotFoundError) as exc:
        _failure[:] = [str(exc).splitlines()[0] if str(exc) else type(exc).__name__]
        log.warning("native: %s; the recurrent layers run on TensorFlow ops instead",
                    _failure[0])
        return None


class _Checked:
    """The ops, each tensor input's dtype checked first. TensorFlow refuses a dtype
    the op does not declare itself, but names the input only by its position (eager)
    or, for a captured tensor in a graph, says "Unreachable"."""

    def __init__(self, module):
        self.module = module  # the ops as tf.load_op_library gave them

    def fused_rnn_forward(self, *inputs, **attrs):
        return self._run("fused_rnn_forward", inputs, attrs)

    def fused_rnn_backward(self, *inputs, **attrs):
        return self._run("fused_rnn_backward", inputs, attrs)

    def _run(self, name: str, inputs: tuple, attrs: dict):
        import tensorflow as tf

        op, names = INPUTS[name]
        for arg, value in zip(names, inputs):
            if tf.is_tensor(value) and value.dtype != tf.float32:
                raise tf.errors.InvalidArgumentError(
                    None, None, f"{op}: {arg} must be float32, got {value.dtype.name}")
        return getattr(self.module, name)(*inputs, **attrs)


def bf16_supported() -> bool:
    """Whether the op was built with bfloat16 products: ``-march=native`` builds
    them where the CPU has AVX512_BF16 (Xeons with AMX have it too)."""
    if load() is None:
        return False
    return bool(ctypes.CDLL(str(build())).fused_rnn_has_bf16())


def why_not() -> str:
    """Why ``load`` gave None (empty when it did not)."""
    return _failure[0] if _failure else ""
