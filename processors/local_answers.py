"""Answers Nabu gives without any LLM: the time, the date, what it can do.

They keep Nabu useful when no LLM is configured or reachable, and they are
instant and exact (an LLM does not know the time). Matching is deliberately
narrow: only utterances that are clearly one of these questions.
"""

from __future__ import annotations

import re
from datetime import datetime

from nabu_pipeline.config import NO_LLM_APOLOGY, LocaleConfig
from processors.text_normalise import normalise

_TIME = re.compile(
    r"^(?:(?:hey |ok |okay )?nabu )?(?:what(?:'s| is) the time|what time is it|"
    r"(?:can|could) you tell me (?:what )?the time|do you (?:know|have) the time|"
    r"tell me the time|what time(?: is it)? now|time please|the time)(?: now| please| nabu)*$"
)
_DATE = re.compile(
    r"^(?:(?:hey |ok |okay )?nabu )?(?:what(?:'s| is) (?:the date|today's date|the day|today)|"
    r"what day is (?:it|today)|what(?:'s| is) the date today|which day is it|"
    r"(?:can|could) you tell me (?:what )?(?:the date|what day it is)|tell me the date|"
    r"what date is it)(?: today)?(?: please| nabu)*$"
)
_HELP = re.compile(
    r"^(?:(?:hey |ok |okay )?nabu )?(?:what can you do|what do you do|help|help me|"
    r"how can you help(?: me)?|what are you|who are you)(?: please| nabu)*$"
)

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


def local_answer(text: str, locale: LocaleConfig, *, llm_available: bool) -> str | None:
    """The answer Nabu can give itself, or None when the LLM should answer.

    Time and date are always answered locally. "What can you do" is answered
    locally only without an LLM (with one, the LLM can say more); anything
    else without an LLM gets the apology (NO_LLM).

    The question may end a longer user message: a turn that got no answer (the
    LLM failed) is merged with the next one before the LLM sees it, so "Tell me
    about the moon. What time is it?" is answered with the time.
    """
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    for candidate in dict.fromkeys([text, *sentences[-1:]]):
        norm = normalise(candidate)
        if _TIME.match(norm):
            return time_answer(locale)
        if _DATE.match(norm):
            return date_answer(locale)
        if not llm_available and _HELP.match(norm):
            return CAPABILITIES
    return None if llm_available else NO_LLM
