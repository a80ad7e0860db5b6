"""Warren's memory commands: remember, forget, what do you remember, preferences; no LLM needed.

He should never have to tell Nabu the same thing twice, and nothing he says is
kept unless he asks. So:
- "Remember (that) ..." is saved at once and read back in the second person
  ("Okay. I'll remember that your pills are in the kitchen drawer."), so a
  mishearing is caught at once: a "no" straight after undoes it. A doubtful
  transcript never gets here without his "yes" (the transcript guard reads it
  back first: templates with a free-text slot are not trusted).
- A fact about the same subject replaces the old one (`memory_store.subject_of`).
- "Forget (that / about) ...", "What do you remember?" and "Forget everything"
  (asked first, yes or no) are answered here, so they work with the LLM down.
- Preferences act at once: the temperature unit and how he likes to be
  addressed go into the LLM's instructions from the next turn; "slower,
  please" (the repeat handler's TTSUpdateSettingsFrame, seen passing) is kept
  for the next session.
- Before each of his turns goes on to the LLM, everything kept is read from
  the store (a few rows: another process or his family may have changed it)
  and, when it changed, put into the LLM's system instruction. No retrieval,
  no added latency.
- The LLM may propose a fact it heard in passing (`propose`, its remember_fact
  tool): it is kept only after his "yes" to the read-back, and never a health
  detail (those only when he says "remember" himself).

Nabu's replies here are spoken but kept out of the LLM context, like the other
commands' (`append_to_context=False`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultProperties,
    LLMUpdateSettingsFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSUpdateSettingsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.types import is_given

from nabu_pipeline.memory_store import (
    Fact,
    MemoryStore,
    MemoryStoreError,
    Saved,
    best_match,
    second_person,
)
from processors.consumed_transcript import consumed
from processors.phrases import PREFERENCE_FACTS, Command, PhraseMatcher
from processors.text_normalise import normalise
from processors.utterance_state import UtteranceState

COMMANDS = (
    Command.FORGET_ALL,
    Command.REMEMBER,
    Command.FORGET,
    Command.RECALL,
    Command.TEMPERATURE_UNIT,
    Command.ADDRESS_AS,
)
UNITS = {"celsius": "C", "centigrade": "C", "fahrenheit": "F"}
UNIT_NAMES = {"C": "Celsius", "F": "Fahrenheit"}
# A "fact" that starts like this is a question ("can you remember where I put my keys?").
QUESTION_WORDS = frozenset(
    {"what", "where", "when", "who", "whom", "whose", "why", "how", "which", "if", "whether"}
)
# "Forget that" / "forget it": the fact just saved or read out.
THIS_ONE = frozenset({"that", "it", "this", "that one", "this one", "what i just said"})
# Offered by the LLM, these are never kept: he must say "remember" himself.
HEALTH_WORDS = frozenset(
    """pill pills medicine medicines medication medications tablet tablets dose doses
    prescription prescriptions doctor doctors nurse hospital clinic surgery operation blood
    pressure heart diabetes diabetic insulin cancer allergic allergy allergies asthma
    dementia memory pain arthritis stroke symptom symptoms diagnosis inhaler therapy
    injection vaccine""".split()
)
MAX_SPOKEN = 8
MAX_NAME_WORDS = 4

NOTHING_KEPT = "You haven't asked me to remember anything yet."
ASK_FORGET_ALL = (
    "Do you want me to forget everything you've asked me to remember? Please say yes or no."
)
KEPT_ALL = "Okay. I'll keep everything."
FORGOT_ALL = "Okay. I've forgotten everything you asked me to remember."
UNDONE = "Sorry. I've forgotten that. Could you say it again?"
NOT_KEPT = "Okay, I will not keep that."


@dataclass
class _Pending:
    """A question of ours awaiting his yes or no."""

    kind: str  # forget_all | proposal | undo
    asked_at: float
    words: str = ""


@dataclass
class _Undo:
    """How to take back the last change, should he say "no" or carry on his sentence."""

    transcript: str
    """The words that made the change: superseded when he was only pausing mid-sentence."""
    run: Callable[[], Awaitable[None]]
    reply: str
    """What Nabu says when he says "no" to the read-back."""


def is_health(words: str) -> bool:
    return bool(HEALTH_WORDS & set(normalise(words).split()))


def spoken_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def memory_section(facts: list[Fact], *, user_name: str) -> str:
    """The part of the LLM's instructions that holds what Warren asked to keep."""
    kept = [f for f in facts if f.kind == "fact"]
    prefs = {f.subject: f for f in facts if f.kind == "preference"}
    lines = []
    if kept:
        lines.append(
            f"What {user_name} asked you to remember, in his own words ('I' and 'my' are "
            f"{user_name}), oldest first. Use it whenever it helps; it is more recent than "
            "anything he said before. Never read the whole list out unless he asks."
        )
        for f in kept:
            told = datetime.fromtimestamp(f.updated_at)
            lines.append(f'- "{f.words}" (told {told:%A %-d %B %Y})')
    notes = []
    if "address_as" in prefs:
        notes.append(f"Call him {prefs['address_as'].value}.")
    if "temperature_unit" in prefs:
        unit = UNIT_NAMES.get(prefs["temperature_unit"].value, "Fahrenheit")
        notes.append(f"Give temperatures in degrees {unit} (this replaces the unit above).")
    if "home_town" in prefs:
        notes.append(
            f"He lives in {prefs['home_town'].value}: use it for weather and local questions."
        )
    if notes:
        lines.append("His preferences: " + " ".join(notes))
    return "\n".join(lines)


