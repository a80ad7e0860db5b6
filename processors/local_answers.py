"""Answers Nabu gives without any LLM: the time, the date, what it can do.

They keep Nabu useful when no LLM is configured or reachable, and they are
instant and exact (an LLM does not know the time). Matching is deliberately
narrow: only whole utterances that are one of these questions (`phrases.py`).
"""

from __future__ import annotations

import re
from datetime import datetime

from nabu_pipeline.config import NO_LLM_APOLOGY, LocaleConfig
from processors.phrases import LOCAL_QUESTIONS, Command, PhraseMatcher

CAPABILITIES = (
    "I'm Nabu. You can ask me questions, ask for help with everyday things, "
    "or ask the time or the date. Say stop at any time, and say again if you missed something."
)
NO_LLM = NO_LLM_APOLOGY
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _ordinal_day(day: int) -> str:
    from num2words import num2words

    return num2words(day, to="ordinal")


def time_answer(locale: LocaleConfig, now: datetime | None = None) -> str:
    now = now or datetime.now(locale.tzinfo)
    if locale.clock == "24h":
        return f"It's {now:%H:%M}."
    hour = now.hour % 12 or 12
    clock = f"{hour} o'clock" if now.minute == 0 else f"{hour}:{now.minute:02d}"
    return f"It's {clock} {part_of_day(now.hour)}."


def part_of_day(hour: int) -> str:
    """Said instead of "a m"/"p m": clearer to hear, and what people say."""
    if hour < 5 or hour >= 21:
        return "at night"
    if hour < 12:
        return "in the morning"
    if hour < 18:
        return "in the afternoon"
    return "in the evening"


def date_answer(locale: LocaleConfig, now: datetime | None = None) -> str:
    now = now or datetime.now(locale.tzinfo)
    return f"Today is {now:%A}, {now:%B} {_ordinal_day(now.day)}, {now.year}."


def local_answer(
    text: str, locale: LocaleConfig, matcher: PhraseMatcher, *, llm_available: bool
) -> str | None:
    """The answer Nabu can give itself, or None when the LLM should answer.

    Time and date are always answered locally. "What can you do" is answered
    locally only without an LLM (with one, the LLM can say more); anything
    else without an LLM gets the apology (NO_LLM).

    The question may end a longer user message (two sentences in one turn), so
    "Tell me about the moon. What time is it?" is answered with the time.
    """
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    asked = (Command.TIME, Command.DATE) if llm_available else LOCAL_QUESTIONS
    for candidate in dict.fromkeys([text, *sentences[-1:]]):
        match = matcher.match(candidate, only=asked)
        if match is None:
            continue
        if match.command == Command.TIME:
            return time_answer(locale)
        if match.command == Command.DATE:
            return date_answer(locale)
        return CAPABILITIES
    return None if llm_available else NO_LLM
