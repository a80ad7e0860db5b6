"""Warren's memory: facts and preferences he asked Nabu to keep, in SQLite beside the conversations.

One row per thing he asked to keep, with the words he used. A fact about the
same subject replaces the old one in place ("my pills are in the bathroom
cabinet now" replaces "my pills are in the kitchen drawer": both are about "my
pills"), so the LLM never sees two answers to one question. Preferences are
rows too (`kind = 'preference'`, one per `subject`: speech_rate,
temperature_unit, address_as, home_town) whose `value` Nabu acts on.

Forgetting erases the words at once; the row keeps only when it was made and
forgotten, so nothing he asked to forget stays on disk in the table.

The same file is opened by `nabu serve`, `nabu talk` and `nabu mic` (and by
several at once: WAL, a busy timeout), so what one process saved the next one
knows. Every operation is a few rows; they run under one lock on one
connection, and the async wrappers keep them off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from loguru import logger

from processors.text_normalise import normalise

DB_NAME = "memory.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL DEFAULT 'fact' CHECK (kind IN ('fact', 'preference')),
    subject TEXT NOT NULL,
    words TEXT NOT NULL,
    value TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL CHECK (source IN ('spoken', 'assistant', 'family')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    forgotten_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS live_fact_per_subject
    ON facts (kind, subject) WHERE forgotten_at IS NULL;
"""

Kind = Literal["fact", "preference"]
Source = Literal["spoken", "assistant", "family"]
PREFERENCES = ("speech_rate", "temperature_unit", "address_as", "home_town")

# The verb that ends a fact's subject: "my pills | are in the drawer".
_SUBJECT_VERBS = frozenset({"is", "are", "am", "was", "were"})
# Words that date a statement without changing what it is about.
_TRAILING = frozenset({"now", "anymore", "today", "these", "days", "nowadays"})
_LEADING = frozenset({"that", "also", "and", "so", "actually"})
# Too general to be what a fact is about: "I am allergic to penicillin" and "I am diabetic"
# are two facts, not one corrected.
_NO_SUBJECT = frozenset({"i", "we", "it", "he", "she", "they", "this", "that", "there", "you"})

# First person (his words) to second person (Nabu's read-back). Lower case keys.
_SECOND_PERSON = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i'm": "you're",
    "i've": "you've",
    "i'll": "you'll",
    "i'd": "you'd",
    "am": "are",
    "was": "was",
    "we": "you",
    "us": "you",
    "our": "your",
    "ours": "yours",
    "we're": "you're",
    "we've": "you've",
}


def subject_of(words: str) -> str:
    """What a fact is about, for replacing it: the words before its first is/are.

    Offline and predictable (Warren's facts are mostly "my X is/are Y"); a fact
    without such a verb is its own subject, so only the same fact said again
    replaces it.
    """
    tokens = normalise(words).split()
    while tokens and tokens[0] in _LEADING:
        tokens = tokens[1:]
    while tokens and tokens[-1] in _TRAILING:
        tokens = tokens[:-1]
    for i, token in enumerate(tokens):
        if token in _SUBJECT_VERBS and i > 0:
            head = " ".join(tokens[:i])
            return " ".join(tokens) if head in _NO_SUBJECT else head
        if token.endswith("'s") and i < len(tokens) - 1 and tokens[i + 1] not in _SUBJECT_VERBS:
            # "the key's under the mat": a contracted "is" (a possessive is followed by a noun,
            # which this cannot tell apart; a later is/are decides when there is one).
            if not any(t in _SUBJECT_VERBS for t in tokens[i + 1 :]):
                return " ".join([*tokens[:i], token[:-2]])
    return " ".join(tokens)


def tidy_words(words: str) -> str:
    """His words as kept: no trailing punctuation, no leading "that", first letter as said."""
    text = " ".join(words.split()).strip().rstrip(".!?,;:").strip()
    first, _, rest = text.partition(" ")
    if first.lower() in _LEADING and rest:
        text = rest
    return text


def second_person(words: str) -> str:
    """ "my pills are in the drawer" -> "your pills are in the drawer" (for reading back)."""
    out = []
    previous = ""
    for raw in tidy_words(words).split(" "):
        core = raw.strip(",;:")
        lower = core.lower().replace("’", "'")
        swap = _SECOND_PERSON.get(lower)
        if lower == "am" and previous not in ("i", "i'm"):
            swap = None
        if lower == "was" and previous == "i":
            swap = "were"
        if swap is not None:  # read back mid-sentence ("I'll remember that your ..."): lower case
            out.append(raw.replace(core, swap))
        else:
            out.append(raw)
        previous = lower
    return " ".join(out)