class MemoryCommands(FrameProcessor):
    """Remember / forget / recall / preferences before the LLM; the memory into its instructions."""

    def __init__(
        self,
        store: MemoryStore,
        matcher: PhraseMatcher,
        *,
        base_prompt: str,
        user_name: str,
        confirm_timeout_s: float,
        utterance: UtteranceState | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._store = store
        self._matcher = matcher
        self._base_prompt = base_prompt
        self._user_name = user_name
        self._timeout_s = confirm_timeout_s
        self._clock = clock
        self._utterance = utterance
        self._pending: _Pending | None = None
        self._undo: _Undo | None = None
        self._text = ""
        self._last: Fact | None = None
        """The fact just saved or named: what "forget that" means."""
        self._instruction = base_prompt
        self._length_scale: float | None = None
        self._turn_open = False
        """Whether the user aggregator (just below) has his turn open: it broadcasts its
        User{Started,Stopped}SpeakingFrame upstream through here."""

    # --- frames -----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._refresh_instruction()
            return
        if isinstance(frame, (UserStartedSpeakingFrame, UserStoppedSpeakingFrame)):
            if direction == FrameDirection.UPSTREAM:
                self._turn_open = isinstance(frame, UserStartedSpeakingFrame)
        if isinstance(frame, TTSUpdateSettingsFrame):
            await self.push_frame(frame, direction)
            await self._keep_speech_rate(frame)
            return
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            if await self._handle(frame, direction):
                return
            await self._refresh_instruction(before_turn=True)
        await self.push_frame(frame, direction)

    async def _say(self, frame: TranscriptionFrame, direction: FrameDirection, text: str):
        if self._turn_open:  # close his turn now rather than after its safety timeout
            await self.push_frame(consumed(frame), direction)
        # With the turn already closed (Whisper slower than the turn's stop timeout on a busy
        # CPU), a blank transcript would open a new turn, whose interruption drops this reply.
        await self.push_frame(TTSSpeakFrame(text, append_to_context=False))

    async def _handle(self, frame: TranscriptionFrame, direction: FrameDirection) -> bool:
        """True when the transcript was a memory command (answered and consumed)."""
        text = self._text = frame.text
        undo = self._undo
        if undo and self._utterance and undo.transcript in self._utterance.superseded:
            # He was pausing mid-sentence ("remember that I take... two pills at night"): the
            # change made from his first words is taken back (its read-back was never
            # released), and the whole sentence decides.
            logger.info(f"{self}: [{undo.transcript}] was part of a longer sentence; undone")
            self._undo = self._pending = None
            await undo.run()
        if await self._answer_pending(frame, direction):
            return True
        match = None
        for command in COMMANDS:  # "forget everything" before "forget {fact}"
            match = self._matcher.match(text, only=(command,))
            if match is not None:
                break
        if match is None:
            return False
        handler = {
            Command.REMEMBER: self._remember,
            Command.FORGET: self._forget,
            Command.FORGET_ALL: self._ask_forget_all,
            Command.RECALL: self._recall,
            Command.TEMPERATURE_UNIT: self._temperature_unit,
            Command.ADDRESS_AS: self._address_as,
        }[match.command]
        reply = await handler(match.slots)
        if reply is None:  # not really a command ("I like cheese"): the LLM answers
            return False
        logger.info(f"{self}: {match.command} [{text}]")
        await self._say(frame, direction, reply)
        await self._refresh_instruction()
        return True

    # --- pending yes/no questions -------------------------------------------------------------

    async def _answer_pending(self, frame: TranscriptionFrame, direction: FrameDirection) -> bool:
        pending, self._pending = self._pending, None
        if pending is None or self._clock() - pending.asked_at > self._timeout_s:
            return False
        match = self._matcher.match(frame.text, only=(Command.YES, Command.NO))
        if match is None:
            return False  # anything else is simply his next sentence
        yes = match.command == Command.YES
        if pending.kind == "forget_all":
            reply = KEPT_ALL
            if yes:
                await self._store.aforget_all()
                self._last = None
                reply = FORGOT_ALL
        elif pending.kind == "proposal":
            reply = NOT_KEPT
            if yes:
                reply = await self._save(pending.words, source="assistant")
        else:  # undo: "yes" after a read-back just agrees
            reply = "Good."
            if not yes and self._undo is not None:
                undo, self._undo = self._undo, None
                await undo.run()
                reply = undo.reply
        logger.info(f"{self}: {pending.kind} answered {'yes' if yes else 'no'}")
        await self._say(frame, direction, reply)
        await self._refresh_instruction()
        return True

    def _ask(self, kind: str, **kw) -> None:
        self._pending = _Pending(kind, self._clock(), **kw)

    def _undoable(self, run: Callable[[], Awaitable[None]], reply: str) -> None:
        """The change just made can be taken back: "no" now, or his sentence going on."""
        self._undo = _Undo(self._text, run, reply)
        self._ask("undo")

    def _undo_save(self, saved: Saved) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if saved.replaced is not None:
                await self._store.arestore(saved.replaced)
                self._last = saved.replaced
            else:
                await self._store.aforget(saved.fact.id)
                self._last = None

        return run

    # --- commands -----------------------------------------------------------------------------

    async def _save(self, words: str, *, source: str) -> str:
        """Keep `words` (as a preference too when it is one); the read-back."""
        town = self._matcher.match(words, only=tuple(PREFERENCE_FACTS))
        try:
            if town is not None and town.command == Command.HOME_TOWN:
                saved = await self._store.asave(
                    words,
                    source=source,
                    kind="preference",
                    subject="home_town",
                    value=town.slots["town"],
                )
            else:
                saved = await self._store.asave(words, source=source)
        except MemoryStoreError as e:
            logger.info(f"{self}: not saved ({e})")
            return "Sorry, I didn't catch what to remember. Could you say it again?"
        self._last = saved.fact
        self._undoable(self._undo_save(saved), UNDONE)
        if saved.unchanged:
            return f"I already know that {saved.fact.spoken}."
        if saved.replaced is not None:
            return f"Okay. I've changed that: I'll remember that {saved.fact.spoken}."
        return f"Okay. I'll remember that {saved.fact.spoken}."

    async def _remember(self, slots) -> str | None:
        words = slots.get("fact", "")
        first = normalise(words).split()[:1]
        if not first or first[0] in QUESTION_WORDS:
            return None  # "can you remember where I put my keys?" is a question
        return await self._save(words, source="spoken")

    async def _forget(self, slots) -> str | None:
        said = slots.get("fact", "")
        facts = await self._store.alive()
        if normalise(said) in THIS_ONE:
            target = self._last and next((f for f in facts if f.id == self._last.id), None)
            if target is None:
                return "I'm not sure what to forget. Say forget, and what it was about."
            matches = [target]
        else:
            matches = best_match(facts, said)
        if not matches:
            return f"I don't have anything about {second_person(said) or 'that'} to forget."
        if len(matches) > 1:
            options = spoken_list([f.spoken for f in matches[:3]])
            return f"I know a few things about that: {options}. Which one should I forget?"
        fact = matches[0]
        await self._store.aforget(fact.id)
        self._last = None

        async def unforget() -> None:
            await self._store.aunforget(fact)
            self._last = fact

        self._undoable(unforget, f"Sorry. I'll keep remembering that {fact.spoken}.")
        return f"Okay. I've forgotten that {fact.spoken}."

    async def _ask_forget_all(self, _slots) -> str:
        if not await self._store.alive():
            return NOTHING_KEPT
        self._ask("forget_all")
        return ASK_FORGET_ALL

    async def _recall(self, _slots) -> str:
        facts = await self._store.alive()
        if not facts:
            return NOTHING_KEPT
        # Newest first: what he told Nabu last is likeliest what he wants to hear.
        newest = sorted(facts, key=lambda f: f.updated_at, reverse=True)
        said = [f.spoken for f in newest[:MAX_SPOKEN]]
        reply = f"You asked me to remember that {spoken_list(said)}."
        if len(facts) > MAX_SPOKEN:
            reply += f" And {len(facts) - MAX_SPOKEN} more; your family can see them all."
        if len(facts) == 1:
            self._last = facts[0]
        return reply

    async def _temperature_unit(self, slots) -> str | None:
        unit = UNITS.get(normalise(slots.get("unit", "")))
        if unit is None:
            return None
        words = f"I like temperatures in {UNIT_NAMES[unit]}"
        saved = await self._store.asave(
            words, source="spoken", kind="preference", subject="temperature_unit", value=unit
        )
        self._last = saved.fact
        self._undoable(self._undo_save(saved), UNDONE)
        return f"Okay. I'll give you temperatures in {UNIT_NAMES[unit]}."

    async def _address_as(self, slots) -> str | None:
        name = " ".join(slots.get("name", "").strip(" .,!?").split())
        if not name or len(name.split()) > MAX_NAME_WORDS:
            return None
        saved = await self._store.asave(
            f"I like to be called {name}",
            source="spoken",
            kind="preference",
            subject="address_as",
            value=name,
        )
        self._last = saved.fact
        self._undoable(self._undo_save(saved), UNDONE)
        return f"Okay. I'll call you {name}."

    # --- the LLM's proposal -------------------------------------------------------------------

    def propose(self, words: str) -> str | None:
        """The question that offers `words` for keeping, or None when it may not be offered."""
        words = " ".join(words.split()).strip(" .")
        if not words:
            return None
        if is_health(words):
            logger.info(f"{self}: LLM proposed a health detail; not offered")
            return None
        self._ask("proposal", words=words)
        return f"Shall I remember that {second_person(words)}?"

    # --- preferences and the LLM's instructions -----------------------------------------------

    async def _keep_speech_rate(self, frame: TTSUpdateSettingsFrame) -> None:
        scale = getattr(frame.delta, "length_scale", None) if frame.delta is not None else None
        if scale is None or not is_given(scale) or scale == self._length_scale:
            return
        self._length_scale = float(scale)
        await self._store.asave(
            "I like you to speak slower",
            source="spoken",
            kind="preference",
            subject="speech_rate",
            value=f"{float(scale):.2f}",
        )

    async def _refresh_instruction(self, *, before_turn: bool = False) -> None:
        """Everything kept, into the LLM's system instruction.

        Sent when it changed, and before each turn that goes on to the LLM even when it did
        not: an interruption may have dropped an earlier update on its way (pipecat applies
        an unchanged one silently).
        """
        started = time.perf_counter()
        try:
            facts = await self._store.alive()
        except Exception as e:  # the memory is an addition: a broken disk must not stop a reply
            logger.warning(f"{self}: memory unreadable ({type(e).__name__}: {e})")
            return
        read_ms = (time.perf_counter() - started) * 1000
        section = memory_section(facts, user_name=self._user_name)
        base = self._base_prompt.rstrip()
        instruction = f"{base}\n\n{section}" if section else self._base_prompt
        changed = instruction != self._instruction
        if changed or before_turn:
            self._instruction = instruction
            await self.push_frame(
                LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=instruction))
            )
        logger.debug(
            f"{self}: memory read in {read_ms:.1f} ms ({len(facts)} rows"
            f"{', changed' if changed else ''})"
        )


