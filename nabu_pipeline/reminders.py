"""Reminders and timers that do not depend on Warren's memory: kept, said, repeated, escalated.

Saved reminders live in SQLite beside the conversation store (`reminders.sqlite3`
in the data directory), so a restart loses none. One scheduler per process runs
on the server's event loop; its clock is injectable so tests can move time.

When one is due, every connected session that listens (his phone, `nabu mic`)
says it as if Nabu had started a turn. Not acknowledged ("okay", "done") within
`safety.reminder_repeat_after_s`, it is said once more; still not acknowledged
`safety.reminder_escalate_min` minutes after it was due, the family is alerted.
Due while nothing is connected, the family is alerted at once and Warren hears
about it when he next connects.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from loguru import logger

from nabu_pipeline.alerts import AlertService
from nabu_pipeline.config import LocaleConfig, SafetyConfig
from processors.firm_speech import firm_speech
from processors.reminder_time import (
    ReminderPlan,
    next_due,
    spoken_clock,
    spoken_duration,
    spoken_when,
)

DB_NAME = "reminders.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reminders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('reminder', 'timer')),
    task TEXT NOT NULL,
    rule TEXT NOT NULL DEFAULT '',
    dtstart_local TEXT NOT NULL,
    duration_s REAL NOT NULL DEFAULT 0,
    next_due REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reminders_due ON reminders (active, next_due);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    told_at REAL
);
"""


@dataclass(frozen=True)
class Reminder:
    id: int
    kind: str
    task: str
    rule: str
    dtstart_local: str
    duration_s: float
    next_due: float
    """Epoch seconds."""

    @property
    def label(self) -> str:
        if self.kind == "timer":
            return f"your {spoken_duration(self.duration_s, adjective=True)} timer"
        return f"to {self.task}"


class Listener(Protocol):
    """A connected session that can speak a reminder to Warren."""

    async def say(self, text: str, data: dict) -> None: ...


@dataclass
class Due:
    """A reminder said and waiting for "okay"."""

    reminder: Reminder
    due_at: float
    said: int = 0
    last_said: float = 0.0
    escalated: bool = False


class WorkerSpeaker:
    """Speaks into one session's pipeline as if Nabu had started a turn, plus an RTVI message."""

    def __init__(self, worker, *, rtvi: bool = True):
        self.worker = worker
        self.rtvi = rtvi

    async def say(self, text: str, data: dict) -> None:
        await self.worker.queue_frames([firm_speech(text, append_to_context=True)])
        if self.rtvi:
            await self.worker.rtvi.send_server_message(data)