@dataclass(frozen=True)
class Fact:
    """One thing Warren asked Nabu to keep."""

    id: int
    kind: Kind
    subject: str
    words: str
    value: str
    source: Source
    created_at: float
    updated_at: float

    @property
    def spoken(self) -> str:
        """The fact as Nabu says it back to him."""
        if self.kind == "preference" and self.subject == "speech_rate":
            return "you like me to speak slower"
        return second_person(self.words)

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Saved:
    """What a save did: the fact now kept, and the one it replaced (for an undo)."""

    fact: Fact
    replaced: Fact | None = None

    @property
    def unchanged(self) -> bool:
        return self.replaced is not None and self.replaced.words == self.fact.words


class MemoryStoreError(Exception):
    """A request the store cannot honour (no such fact, empty words); the message says why."""


class MemoryStore:
    """Facts and preferences in SQLite (WAL), shared by every Nabu process on this machine."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / DB_NAME
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> MemoryStore:
        with self._lock:
            if self._db is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # he asked to keep it: survive a power cut
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db = db
        logger.info(f"Memory: {self.path} ({len(self.live())} facts and preferences)")
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("memory store is not open")
        return self._db

    # --- reading ----------------------------------------------------------------------------

    _COLUMNS = "id, kind, subject, words, value, source, created_at, updated_at"

    def live(self, kind: Kind | None = None) -> list[Fact]:
        """Everything kept now, oldest first."""
        where = "forgotten_at IS NULL" + (" AND kind = ?" if kind else "")
        with self._lock:
            rows = self.db.execute(
                f"SELECT {self._COLUMNS} FROM facts WHERE {where} ORDER BY created_at, id",
                (kind,) if kind else (),
            ).fetchall()
        return [Fact(*row) for row in rows]

    def get(self, fact_id: int) -> Fact | None:
        with self._lock:
            row = self.db.execute(
                f"SELECT {self._COLUMNS} FROM facts WHERE id = ? AND forgotten_at IS NULL",
                (fact_id,),
            ).fetchone()
        return Fact(*row) if row else None

    def preferences(self) -> dict[str, str]:
        return {f.subject: f.value for f in self.live("preference")}

    # --- writing ----------------------------------------------------------------------------

    def save(
        self,
        words: str,
        *,
        source: Source,
        kind: Kind = "fact",
        subject: str | None = None,
        value: str = "",
    ) -> Saved:
        """Keep `words`; a live row about the same subject is replaced in place."""
        words = tidy_words(words)
        if not words:
            raise MemoryStoreError("there is nothing to remember in that")
        if kind == "preference" and subject not in PREFERENCES:
            known = ", ".join(PREFERENCES)
            raise MemoryStoreError(f"unknown preference {subject!r}; one of {known}")
        subject = subject or subject_of(words)
        now = time.time()
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                f"SELECT {self._COLUMNS} FROM facts "
                "WHERE kind = ? AND subject = ? AND forgotten_at IS NULL",
                (kind, subject),
            ).fetchone()
            old = Fact(*row) if row else None
            if old is not None:
                self.db.execute(
                    "UPDATE facts SET words = ?, value = ?, source = ?, updated_at = ? "
                    "WHERE id = ?",
                    (words, value, source, now, old.id),
                )
                fact_id = old.id
            else:
                fact_id = self.db.execute(
                    "INSERT INTO facts (kind, subject, words, value, source, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind, subject, words, value, source, now, now),
                ).lastrowid
        saved = Saved(self.get(fact_id), old)
        verb = "replaced" if old else "saved"
        logger.info(f"Memory: {verb} {kind} #{fact_id} ({source}, subject [{subject}])")
        return saved

    def edit(self, fact_id: int, words: str, *, source: Source = "family") -> Fact:
        """New words for a fact (its subject follows the words; a preference keeps its own)."""
        fact = self.get(fact_id)
        if fact is None:
            raise MemoryStoreError(f"no fact {fact_id}")
        if fact.kind == "preference":
            raise MemoryStoreError("a preference is changed by saving it again (it replaces)")
        words = tidy_words(words)
        if not words:
            raise MemoryStoreError("the new words are empty")
        subject = subject_of(words)
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            clash = self.db.execute(
                "SELECT id FROM facts WHERE kind = ? AND subject = ? AND id != ? "
                "AND forgotten_at IS NULL",
                (fact.kind, subject, fact_id),
            ).fetchone()
            if clash:  # the edit now says the same thing as another fact: that one goes
                self._forget_row(clash[0], time.time())
            self.db.execute(
                "UPDATE facts SET words = ?, subject = ?, source = ?, updated_at = ? WHERE id = ?",
                (words, subject, source, time.time(), fact_id),
            )
        logger.info(f"Memory: edited {fact.kind} #{fact_id} ({source})")
        return self.get(fact_id)

    def restore(self, previous: Fact) -> None:
        """Put a replaced fact back exactly as it was (undoing a misheard replacement)."""
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE facts SET words = ?, value = ?, source = ?, updated_at = ? "
                "WHERE id = ? AND forgotten_at IS NULL",
                (previous.words, previous.value, previous.source, previous.updated_at, previous.id),
            )

    def unforget(self, fact: Fact) -> bool:
        """Bring back a fact just forgotten ("no" to "I've forgotten that ..."); False when
        something about the same subject has been kept since."""
        try:
            with self._lock, self.db:
                self.db.execute("BEGIN IMMEDIATE")
                done = self.db.execute(
                    "UPDATE facts SET words = ?, value = ?, subject = ?, forgotten_at = NULL "
                    "WHERE id = ? AND forgotten_at IS NOT NULL",
                    (fact.words, fact.value, fact.subject, fact.id),
                ).rowcount
        except sqlite3.IntegrityError:
            return False
        return done > 0

    def _forget_row(self, fact_id: int, now: float) -> int:
        return self.db.execute(
            "UPDATE facts SET words = '', value = '', subject = '', forgotten_at = ? "
            "WHERE id = ? AND forgotten_at IS NULL",
            (now, fact_id),
        ).rowcount

    def forget(self, fact_id: int) -> bool:
        """Erase one fact's words; False when there was no such live fact."""
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            done = self._forget_row(fact_id, time.time()) > 0
        if done:
            logger.info(f"Memory: forgot #{fact_id}")
        return done

    def forget_all(self) -> int:
        """Erase everything kept (facts and preferences); how many there were."""
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            n = self.db.execute(
                "UPDATE facts SET words = '', value = '', subject = '', forgotten_at = ? "
                "WHERE forgotten_at IS NULL",
                (time.time(),),
            ).rowcount
        logger.info(f"Memory: forgot everything ({n} rows)")
        return n

    # --- async wrappers (for the pipeline and the HTTP API) ---------------------------------

    async def alive(self, kind: Kind | None = None) -> list[Fact]:
        return await asyncio.to_thread(self.live, kind)

    async def asave(self, words: str, **kw) -> Saved:
        return await asyncio.to_thread(lambda: self.save(words, **kw))

    async def aedit(self, fact_id: int, words: str, **kw) -> Fact:
        return await asyncio.to_thread(lambda: self.edit(fact_id, words, **kw))

    async def aforget(self, fact_id: int) -> bool:
        return await asyncio.to_thread(self.forget, fact_id)

    async def aforget_all(self) -> int:
        return await asyncio.to_thread(self.forget_all)

    async def arestore(self, previous: Fact) -> None:
        await asyncio.to_thread(self.restore, previous)

    async def aunforget(self, fact: Fact) -> bool:
        return await asyncio.to_thread(self.unforget, fact)


def best_match(facts: list[Fact], said: str) -> list[Fact]:
    """The facts `said` most plausibly names ("forget about my pills"): most shared words first.

    Returns the tied best (empty when nothing shares a meaningful word).
    """
    ignore = {"my", "the", "a", "an", "i", "is", "are", "that", "about", "of", "to", "in", "it"}
    wanted = set(normalise(said).split()) - ignore
    if not wanted:
        return []
    scored = []
    for fact in facts:
        words = set(normalise(f"{fact.words} {fact.subject.replace('_', ' ')}").split()) - ignore
        shared = len(wanted & words)
        if shared:
            scored.append((shared, fact))
    if not scored:
        return []
    top = max(s for s, _ in scored)
    return [f for s, f in scored if s == top]


_shared: dict[Path, MemoryStore] = {}
_shared_lock = threading.Lock()


def shared_store(directory: Path) -> MemoryStore:
    """The one open store for `directory` in this process (every session of `nabu serve`)."""
    key = Path(directory).expanduser().resolve()
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = MemoryStore(key).open()
        return store
