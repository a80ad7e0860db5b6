"""Warren's own words for Whisper's prompt, from what Nabu already knows (issue 19).

Whisper base hears "Siobhan", "Lisinopril" or "the Ecobee" as ordinary words unless
its prompt names them (the vocabulary suite: 1 of 24 such terms heard with tiny.en and
no prompt, 17 with one). The family could type them all into `stt.vocabulary`, but most
are already known: the names and aliases of his Home Assistant devices, its areas, and
the names in facts he asked Nabu to keep ("my daughter Siobhan visits on Sundays").

The prompt is bounded (a longer one costs decoding time and makes Whisper likelier to
read it back as speech), and filled most useful first: what the family typed, then the
words he corrected Nabu to ("no, I said the porch light": processors/corrections.py,
kept in the data directory), then the names in his facts (people, medicines: the words
Whisper knows least), then his devices
by name and alias, then his areas. Common words Whisper already hears ("light",
"kitchen") stay in a device's name: the name as a whole is what he says.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from loguru import logger

from nabu_pipeline.home_assistant import HomeAssistant
from nabu_pipeline.memory_store import MemoryStore

MAX_TERMS = 40
MAX_CHARS = 400
"""About 100 of Whisper's tokens, under half of the 224 its prompt may hold."""
MAX_LEARNED = 20
"""Words learned from his corrections, newest first; older ones drop off."""
LEARNED_FILE = "learned_words.json"
MEMORY_REREAD_S = 30.0
"""Facts change rarely (and in other processes too: the family's app); read again this often."""

# Capitalised words that are not names (a fact the family typed may begin with any of the
# first; what Warren said follows "remember that", so its first word is capitalised only
# when it is a name).
_NOT_NAMES = frozenset(
    "A An The My Our Your His Her Their It It's Its He She We They You This That These Those "
    "There Here What When Where Who How Why If And But Or So To On In At For Every Each Please "
    "I I'm I'll I've I'd Mr Mrs Ms Dr Doctor Nabu".split()
    + [
        f"{day}{s}"
        for day in "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
        for s in ("", "s")
    ]
    + "January February March April May June July August September October November".split()
    + ["December"]
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_LEADING = frozenset("the a an my our that this".split())


def names_in(words: str) -> list[str]:
    """Capitalised words, joined when they follow each other ("Doctor Okonkwo" gives
    "Okonkwo"; "New Rochelle" stays one name)."""
    found: list[str] = []
    run: list[str] = []
    tokens = _WORD.findall(words)
    for token in tokens:
        named = token[0].isupper() and token.strip("'") not in _NOT_NAMES
        if named:
            run.append(token.removesuffix("'s"))
        elif run:
            found.append(" ".join(run))
            run = []
    if run:
        found.append(" ".join(run))
    return found


class KnownWords:
    """The terms for Whisper's prompt now: iterate it, or call `terms()`."""

    def __init__(
        self,
        configured: tuple[str, ...] = (),
        home: HomeAssistant | None = None,
        memory: MemoryStore | None = None,
        *,
        data_dir: Path | None = None,
        max_terms: int = MAX_TERMS,
        max_chars: int = MAX_CHARS,
        clock=time.monotonic,
    ):
        self._configured = configured
        self._home = home
        self._memory = memory
        self._max_terms = max_terms
        self._max_chars = max_chars
        self._clock = clock
        self._memory_names: tuple[str, ...] = ()
        self._memory_read_at: float | None = None
        self._learned_path = Path(data_dir) / LEARNED_FILE if data_dir is not None else None
        self._learned: list[str] = self._read_learned()

    def _read_learned(self) -> list[str]:
        if self._learned_path is None or not self._learned_path.exists():
            return []
        try:
            words = json.loads(self._learned_path.read_text(encoding="utf-8"))
            return [str(w) for w in words][:MAX_LEARNED]
        except (OSError, ValueError) as e:
            logger.warning(f"Learned words unreadable ({type(e).__name__}); starting afresh")
            return []

    def learn(self, words: str) -> str | None:
        """His corrected words (without a leading "the"/"my"), first among the learned."""
        tokens = " ".join(words.strip(" .,!?;:").split()).split(" ")
        while tokens and tokens[0].lower() in _LEADING:
            tokens = tokens[1:]
        term = " ".join(tokens)
        if not term or len(term) > 60:
            return None
        self._learned = [term, *(w for w in self._learned if w.lower() != term.lower())]
        del self._learned[MAX_LEARNED:]
        if self._learned_path is not None:
            try:
                self._learned_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._learned_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._learned), encoding="utf-8")
                os.replace(tmp, self._learned_path)
            except OSError as e:
                logger.warning(f"Could not keep learned words ({type(e).__name__}: {e})")
        return term

    def _names_from_memory(self) -> tuple[str, ...]:
        now = self._clock()
        if self._memory is not None and (
            self._memory_read_at is None or now - self._memory_read_at >= MEMORY_REREAD_S
        ):
            self._memory_read_at = now
            try:
                facts = self._memory.live("fact")
            except Exception:  # a store that cannot be read only costs the prompt its names
                facts = []
            self._memory_names = tuple(n for f in reversed(facts) for n in names_in(f.words))
        return self._memory_names

    def _names_from_home(self) -> list[str]:
        home = self._home
        if home is None:
            return []
        entities = home.entities()
        names = [e.name for e in entities]
        aliases = [a for e in entities for a in e.aliases]
        return [*names, *aliases, *home.areas]

    def terms(self) -> tuple[str, ...]:
        chosen: list[str] = []
        seen: set[str] = set()
        used = 0
        every = (
            *self._configured,
            *self._learned,
            *self._names_from_memory(),
            *self._names_from_home(),
        )
        for term in every:
            term = " ".join(term.split())
            key = term.lower()
            if not term or key in seen:
                continue
            if len(chosen) >= self._max_terms or used + len(term) + 2 > self._max_chars:
                break
            seen.add(key)
            chosen.append(term)
            used += len(term) + 2
        return tuple(chosen)

    def __iter__(self) -> Iterator[str]:
        return iter(self.terms())

    def __bool__(self) -> bool:
        return bool(self.terms())
