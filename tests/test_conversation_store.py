"""The conversation store on a real SQLite file: durable per message, per session, pruned."""

import asyncio
import sqlite3
import subprocess
import sys
import time

import pytest

from nabu_pipeline.conversation_store import DB_NAME, ConversationStore


@pytest.fixture
async def store(tmp_path):
    s = await ConversationStore(tmp_path, retention_days=30).open()
    yield s
    await s.close()


async def _turns(store, session, n, start=0):
    for i in range(start, start + n):
        await store.append(session, "user", f"question {i}")
        await store.append(session, "assistant", f"answer {i}")


async def test_sessions_see_only_their_own_history(store):
    await _turns(store, "session-aaaa", 2)
    await store.append("session-bbbb", "user", "something private")
    messages, known = await store.load("session-aaaa", turns=10)
    assert known
    assert [m["content"] for m in messages] == ["question 0", "answer 0", "question 1", "answer 1"]
    assert all("private" not in m["content"] for m in messages)
    assert await store.load("never-seen", turns=10) == ([], False)


async def test_load_keeps_the_last_turns_the_llm_would_see(store):
    await _turns(store, "session-aaaa", 15)
    messages, _ = await store.load("session-aaaa", turns=3)
    assert [m["content"] for m in messages] == [
        "question 12",
        "answer 12",
        "question 13",
        "answer 13",
        "question 14",
        "answer 14",
    ]
    assert (await store.load("session-aaaa", turns=0))[0] == []


async def test_interrupted_answers_are_marked(store):
    await store.append("session-aaaa", "user", "tell me a story")
    await store.append("session-aaaa", "assistant", "Once upon a", interrupted=True)
    stored = await store.messages("session-aaaa")
    assert stored[-1] == {"role": "assistant", "content": "Once upon a", "interrupted": True}


async def test_wal_mode_and_survives_a_killed_writer(tmp_path):
    """A process killed right after a commit loses nothing it committed (issue 7's SIGKILL)."""
    code = (
        "import asyncio, os, signal\n"
        "from nabu_pipeline.conversation_store import ConversationStore\n"
        "async def main():\n"
        f"    s = await ConversationStore({str(tmp_path)!r}, retention_days=30).open()\n"
        "    await s.append('session-kill', 'user', 'what time is it')\n"
        "    await s.append('session-kill', 'assistant', 'It is noon.')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    s = await ConversationStore(tmp_path, retention_days=30).open()
    try:
        messages, known = await s.load("session-kill", turns=10)
    finally:
        await s.close()
    assert known and [m["content"] for m in messages] == ["what time is it", "It is noon."]


async def test_retention_prunes_old_messages_only(tmp_path):
    s = await ConversationStore(tmp_path, retention_days=1).open()
    try:
        await _turns(s, "session-old1", 1)
        await _turns(s, "session-new1", 1)
        old = time.time() - 2 * 86400
        s.db.execute("UPDATE messages SET created_at = ? WHERE session_id = 'session-old1'", (old,))
        s.db.execute("UPDATE sessions SET last_seen_at = ? WHERE id = 'session-old1'", (old,))
        assert await s.prune() == 2
        assert await s.load("session-old1", turns=10) == ([], False)
        assert len((await s.load("session-new1", turns=10))[0]) == 2
    finally:
        await s.close()
    keep = await ConversationStore(tmp_path, retention_days=0).open()
    try:
        assert await keep.prune() == 0
    finally:
        await keep.close()


async def test_no_audio_column(store):
    columns = {row[1] for row in store.db.execute("PRAGMA table_info(messages)")}
    assert columns == {"id", "session_id", "role", "content", "interrupted", "created_at"}


async def test_empty_sessions_are_pruned_and_the_store_is_private(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    s = await ConversationStore(data, retention_days=0).open()  # 0: messages kept forever
    try:
        await _turns(s, "session-kept", 1)
        # A row an older version added for a connection that never said anything.
        s.db.execute("INSERT INTO sessions VALUES ('session-empty', 0, 0)")
        assert await s.prune() == 0
        rows = s.db.execute("SELECT id FROM sessions").fetchall()
        assert rows == [("session-kept",)]
    finally:
        await s.close()
    assert (data / DB_NAME).stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700
