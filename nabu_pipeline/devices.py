"""Paired devices: one token per phone, stored hashed, revocable (`nabu devices list|revoke`).

Warren's phone never holds the server's master token (NABU_AUTH_TOKEN): pairing
gives it its own token, so a lost phone is revoked without touching anything
else. Only a SHA-256 of each token is kept (tokens are 256 random bits, so no
salt or slow hash is needed); the token itself exists only in the pairing link
and in the phone's storage.

A pairing token starts *pending*: `nabu serve` keeps one pending token to show
as a link and QR code. The first connection that presents it turns it into a
paired device (named after its browser), so one link pairs exactly one phone;
the server then shows a fresh link. A pending token not used within a day is
void (a pairing link found in an old photo pairs nothing).

The table lives in `devices.sqlite3` beside the conversation store, in the
data directory. Calls are short and synchronous; the server runs them off its
event loop.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "devices.sqlite3"
TOKEN_BYTES = 32
PENDING_TTL_S = 24 * 3600.0
PENDING = "pending"
PAIRED = "paired"
REVOKED = "revoked"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'paired', 'revoked')),
    created REAL NOT NULL,
    paired REAL,
    last_seen REAL
)
"""


class DeviceError(Exception):
    """A device command that cannot be done (unknown id); the CLI prints it."""


@dataclass(frozen=True)
class Device:
    """One row of the device table (never the token)."""

    id: int
    name: str
    state: str
    created: float
    paired: float | None
    last_seen: float | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceStore:
    """The device-token table in `<data dir>/devices.sqlite3`."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / DB_NAME

    def _db(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        return db

    def new_pending(self, name: str = "phone (not paired yet)") -> str:
        """A fresh pairing token (and expired ones dropped); returns the token, shown once."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with closing(self._db()) as db, db:
            db.execute(
                "DELETE FROM devices WHERE state = ? AND created < ?",
                (PENDING, time.time() - PENDING_TTL_S),
            )
            db.execute(
                "INSERT INTO devices (name, token_sha256, state, created) VALUES (?, ?, ?, ?)",
                (name, token_hash(token), PENDING, time.time()),
            )
        return token

    def check(self, token: str, *, device_name: str = "phone") -> Device | None:
        """The device `token` belongs to, pairing it if it was pending; None if not valid."""
        if not token:
            return None
        digest = token_hash(token)
        now = time.time()
        with closing(self._db()) as db, db:
            row = db.execute(
                "SELECT id, state, created FROM devices WHERE token_sha256 = ?", (digest,)
            ).fetchone()
            if row is None or row[1] == REVOKED:
                return None
            if row[1] == PENDING and row[2] < now - PENDING_TTL_S:
                return None
            if row[1] == PENDING:
                db.execute(
                    "UPDATE devices SET state = ?, name = ?, paired = ?, last_seen = ? "
                    "WHERE id = ?",
                    (PAIRED, device_name[:80], now, now, row[0]),
                )
            else:
                db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, row[0]))
            return self._get(db, row[0])

    def is_pending(self, token: str) -> bool:
        """True while `token` is an unused, unexpired pairing token."""
        with closing(self._db()) as db:
            row = db.execute(
                "SELECT state, created FROM devices WHERE token_sha256 = ?", (token_hash(token),)
            ).fetchone()
        return row is not None and row[0] == PENDING and row[1] >= time.time() - PENDING_TTL_S

    def list(self, *, include_pending: bool = False) -> list[Device]:
        with closing(self._db()) as db:
            rows = db.execute(
                "SELECT id, name, state, created, paired, last_seen FROM devices ORDER BY id"
            ).fetchall()
        devices = [Device(*r) for r in rows]
        return [d for d in devices if include_pending or d.state != PENDING]

    def revoke(self, device_id: int) -> Device:
        """Revoke a device: its token stops working at once (new connections)."""
        with closing(self._db()) as db, db:
            if db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone() is None:
                raise DeviceError(f"no device with id {device_id} (see `nabu devices list`)")
            db.execute("UPDATE devices SET state = ? WHERE id = ?", (REVOKED, device_id))
            return self._get(db, device_id)

    @staticmethod
    def _get(db: sqlite3.Connection, device_id: int) -> Device:
        row = db.execute(
            "SELECT id, name, state, created, paired, last_seen FROM devices WHERE id = ?",
            (device_id,),
        ).fetchone()
        return Device(*row)


def format_devices(devices: list[Device]) -> str:
    """`nabu devices list` output: one line per device."""
    if not devices:
        return "No paired devices. Open the pairing link `nabu serve` prints on the phone."

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    lines = [f"{'ID':>4}  {'STATE':<8}  {'PAIRED':<16}  {'LAST SEEN':<16}  NAME"]
    for d in devices:
        lines.append(
            f"{d.id:>4}  {d.state:<8}  {when(d.paired):<16}  {when(d.last_seen):<16}  {d.name}"
        )
    return "\n".join(lines)
