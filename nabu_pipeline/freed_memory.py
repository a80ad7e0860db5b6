"""Hand the memory finished sessions freed back to the system once the server is idle.

A session allocates in many threads (Whisper and Piper off the event loop,
onnxruntime's VAD and turn models, SQLite); glibc gives threads their own
malloc arenas and keeps what they free for reuse instead of returning it, and
part of a session is only freed by Python's cyclic garbage collector some time
after it ended. Measured over 300 sessions (`python -m benchmarks.server_rss`),
nothing a session creates stays alive, yet the resident size stayed hundreds
of MB above what is in use (765 MB idle, 451 MB after a collection and
`malloc_trim`). So a few seconds after the last session ends, with nobody
connected, `FreedMemory` collects garbage and trims the heap (briefly, on the
event loop, while nobody is connected). Elsewhere than glibc the trim does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable

IDLE_S = 5.0


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Collect garbage and return freed heap memory to the system (blocking, briefly)."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


class FreedMemory:
    """Releases freed memory once no session has ended for `IDLE_S` and none is connected."""

    def __init__(self) -> None:
        self._ended = asyncio.Event()

    def session_ended(self) -> None:
        self._ended.set()

    async def run(self, idle: Callable[[], bool]) -> None:
        while True:
            await self._ended.wait()
            self._ended.clear()
            await asyncio.sleep(IDLE_S)
            if idle() and not self._ended.is_set():
                release_freed_memory()
