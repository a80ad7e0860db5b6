""" "Turn on the kitchen what?": ask about the one word Nabu missed, not the whole sentence.

When noise covers one word of a sentence Warren said clearly, Whisper still writes a
word there, and its probability says it guessed: a masked "pills" came out as "clothes"
(0.28) among words scored 0.77-0.99. Asking him to say the whole sentence again is
tiring, and guessing sets a reminder about his clothes. So the guard asks about that
part, as a person would ("Remind me to take my what at 9?"), and joins his answer to
the rest: "Pills." makes "Please remind me to take my pills at 9." The joined sentence
then goes on as if he had said it whole.

The first word is never the part asked about: Whisper scores a sentence's first word low
on clear speech (Piper's clean "Turn on the kitchen light." gave "Turn" 0.22-0.33).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from processors.confirmation import PendingQuestion
from processors.phrases import Command, PhraseMatcher
from processors.text_normalise import normalise

# Words before and after the missed part that the question repeats: enough to say which
# part, short enough to follow.
CONTEXT_BEFORE = 6
CONTEXT_AFTER = 4
# At most this many words in the missed part; more is not "one word missed".
MAX_PART_WORDS = 2
# Doubt about these alone is not worth a question ("Tell me about what horse?").
_SMALL_WORDS = frozenset(
    "a an the to of in on at and or but is it i me my you your he she we they this that".split()
)
# How he may begin his answer without it being part of the words ("I said pills").
_LEAD_INS = re.compile(r"^(?:no,?\s+)?(?:i said|i meant|i mean|i say|it's|it is)\s+", re.I)


def doubtful_part(
    words: tuple[tuple[str, float], ...], probability_min: float, min_words: int
) -> tuple[int, int] | None:
    """(start, end) of the one run of words Whisper doubts, or None.

    None unless the sentence has at least `min_words` words, exactly one run of doubted
    words (probability below `probability_min`), at most MAX_PART_WORDS long, not its
    first word, and not only small words ("a", "the")."""
    if probability_min <= 0 or len(words) < min_words:
        return None
    doubted = [i for i, (_, p) in enumerate(words) if p < probability_min]
    if not doubted or doubted[0] == 0:
        return None
    start, end = doubted[0], doubted[-1] + 1
    if end - start > MAX_PART_WORDS or len(doubted) != end - start:
        return None
    if all(normalise(w) in _SMALL_WORDS for w, _ in words[start:end]):
        return None
    return start, end


def _bare(word: str) -> str:
    return word.strip(" .,!?;:\"'")


def question(words: list[str], start: int, end: int) -> str:
    """The sentence with its missed part as "what", as a question."""
    before = [_bare(w) for w in words[max(0, start - CONTEXT_BEFORE) : start]]
    after = [_bare(w) for w in words[end : end + CONTEXT_AFTER]]
    asked = " ".join(w for w in (*before, "what", *after) if w)
    return asked[:1].upper() + asked[1:] + "?"


def _overlap(a: list[str], b: list[str]) -> int:
    """The longest run that ends `a` and begins `b` (normalised words)."""
    na, nb = [normalise(w) for w in a], [normalise(w) for w in b]
    for n in range(min(len(na), len(nb)), 0, -1):
        if na[-n:] == nb[:n]:
            return n
    return 0


def joined(words: list[str], start: int, end: int, answer: str) -> str | None:
    """The sentence with his answer in place of the missed part; None if there is no
    answer left once the words he repeated around it are taken off."""
    said = _LEAD_INS.sub("", answer.strip()).strip(" .,!?;:")
    given = [w for w in said.split() if _bare(w)]
    before, after = [_bare(w) for w in words[:start]], words[end:]
    given = given[_overlap(before, given) :]
    tail = _overlap([_bare(w) for w in given], [_bare(w) for w in after])
    if tail:
        given = given[:-tail]
    if not given:
        return None
    if start > 0 and given[0][1:].islower():
        given[0] = given[0].lower()  # Whisper capitalised it as a sentence of its own
    whole = [*words[:start], *(_bare(w) for w in given), *after]
    if not after:
        ending = words[-1][-1] if words[-1][-1:] in ".?!" else "."
        whole[-1] = _bare(whole[-1]) + ending
    text = " ".join(whole)
    return text[:1].upper() + text[1:]


@dataclass
class _Asked:
    words: list[str]
    start: int
    end: int


class PartialRepair:
    """The one "...what?" question pending in a session; the guard owns it."""

    def __init__(self, matcher: PhraseMatcher, timeout_s: float, clock=time.monotonic):
        self._matcher = matcher
        self._asked: PendingQuestion[_Asked] = PendingQuestion(timeout_s, clock)

    def offer(self, words: list[str], start: int, end: int) -> str:
        """The question about words[start:end]; his answer is awaited from now."""
        self._asked.ask(_Asked(list(words), start, end))
        return question(words, start, end)

    def answer(self, text: str) -> str | None:
        """The whole sentence with `text` as the missed part, or None when `text` does not
        answer the question (too late, a command, or a sentence of its own)."""
        asked = self._asked.take()
        if asked is None:
            return None
        said = normalise(text).split()
        if not said or len(said) >= len(asked.words) - 1:
            return None  # he said it all again: his words stand as said
        if text.strip().endswith("?") or len(said) > MAX_PART_WORDS + 3:
            return None  # a question or a sentence of his own, not the word asked about
        match = self._matcher.match(text)
        if match is not None and match.command != Command.CORRECTION:
            return None  # "stop", "no", "help": a command, never a missing word
        return joined(asked.words, asked.start, asked.end, text)
