"""Helpers shared by the test files: log capture, the conversation store, live sessions."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from loguru import logger

from nabu_pipeline.conversation_store import DB_NAME


@contextmanager
def captured_logs(level: str = "WARNING"):
    """Every loguru line at `level` or above while the block runs, as "LEVEL message"."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level=level, format="{level} {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


def stored(session: str, data: Path | None = None) -> list[tuple[str, str]]:
    """(role, content) of a session's messages in the conversation store, oldest first."""
    data = data or Path(os.environ["NABU_DATA_DIR"])
    db = sqlite3.connect(data / DB_NAME)
    try:
        return db.execute(
            "SELECT role, content FROM messages WHERE session_id = ? ORDER BY id", (session,)
        ).fetchall()
    finally:
        db.close()


async def wait_sessions(srv, n: int, within_s: float = 20) -> float:
    """Wait until the server reports `n` live sessions; the seconds it took."""
    start = time.monotonic()
    while (now := (await asyncio.to_thread(srv.health))["sessions"]) != n:
        assert time.monotonic() - start < within_s, f"{now} sessions, expected {n}"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def server_tasks(srv, samples: int = 1) -> list[str]:
    """The in-process server's live asyncio tasks, each as its name and coroutine.

    With `samples` > 1, the most seen over that many looks 0.2 s apart: some of the
    server's own tasks come and go (the reminder scheduler's `wait_for` task is
    replaced on each tick), so a baseline is its steady size, not one instant's.
    """

    async def described() -> list[str]:
        return sorted(
            f"{t.get_name()}: {t.get_coro().__qualname__}"
            for t in asyncio.all_tasks()
            if not t.done()
        )

    seen: list[list[str]] = []
    for i in range(samples):
        if i:
            time.sleep(0.2)
        seen.append(asyncio.run_coroutine_threadsafe(described(), srv.server.loop).result(5))
    return max(seen, key=len)


async def wait_server_tasks(srv, baseline: list[str], within_s: float = 30) -> list[str]:
    """Wait until the server runs no more tasks than `baseline`; the tasks then running.

    A session's last tasks (the websocket handler, its pipeline's shutdown) may still be
    finishing when the server already counts the session gone, longer on a busy machine;
    only tasks still there after `within_s` were left behind.
    """
    start = time.monotonic()
    while len(now := await asyncio.to_thread(server_tasks, srv)) > len(baseline):
        if time.monotonic() - start > within_s:
            break
        await asyncio.sleep(0.2)
    return now


def nabu(*args: str | Path, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `nabu` command (this checkout's) with these arguments; output as text."""
    return subprocess.run(
        [sys.executable, "-m", "nabu_pipeline.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def marys_safety(**settings) -> dict:
    """The safety section of the tests' family: Warren's daughter Mary, and `settings`."""
    return {"contact_name": "Mary", "contact_relation": "daughter", **settings}
