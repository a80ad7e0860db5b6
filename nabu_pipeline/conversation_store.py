"""The conversation store: each session's history in SQLite; a reconnect or restart loses nothing.

One row per message that entered the LLM context: Warren's words as soon as
his turn closes, Nabu's answer as soon as its turn ends (what was actually
spoken, marked when he interrupted it). Rows are appended and committed one
by one (WAL, synchronous=FULL), so a server killed mid-reply keeps every
completed turn and even the question it was answering. No audio is stored.

A resumed session gets back its own rows only (keyed by session id), trimmed
to the last `history_turns` turns as the LLM would see them. A session gets
its row with its first message, so connections that never said anything leave
nothing; rows older than the retention period, and sessions left without
messages, are deleted at start-up and hourly.

Warren's words are private: the folder is made 0700 and the database 0600
(SQLite gives its -wal and -shm files the database's mode).

sqlite3 is synchronous; every call runs on one dedicated thread, so the
event loop never waits on the disk and the connection is never shared
between threads.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loguru import logger

from processors.history_window import trim_to_turns

DB_NAME = "conversations.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    last_seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, id);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (created_at);
"""
DAY_S = 86400.0


class ConversationStore:
    """SQLite conversation history, keyed by session id."""

    def __init__(self, directory: Path, *, retention_days: float):
        self.path = Path(directory) / DB_NAME
        self._retention_days = retention_days
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nabu-store")
        self._db: sqlite3.Connection | None = None

    # --- lifecycle (blocking; call through `run`) --------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        for path in (
            self.path,
            *(self.path.with_name(self.path.name + x) for x in ("-wal", "-shm")),
        ):
            if path.exists():
                os.chmod(path, 0o600)  # also a store created before this rule
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed turn survives even a power cut, not only a killed process.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> ConversationStore:
        await self._run(self._open)
        removed = await self.prune()
        logger.info(
            f"Conversation store: {self.path} (retention "
            f"{'forever' if self._retention_days == 0 else f'{self._retention_days:g} days'}"
            f"{f', pruned {removed} old messages' if removed else ''})"
        )
        return self

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    # --- blocking operations ------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("conversation store is not open")
        return self._db

    def _touch(self, session_id: str, now: float) -> None:
        self.db.execute(
            "INSERT INTO sessions (id, created_at, last_seen_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            (session_id, now, now),
        )

    def _append(self, session_id: str, role: str, content: str, interrupted: bool) -> None:
        now = time.time()
        with self.db:  # one transaction: session touch and message commit together
            self.db.execute("BEGIN IMMEDIATE")
            self._touch(session_id, now)
            self.db.execute(
                "INSERT INTO messages (session_id, role, content, interrupted, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, role, content, int(interrupted), now),
            )

    def _load(self, session_id: str, turns: int) -> tuple[list[dict], bool]:
        known = self.db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
        # Newest first, a generous bound (a turn is usually two rows), then trimmed exactly.
        rows = self.db.execute(
            "SELECT role, content FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ?",
            (session_id, max(40, 8 * (turns + 1))),
        ).fetchall()
        messages = [{"role": role, "content": content} for role, content in reversed(rows)]
        # A stored history ends with a completed turn, so the next question makes it turns + 1.
        return trim_to_turns(messages, max(turns - 1, 0)) if turns else [], known is not None

    def _prune(self) -> int:
        removed = 0
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if self._retention_days != 0:
                cutoff = time.time() - self._retention_days * DAY_S
                removed = self.db.execute(
                    "DELETE FROM messages WHERE created_at < ?", (cutoff,)
                ).rowcount
            self.db.execute(
                "DELETE FROM sessions WHERE NOT EXISTS "
                "(SELECT 1 FROM messages WHERE messages.session_id = sessions.id)"
            )
        return removed

    def _messages(self, session_id: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT role, content, interrupted FROM messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()
        return [{"role": r, "content": c, "interrupted": bool(i)} for r, c, i in rows]

    # --- async API ----------------------------------------------------------------------------

    async def append(
        self, session_id: str, role: str, content: str, *, interrupted: bool = False
    ) -> None:
        """Commit one context message (durable when this returns)."""
        await self._run(self._append, session_id, role, content, interrupted)

    async def load(self, session_id: str, turns: int) -> tuple[list[dict], bool]:
        """The session's last `turns` completed turns as LLM messages, and whether it exists."""
        return await self._run(self._load, session_id, turns)

    async def prune(self) -> int:
        """Delete messages older than the retention period and empty sessions; returns how many
        messages."""
        return await self._run(self._prune)

    async def messages(self, session_id: str) -> list[dict]:
        """Every stored message of a session, oldest first (for tests and inspection)."""
        return await self._run(self._messages, session_id)


def record_turns(store: ConversationStore, session_id: str, user_aggregator, assistant_aggregator):
    """Commit each message the session's aggregators add to its LLM context, as they add it.

    Warren's words are written when his turn closes (before the LLM answers),
    Nabu's answer when its turn ends, with what was actually spoken. Stop
    phrases and "say that again" never enter the context, so they are never
    stored either.
    """

    @user_aggregator.event_handler("on_user_turn_message_added")
    async def _user_added(_aggregator, message) -> None:
        if message.content and message.content.strip():
            await store.append(session_id, "user", message.content.strip())

    @assistant_aggregator.event_handler("on_assistant_turn_stopped")
    async def _assistant_stopped(_aggregator, message) -> None:
        if message.content and message.content.strip():
            await store.append(
                session_id, "assistant", message.content.strip(), interrupted=message.interrupted
            )
