""" "Did you say ...?": a half-heard sentence is read back to Warren instead of guessed at.

Being asked to repeat over and over is tiring, and most doubtful transcripts of
slurred speech are nearly right. The guard decides whether a doubtful transcript
may be read back (its `Verdict.read_back`); this keeps the one question pending:
"yes" sends those words to the LLM, "no" asks him to say it again, and anything
else is simply his next sentence. The guard owns one of these per session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from processors.phrases import Command, PhraseMatcher

SAY_AGAIN = "Sorry. Could you say it again?"


@dataclass
class _Pending:
    text: str
    asked_at: float


class Confirmation:
    def __init__(self, matcher: PhraseMatcher, timeout_s: float, clock=time.monotonic):
        self._matcher = matcher
        self._timeout_s = timeout_s
        self._clock = clock
        self._pending: _Pending | None = None

    def offer(self, text: str) -> str:
        """The question that reads `text` back; its answer is awaited from now."""
        spoken = text.strip().rstrip(".!?,;: ")
        self._pending = _Pending(spoken, self._clock())
        return f"Did you say: {spoken}?"

    def cancel(self) -> None:
        self._pending = None

    def answer(self, text: str) -> tuple[str, str | None]:
        """("yes", the confirmed words), ("no", None), or ("", None) when not an answer."""
        pending, self._pending = self._pending, None
        if pending is None or self._clock() - pending.asked_at > self._timeout_s:
            return "", None
        match = self._matcher.match(text, only=(Command.YES, Command.NO))
        if match is None:
            return "", None
        if match.command == Command.YES:
            return "yes", pending.text
        return "no", None