REMEMBER_TOOL = "remember_fact"


def remember_tool_schema() -> FunctionSchema:
    return FunctionSchema(
        name=REMEMBER_TOOL,
        description=(
            "Offer to remember a lasting fact the user mentioned in passing (where he keeps "
            "something, a name, a date, his routine). Nabu asks him first and keeps it only if "
            "he says yes. Not for health details (medicines, conditions, doctors): those are kept "
            "only when he says 'remember' himself. Not when he already asked you to remember it."
        ),
        properties={
            "fact": {
                "type": "string",
                "description": "The fact in the user's own first-person words, e.g. 'my spare key "
                "is under the blue pot'.",
            }
        },
        required=["fact"],
    )


def register_remember_tool(llm: LLMService, stage: MemoryCommands) -> None:
    """The LLM's remember_fact tool: it asks Warren (the stage awaits his yes); saves nothing."""

    async def remember_fact(params: FunctionCallParams) -> None:
        question = stage.propose(str(params.arguments.get("fact", "")))
        if question is None:
            await params.result_callback(
                {"kept": False, "why": "not offered: health details are kept only when he asks"}
            )
            return
        await params.result_callback(
            {"asked": question, "kept": "only if he says yes"},
            properties=FunctionCallResultProperties(run_llm=False),
        )
        await params.llm.push_frame(TTSSpeakFrame(question, append_to_context=False))

    llm.register_function(REMEMBER_TOOL, remember_fact)
