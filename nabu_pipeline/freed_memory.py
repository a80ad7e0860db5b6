"""Hand memory a finished session freed back to the system.

A session allocates in many threads (Whisper and Piper off the event loop,
onnxruntime's VAD and turn models, SQLite); glibc gives each thread pool its
own malloc arenas and keeps what they free for reuse instead of returning it.
Measured over 300 sessions (`python -m benchmarks.server_rss`), nothing a
session creates stays alive, yet the resident size swings hundreds of MB above
what is in use until the allocator happens to release it; `malloc_trim(0)`
after each session returns it at once (a few milliseconds, off the event loop).
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Return freed heap memory to the system (blocking: call it in a thread)."""
    if _TRIM is not None:
        _TRIM(0)
