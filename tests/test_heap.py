"""heap: a training process reuses freed buffers instead of faulting in new pages.

Each check runs in a fresh Python process: glibc's settings last for the whole
process, and a test worker's other tests must not decide the outcome.
"""

import subprocess
import sys

import pytest

from conftest import ROOT, TINY_PARAMS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Four 4 MiB buffers written and freed per step, like a training step's tensors;
# prints the page faults of 20 steps after a first one.
STEPS = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def step():
    blocks = [libc.malloc(4 << 20) for _ in range(4)]
    for p in blocks:
        ctypes.memset(p, 1, 4 << 20)
    for p in blocks:
        libc.free(p)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setup: str) -> int:
    out = subprocess.run([sys.executable, "-c", setup + STEPS], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


def test_freed_buffers_are_reused_without_page_faults():
    # glibc's defaults: the buffers go back to the kernel and come back as new pages,
    # a fault per 4 KiB page (81,288 here), or at least one per buffer with huge pages
    assert _faults("") >= 20 * 4
    assert _faults("from pipeline.rnn import heap; assert heap.keep_freed_memory()\n") < 40


def test_the_training_path_keeps_freed_memory():
    setup = ("from pipeline import config\nfrom pipeline.stages import train\n"
             f"train.compiled('rnn', config.load({str(TINY_PARAMS)!r}), total_steps=10)\n")
    assert _faults(setup) < 40
