"""One phrase matcher for every spoken command.

Warren's commands ("stop", "say that again", "yes", "what time is it", and the home,
memory and safety phrases that join them) are whole utterances, matched one way:
against sentence templates with hassil, Home Assistant's own sentence matcher
(`[optional]`, `(a|b)` and `{slot}` wildcards). Before this, five hand-written rules
disagreed: "Okay, stop." stopped Nabu in one stage and was read back as doubtful in
another.

How he says a command varies in ways that do not change it, so the matcher ignores
them: fillers and politeness at any place ("Um, stop please"), Nabu's name ("Stop,
Nabu."), the punctuation Whisper adds, and a word said twice ("stop stop"). It never
matches inside a longer sentence: "don't stop" and "stop the music in the kitchen"
are not a stop.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from hassil import Intents, recognize_ranked


class Command(StrEnum):
    """The commands Nabu answers itself, before the LLM."""

    STOP = "stop"
    REPEAT = "repeat"
    SLOWER = "slower"
    YES = "yes"
    NO = "no"
    TIME = "time"
    DATE = "date"
    CAPABILITIES = "capabilities"
    REMEMBER = "remember"
    FORGET = "forget"
    FORGET_ALL = "forget_all"
    RECALL = "recall"
    TEMPERATURE_UNIT = "temperature_unit"
    ADDRESS_AS = "address_as"
    HOME_TOWN = "home_town"
    HELP = "help"
    REMIND = "remind"
    TIMER = "timer"
    LIST_REMINDERS = "list_reminders"
    CANCEL_REMINDER = "cancel_reminder"
    DONE = "done"
    CORRECTION = "correction"


# Said around a command without changing it. "okay" is here so that "Okay, stop." is a
# stop; a template that is only "okay" still matches a lone "Okay." (hassil also tries
# the words as said).
SKIP_WORDS = ("um", "umm", "uh", "er", "erm", "ah", "hmm", "mm", "oh", "okay", "ok", "please",
              "hey", "nabu")  # fmt: skip

# Nabu's own questions, answered from the words alone (no LLM, no clock).
LOCAL_QUESTIONS: dict[str, tuple[str, ...]] = {
    Command.TIME: (
        "[(can|could) you tell me] [what] [is] the time [is it] [now|today]",
        "what time is it [now]",
        "what's the time [now]",
        "what is the time [now]",
        "(do you know|have you got|do you have) the time",
        "tell me the time",
        "what time [is it] now",
        "time",
    ),
    Command.DATE: (
        "what's (the date|today's date|the day) [today]",
        "what is (the date|today's date|the day) [today]",
        "what (day|date) is (it|today) [today]",
        "which day is it [today]",
        "(can|could) you tell me (the date|what day it is|what the date is)",
        "tell me the date",
        "what's today",
        "what is today",
    ),
    Command.CAPABILITIES: (
        "what can you do",
        "what do you do",
        "how can you help [me]",
        "what are you",
        "who are you",
    ),
}

# Warren's memory (processors/memory_commands.py), answered without the LLM. A slot is
# whatever he said there; the stage checks it ("celsius", a name of a few words).
MEMORY_COMMANDS: dict[str, tuple[str, ...]] = {
    Command.REMEMBER: (
        "remember [that] {fact}",
        "(can|could|would|will) you remember [that] {fact}",
        "i want you to remember [that] {fact}",
        "(don't|do not) forget [that] {fact}",
        "make a note [that] {fact}",
        "note [down] that {fact}",
        "keep in mind [that] {fact}",
    ),
    Command.FORGET_ALL: (
        "forget everything [you know] [about me]",
        "forget (all of it|all that|all of that)",
        "forget everything i [ever] told you",
        "(delete|erase|wipe) everything you (know|remember) [about me]",
        "(delete|erase|wipe) (all|everything) [you remember]",
    ),
    Command.FORGET: (
        "forget [that|about] {fact}",
        "(can|could|would|will) you forget [that|about] {fact}",
        "(delete|erase) [that|the] {fact}",
        "(stop remembering|don't remember) [that] {fact}",
    ),
    Command.RECALL: (
        "what do you remember [about me]",
        "what (do you know|have you remembered|are you remembering) about me",
        "what (have i|did i) (told|tell|asked|ask) you to remember",
        "what have i told you",
        "tell me what you remember [about me]",
        "what are you keeping [about me]",
    ),
    Command.TEMPERATURE_UNIT: (
        "[i] (like|prefer|want) [the] (weather|temperature|temperatures) in {unit}",
        "(use|give me|tell me|say) [the] (weather|temperature|temperatures) in {unit}",
        "(use|i prefer|i like) {unit} [for [the] (weather|temperature|temperatures)]",
        "[i want] temperatures in {unit}",
    ),
    Command.ADDRESS_AS: (
        "call me {name}",
        "(i'd|i would) like [you] to call me {name}",
        "you can call me {name}",
        "(please|) call me {name} from now on",
    ),
}
# "No, I said the porch light": what Nabu misheard, said again. The words join Whisper's
# prompt (processors/corrections.py); the sentence itself goes on to be answered.
CORRECTIONS: dict[str, tuple[str, ...]] = {
    Command.CORRECTION: (
        "no [,] i said {words}",
        "no [,] i meant {words}",
        "i said {words} not {wrong}",
        "(not|no) {wrong} [,] i said {words}",
    ),
}
# Facts that are also preferences, recognised inside what he asked to remember
# ("remember that I live in Springfield"): never commands on their own.
PREFERENCE_FACTS: dict[str, tuple[str, ...]] = {
    Command.HOME_TOWN: (
        "i live in {town}",
        "(my|our) (town|home town|hometown) is {town}",
        "i'm (living|staying) in {town}",
        "home is {town}",
    ),
}
# Reminders and timers. The request itself is one free-text slot: which words name the
# time ("at nine every morning", "in ten minutes") is decided by processors/reminder_time.py.
REMINDER_COMMANDS: dict[str, tuple[str, ...]] = {
    Command.REMIND: (
        "remind me [to|that|about] {request}",
        "(can|could|will|would) you remind me [to|that|about] {request}",
        "set [a|an] (reminder|alarm) [to|for] {request}",
        "i (want|need) a reminder [to|for] {request}",
    ),
    Command.TIMER: (
        "set [a|an|the] timer (for|of) {duration}",
        "(set|start) [a|an] {duration} timer",
        "timer (for|of) {duration}",
        "start [a|an] timer (for|of) {duration}",
    ),
    Command.LIST_REMINDERS: (
        "what (reminders|timers|alarms) (do i have|have i got|are there|are set) [today]",
        "what are my (reminders|timers|alarms)",
        "(do|have) i (have|got) any (reminders|timers|alarms) [today]",
        "(list|tell me|read me) my (reminders|timers|alarms)",
        "my reminders",
    ),
    Command.CANCEL_REMINDER: (
        "(cancel|delete|remove|stop) [the|my] {which} (reminder|reminders|timer|alarm)",
        "(cancel|delete|remove|stop) [the|my] (reminder|timer|alarm) (to|for|about) {which}",
        "(cancel|delete|remove|stop) [the|my] (reminder|timer|alarm)",
        "(cancel|delete|remove) all [of] [my] (reminders|timers)",
        "i don't need the {which} reminder [any more|anymore]",
    ),
    # Only while a reminder is waiting for his answer (stages match these with `only=`).
    Command.DONE: (
        "okay",
        "ok",
        "done",
        "(i've|i have) done it",
        "(i've|i have) taken them",
        "(i've|i have) taken it",
        "i did [it]",
        "got it",
        "will do",
        "all right",
        "alright",
        "i know",
        "on it",
        "thanks",
    ),
}

_WORD_SAID_TWICE = re.compile(r"\b(\w[\w']*)(?:\W+\1\b)+", re.IGNORECASE)


@dataclass(frozen=True)
class PhraseMatch:
    """A command recognised in a whole utterance."""

    command: str
    slots: Mapping[str, str] = field(default_factory=dict)
    """Wildcard slots in the template ("remember that {fact}"), as said."""
    trusted: bool = True
    """A whole-utterance match to a fixed template is itself strong evidence that Whisper
    heard right, so it passes the doubt check; a template with a free-text slot is not:
    those words may be misheard."""


class PhraseMatcher:
    """Whole-utterance command templates, compiled once."""

    def __init__(
        self,
        table: Mapping[str, Iterable[str]],
        *,
        skip_words: Iterable[str] = SKIP_WORDS,
    ):
        self._table = {str(name): tuple(templates) for name, templates in table.items()}
        slots = {
            name
            for templates in self._table.values()
            for template in templates
            for name in re.findall(r"\{(\w+)\}", template)
        }
        self._intents = Intents.from_dict(
            {
                "language": "en",
                "intents": {
                    name: {"data": [{"sentences": list(templates)}]}
                    for name, templates in self._table.items()
                    if templates
                },
                "lists": {slot: {"wildcard": True} for slot in slots},
                "skip_words": list(skip_words),
            }
        )
        self._untrusted = frozenset(
            name for name, templates in self._table.items() if any("{" in t for t in templates)
        )

    @property
    def commands(self) -> frozenset[str]:
        return frozenset(self._table)

    def extended(self, more: Mapping[str, Iterable[str]]) -> PhraseMatcher:
        """This table with more commands (or more templates for a command)."""
        table = {name: list(templates) for name, templates in self._table.items()}
        for name, templates in more.items():
            table.setdefault(str(name), []).extend(templates)
        return PhraseMatcher(table, skip_words=self._intents.skip_words)

    def match(self, text: str, only: Collection[str] | None = None) -> PhraseMatch | None:
        """The command `text` is as a whole, or None. `only` limits which commands count."""
        if not text or not any(c.isalnum() for c in text):
            return None
        candidates = [text]
        collapsed = _WORD_SAID_TWICE.sub(r"\1", text)
        if collapsed != text:
            candidates.append(collapsed)
        for candidate in candidates:
            for result in recognize_ranked(candidate, self._intents):
                name = result.intent.name
                if only is not None and name not in only:
                    continue
                slots = {k: str(v.value).strip() for k, v in result.entities.items()}
                if any(not value for value in slots.values()):
                    continue
                return PhraseMatch(name, slots, trusted=name not in self._untrusted)
        return None

    def is_command(self, text: str, command: str) -> bool:
        return self.match(text, only=(command,)) is not None
