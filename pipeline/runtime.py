"""What every stage's ``main()`` shares: clean failure and a runtime record.

A stage that fails on bad input must say why in one line naming the file and
exit non-zero, without a traceback that buries the reason; ``stage_main`` maps
the pipeline's own error types to that. It also records the stage's wall time
and peak resident memory in ``metrics/runtime/<stage>.json`` (a DVC metric),
because the README promises per-stage time and memory of the real run and
these are measured, not estimated.
"""

from __future__ import annotations

import json
import logging
import os
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
    from pipeline.idx import IdxError

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


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def _timed(name: str, runtime_dir: Path):
    start = time.perf_counter()
    yield
    record = {"wall_time_s": round(time.perf_counter() - start, 2),
              "peak_rss_mib": round(peak_rss_mib(), 1)}
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
