"""Keep freed memory in the process: a training step's buffers stop costing page faults.

Why: every training step allocates and frees the same few buffers of a few MiB
(the C++ op's gate states and scratch, its gradients, TensorFlow's tensors).
glibc serves blocks above its mmap threshold (128 KiB, raised only by luck of
which blocks a process happened to free before) straight from the kernel and
gives them back on free, so each step's new pages are faulted in and zeroed
again. In a BiLSTM training that went to 200,000+ page faults a second and a
third of the CPU's time in the kernel, whenever the threshold stayed low. In
600-step windows (reports/bench-heap.md, AMD EPYC, 2 cores, 3 rounds) the
project's path ran 3,508 images/s with this setting against 2,884 without.

``keep_freed_memory`` fixes the threshold at 32 MiB (glibc's largest) and the
heap's trim threshold at 1 GiB, so freed blocks are reused, never returned.
The process's peak memory is unchanged: it keeps at most what it once used.
Only glibc has ``mallopt``; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("pipeline.stages.train")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20   # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse; whether it took the settings."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                            TRIM_THRESHOLD))
    log.debug("glibc keeps freed memory: %s", ok)
    return ok
