"""Normalising what Warren said for comparisons (commands are matched in `phrases.py`)."""

import re

_PUNCT = re.compile(r"[^\w\s']+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: "Stop!" and " stop." both give "stop"."""
    text = text.lower().replace("’", "'")
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