class ReminderService:
    """The reminder store and its scheduler (one per process)."""

    def __init__(
        self,
        directory: Path,
        safety: SafetyConfig,
        locale: LocaleConfig,
        alerts: AlertService,
        *,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
    ):
        self.path = Path(directory) / DB_NAME
        self.safety = safety
        self.locale = locale
        self.alerts = alerts
        self.clock = clock
        self.tick_s = tick_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nabu-reminders")
        self._db: sqlite3.Connection | None = None
        self._listeners: list[Listener] = []
        self.waiting: dict[int, Due] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    # --- storage (blocking; on the store's own thread) ----------------------------------------

    async def _run(self, fn, *args):
        def call():
            if self._db is None and fn is not self._open:
                self._open()  # a session used before the scheduler started (nabu talk)
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        self._db = db

    def _rows(self, sql: str, *args) -> list[Reminder]:
        assert self._db is not None
        cols = "id, kind, task, rule, dtstart_local, duration_s, next_due"
        return [Reminder(*row) for row in self._db.execute(sql.format(cols=cols), args)]

    async def open(self) -> None:
        await self._run(self._open)

    async def start(self) -> None:
        """Open the store and run the scheduler on this event loop."""
        await self.open()
        self._task = asyncio.create_task(self._schedule_forever(), name="nabu-reminders")
        active = await self.active()
        logger.info(f"Reminders: {len(active)} active, kept in {self.path}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=False)

    async def add(self, plan: ReminderPlan) -> Reminder:
        def insert() -> int:
            assert self._db is not None
            cur = self._db.execute(
                "INSERT INTO reminders (kind, task, rule, dtstart_local, duration_s, next_due, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    plan.kind,
                    plan.task,
                    plan.rule,
                    plan.dtstart_local,
                    plan.duration_s,
                    plan.first_due.timestamp(),
                    time.time(),
                ),
            )
            return int(cur.lastrowid)

        rid = await self._run(insert)
        self._wake.set()
        (saved,) = await self._run(self._rows, "SELECT {cols} FROM reminders WHERE id = ?", rid)
        logger.info(f"Reminders: saved #{rid} {saved.label} ({plan.first_due.isoformat()})")
        return saved

    async def active(self) -> list[Reminder]:
        return await self._run(
            self._rows, "SELECT {cols} FROM reminders WHERE active = 1 ORDER BY next_due"
        )

    async def cancel(self, ids: list[int]) -> None:
        def update() -> None:
            assert self._db is not None
            self._db.executemany(
                "UPDATE reminders SET active = 0 WHERE id = ?", [(i,) for i in ids]
            )

        await self._run(update)
        for rid in ids:
            self.waiting.pop(rid, None)

    async def _advance(self, reminder: Reminder) -> None:
        """After it was said: the next time for a repeating one, else done."""
        zone = self.locale.tzinfo
        after = datetime.fromtimestamp(max(reminder.next_due, self.clock()), zone)
        nxt = next_due(reminder.rule, reminder.dtstart_local, zone, after)

        def update() -> None:
            assert self._db is not None
            if nxt is None:
                self._db.execute("UPDATE reminders SET active = 0 WHERE id = ?", (reminder.id,))
            else:
                self._db.execute(
                    "UPDATE reminders SET next_due = ? WHERE id = ?", (nxt.timestamp(), reminder.id)
                )

        await self._run(update)

    async def add_notice(self, text: str) -> None:
        def insert() -> None:
            assert self._db is not None
            self._db.execute(
                "INSERT INTO notices (text, created_at) VALUES (?, ?)", (text, time.time())
            )

        await self._run(insert)

    async def take_notices(self) -> list[str]:
        """What Warren has not heard yet (a reminder missed while away); marked as told."""

        def take() -> list[str]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT id, text FROM notices WHERE told_at IS NULL ORDER BY id"
            ).fetchall()
            self._db.executemany(
                "UPDATE notices SET told_at = ? WHERE id = ?", [(time.time(), r[0]) for r in rows]
            )
            return [r[1] for r in rows]

        return await self._run(take)

    # --- who is listening ---------------------------------------------------------------------

    def attach(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self._wake.set()

    def detach(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def connected(self) -> bool:
        return bool(self._listeners)

    async def greet(self, listener: Listener) -> None:
        """Attach a session that just connected and tell it what he missed while away."""
        self.attach(listener)
        for text in await self.take_notices():
            await listener.say(text, {"type": "nabu-notice", "text": text})

    def acknowledge(self) -> Due | None:
        """ "Okay" / "done": the reminder said most recently is done with."""
        if not self.waiting:
            return None
        rid = max(self.waiting, key=lambda i: self.waiting[i].last_said)
        due = self.waiting.pop(rid)
        logger.info(f"Reminders: #{rid} acknowledged after {self.clock() - due.due_at:.0f}s")
        return due

    # --- the scheduler ------------------------------------------------------------------------

    async def _schedule_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as e:  # one bad row must not stop every later reminder
                logger.exception(f"Reminders: scheduler error ({type(e).__name__}: {e})")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            except TimeoutError:
                pass

    async def tick(self) -> None:
        """Say what is due, repeat what is unanswered, escalate what is overdue."""
        now = self.clock()
        due = await self._run(
            self._rows,
            "SELECT {cols} FROM reminders WHERE active = 1 AND next_due <= ? ORDER BY next_due",
            now,
        )
        for reminder in due:
            if reminder.id in self.waiting:
                continue
            await self._fire(reminder, now)
        for rid, waiting in list(self.waiting.items()):
            overdue_s = now - waiting.due_at
            if overdue_s >= self.safety.reminder_escalate_min * 60 and not waiting.escalated:
                waiting.escalated = True
                self.waiting.pop(rid, None)
                await self._escalate(waiting.reminder, waiting.due_at, connected=True)
            elif (
                waiting.said < 2
                and now - waiting.last_said >= self.safety.reminder_repeat_after_s
                and self._listeners
            ):
                await self._say(waiting, again=True)

    def _words(self, reminder: Reminder, again: bool) -> str:
        name = self.locale.user_name
        if reminder.kind == "timer":
            length = spoken_duration(reminder.duration_s, adjective=True)
            text = f"{name}, your {length} timer is done."
        else:
            text = f"{name}, it's time to {reminder.task}."
        if again:
            text = f"Reminder: {text[len(name) + 2 :]} Say okay when it's done."
        return text

    async def _say(self, waiting: Due, *, again: bool) -> None:
        text = self._words(waiting.reminder, again)
        waiting.said += 1
        waiting.last_said = self.clock()
        data = {
            "type": "nabu-reminder",
            "id": waiting.reminder.id,
            "kind": waiting.reminder.kind,
            "text": text,
            "repeat": again,
        }
        logger.info(f"Reminders: saying #{waiting.reminder.id} ({'again' if again else 'due'})")
        for listener in list(self._listeners):
            try:
                await listener.say(text, data)
            except Exception as e:
                logger.warning(f"Reminders: a session could not say it ({type(e).__name__}: {e})")

    async def _fire(self, reminder: Reminder, now: float) -> None:
        await self._advance(reminder)
        if self._listeners:
            waiting = Due(reminder=reminder, due_at=reminder.next_due)
            self.waiting[reminder.id] = waiting
            await self._say(waiting, again=False)
            return
        await self._escalate(reminder, reminder.next_due, connected=False)

    async def _escalate(self, reminder: Reminder, due_at: float, *, connected: bool) -> None:
        zone = self.locale.tzinfo
        at = spoken_clock(datetime.fromtimestamp(due_at, zone), self.locale.clock)
        name = self.locale.user_name
        what = (
            f"his {spoken_duration(reminder.duration_s, adjective=True)} timer"
            if reminder.kind == "timer"
            else f"his reminder to {reminder.task.replace('your ', 'his ')}"
        )
        if connected:
            message = f"{name} has not answered {what}, due at {at}."
        else:
            message = f"{name} missed {what}, due at {at}: his phone was not connected."
        logger.warning(f"Reminders: #{reminder.id} escalated: {message}")
        self.alerts.raise_alert("reminder-missed", message, said="", session="")
        contact = self.safety.contact_short
        told = f"I've let {contact} know." if self.alerts.configured else ""
        if connected:
            text = f"You haven't answered your reminder to {reminder.task}. {told}".strip()
            if reminder.kind == "timer":
                text = f"Your timer went off at {at} and you haven't answered. {told}".strip()
            for listener in list(self._listeners):
                try:
                    await listener.say(text, {"type": "nabu-reminder-escalated", "text": text})
                except Exception as e:
                    logger.warning(f"Reminders: could not say it ({type(e).__name__}: {e})")
        else:
            label = "timer" if reminder.kind == "timer" else f"reminder to {reminder.task}"
            text = f"While you were away, your {label} was due at {at}. {told}".strip()
            await self.add_notice(text)

    # --- what Nabu says about them ------------------------------------------------------------

    def describe(self, reminder: Reminder, now: float | None = None) -> str:
        zone = self.locale.tzinfo
        when = spoken_when(
            datetime.fromtimestamp(reminder.next_due, zone),
            datetime.fromtimestamp(self.clock() if now is None else now, zone),
            reminder.rule,
            self.locale.clock,
        )
        if reminder.kind == "timer":
            return f"a {spoken_duration(reminder.duration_s, adjective=True)} timer, ending {when}"
        return f"to {reminder.task} {when}"
