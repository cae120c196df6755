"""What every stage's ``main()`` shares: clean failure and a runtime record.

A stage that fails on bad input must say why in one line naming the file and
exit non-zero, without a traceback that buries the reason; ``stage_main`` maps
the pipeline's own error types to that. It also records the stage's wall time
and peak resident memory in ``metrics/runtime/<stage>.json`` (a DVC metric),
because docs/results.md reports per-stage time and memory of the real run and
these are measured, not estimated. Beside them it records the machine
(``machine()``: CPU model, the ISA extensions TensorFlow's kernels pick
between, TensorFlow's version), because floating-point results are
bit-identical only on the same kind of machine: the same commit gives slightly
different metrics on a CPU with other vector units.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from pipeline import config

log = logging.getLogger("pipeline")


class StageError(RuntimeError):
    """A stage cannot go on; the message is the one line the user sees."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from pipeline.data.idx import IdxError

    return (StageError, config.ConfigError, IdxError, FileNotFoundError)


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stable_keras_copy(src: Path, dest: Path) -> None:
    """Copy a ``.keras`` file without its save time, so the same training gives the same bytes.

    Keras stamps ``date_saved`` into ``metadata.json``, every zip member
    carries the time it was written, and ``config.json`` numbers shared
    objects by their memory address: without this, two identical trainings
    would never share a checksum and DVC would see every rerun as a change.
    """
    import zipfile

    ids: dict = {}

    def renumber(node):  # memory addresses -> 0, 1, 2 ... in order of appearance
        if isinstance(node, dict):
            return {k: ids.setdefault(v, len(ids)) if k == "shared_object_id" else renumber(v)
                    for k, v in node.items()}
        return [renumber(v) for v in node] if isinstance(node, list) else node

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(renumber(json.loads(data))).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            zout.writestr(fixed, data)


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# ISA extensions that change which kernels oneDNN/Eigen run, hence the rounding.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_int8", "asimd", "sve", "sve2")
# x86 CPUs on which TensorFlow turns its oneDNN kernels on by default (else Eigen's).
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or "unknown", flags


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def kernels(flags: set[str], env=os.environ) -> str:
    """Which CPU kernels TensorFlow runs: oneDNN's or Eigen's, and oneDNN's ISA cap.

    TensorFlow picks oneDNN by default only on x86 CPUs with one of
    ``ONEDNN_DEFAULT_FLAGS`` (so an AVX2-only CPU runs Eigen);
    ``TF_ENABLE_ONEDNN_OPTS`` overrides that, and ``ONEDNN_MAX_CPU_ISA`` caps the
    vector unit oneDNN may use; ``PIPELINE_NATIVE_MARCH`` builds the recurrent
    layers' C++ op for another target. Each choice rounds differently.
    """
    chosen = env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if chosen in ("0", "false", "1", "true"):
        on, why = chosen in ("1", "true"), "TF_ENABLE_ONEDNN_OPTS"
    else:
        on, why = platform.machine() in ("x86_64", "AMD64") and bool(
            flags & set(ONEDNN_DEFAULT_FLAGS)), "default for this CPU"
    caps = [f"{k}={env[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "PIPELINE_NATIVE_MARCH")
            if env.get(k)]  # the C++ op's target (pipeline.rnn.native) rounds too
    return f"{'oneDNN' if on else 'Eigen'} ({', '.join([why, *caps])})"


def machine(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """What decides floating-point results: CPU model, its ISA flags, the kernels
    TensorFlow runs on them (``kernels``), TensorFlow's version.

    Cheap (no TensorFlow import): every stage records it.
    """
    model, flags = _cpuinfo(cpuinfo)
    return {"cpu_model": model, "arch": platform.machine(),
            "isa_flags": " ".join(f for f in ISA_FLAGS if f in flags),
            "kernels": kernels(flags),
            "tensorflow": _version("tensorflow"), "python": platform.python_version(),
            "cpu_count": os.cpu_count() or 0}


def machine_kind(record: dict | None) -> tuple | None:
    """The part of ``machine()`` that must match for bit-identical metrics."""
    if not record:
        return None
    kind = (record.get("cpu_model"), record.get("arch"), record.get("isa_flags"),
            record.get("tensorflow"))
    # The default kernels follow from the flags (and records older than the
    # field ran on them); only an override makes another kind of machine.
    chosen = record.get("kernels", "")
    overridden = chosen and ("default for this CPU" not in chosen or "=" in chosen)
    return kind + ((chosen,) if overridden else ())


@contextmanager
def _timed(name: str, runtime_dir: Path):
    start = time.perf_counter()
    yield
    record = {"wall_time_s": round(time.perf_counter() - start, 2),
              "peak_rss_mib": round(peak_rss_mib(), 1), "machine": machine()}
    write_json(runtime_dir / f"{name}.json", record)
    log.info("%s: done in %.1f s, peak memory %.0f MiB", name,
             record["wall_time_s"], record["peak_rss_mib"])


def stage_main(name: str, body: Callable[[], object], *, record_as: str | None = None,
               runtime_dir: Path = config.RUNTIME_DIR) -> None:
    """Run a stage body as a CLI: one-line errors, exit codes, runtime record."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        with _timed(record_as or name, runtime_dir):
            body()
    except _expected_errors() as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; existing outputs were left as they were", file=sys.stderr)
        sys.exit(130)
