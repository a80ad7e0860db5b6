"""Normalising what Warren said, so phrase lists match however Whisper punctuates it."""

import re

_PUNCT = re.compile(r"[^\w\s']+")
_SPACE = re.compile(r"\s+")
_FILLERS = {"um", "uh", "er", "erm", "ah", "oh", "hmm", "mm", "nabu", "okay", "ok", "please"}


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: "Stop!" and " stop." both give "stop"."""
    text = text.lower().replace("’", "'")
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def matches_phrase(text: str, phrases: frozenset[str]) -> bool:
    """The whole utterance is one of `phrases`, allowing a polite or hesitant word around it.

    "Stop." and "Okay, stop please" match "stop"; "how do I stop the heater" does not.
    """
    norm = normalise(text)
    if not norm:
        return False
    if norm in phrases:
        return True
    words = norm.split()
    # Drop fillers, "please" and the assistant's name only at the edges.
    while words and words[0] in _FILLERS:
        words.pop(0)
    while words and words[-1] in _FILLERS:
        words.pop()
    return " ".join(words) in phrases
