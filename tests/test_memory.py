"""The server asks glibc's malloc to keep freed heap memory instead of giving it back to the
kernel after every request (auditd/server/run.py, keep_freed_heap): a list over several
namespaces used to cost four `brk` calls and fresh pages per request (3,200 vs 7,700 req/s)."""
import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from auditd.server.run import HEAP_TRIM_THRESHOLD, keep_freed_heap


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc():
    libc = ctypes.CDLL(None)
    if platform.libc_ver()[0] != "glibc" or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33 or newer (mallinfo2): the setting is glibc's own")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = MallInfo2
    return libc


_REQUEST = """
import ctypes, sys
sys.path.insert(0, %r)
from test_memory import _glibc
from auditd.server.run import keep_freed_heap
libc = _glibc()
assert keep_freed_heap()
# what a request does: many blocks under the mmap threshold, freed when it is answered
blocks = [libc.malloc(64 * 1024) for _ in range(64)]
for block in reversed(blocks):
    libc.free(block)
print(libc.mallinfo2().keepcost)          # free space at the top of the heap, not trimmed
"""


def test_freed_memory_stays_in_the_heap_for_the_next_request(monkeypatch):
    """In a fresh process, as the server's: this one's heap has the holes of every test before
    (blocks then come from them, not from the top, and the measure says nothing)."""
    _glibc()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", _REQUEST % str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    kept = int(done.stdout)
    assert kept >= 2 * 1024 * 1024
    assert kept <= HEAP_TRIM_THRESHOLD + 8 * 1024 * 1024


def test_a_setting_in_the_environment_is_left_alone(monkeypatch):
    _glibc()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_heap() is False
