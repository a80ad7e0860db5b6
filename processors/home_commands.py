"""Home commands answered locally: "turn on the kitchen light", "is the front door locked?".

Plain commands and state questions are matched with Home Assistant's own sentence
matcher (hassil with the home-assistant-intents sentences) against the names, aliases
and areas Home Assistant reports, carried out over REST without the LLM, and answered
with one short sentence; the user turn is closed like a stop phrase (nothing reaches
the LLM). It is fast and works when the LLM is unreachable. Anything it does not
fully understand goes on to the LLM, which has the same home as tools.

Names are tolerant of how Warren says them: an exact name or alias first, then the
closest name (rapidfuzz) among devices the sentence can apply to; a close-but-not-sure
name is read back, and two names that fit equally get "the kitchen light or the
kitchen speaker?". Questions never act: a state question only reads states.

Warren pauses mid-sentence, and what he has said so far can already be a command
("close the garage ... door", "turn on the kitchen ... light"). Only a request that
names a device by its whole name (or alias) is taken as complete, and not when that
name is the start of a longer one and ends a sentence Whisper did not hear as finished
("close the garage", no full stop): it is carried out at once and its reply held only
`turn.complete_command_hold_s`. Anything less sure (part of a name, an area, two
devices that fit, a doubtful name) waits until his pause is over; if he went on, the
whole sentence decides and the half is never acted on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import home_assistant_intents
from hassil import Intents, recognize_all
from hassil.intents import TextSlotList
from hassil.models import MatchEntity
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMMessagesAppendFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from rapidfuzz import fuzz

from nabu_pipeline.home_actions import (
    Action,
    HomeActions,
    capitalised,
    describe_state,
    plan,
    spoken_name,
    to_celsius,
)
from nabu_pipeline.home_assistant import REFUSED, UNREACHABLE, Entity, HomeAssistantError
from processors.consumed_transcript import consumed
from processors.phrases import Command, PhraseMatcher
from processors.text_normalise import normalise
from processors.utterance_state import UtteranceState

ACTS = {"HassTurnOn": "turn_on", "HassTurnOff": "turn_off"}
QUESTIONS = {"HassGetState", "HassClimateGetTemperature"}
HANDLED = {*ACTS, *QUESTIONS, "HassClimateSetTemperature"}
# A name heard this close (rapidfuzz 0-100) to a device's name is that device ...
NAME_SURE = 90.0
# ... this close, it is read back first; below it the words are not a home command.
NAME_MAYBE = 60.0
# Two names within this many points of each other both fit: Warren is asked which.
NAME_TIE = 5.0

# A request that may be the start of a longer sentence waits for his pause to end
# (SpeechReleaseGate marks it), polled this often. The gate marks only pauses it held a
# reply in (not one begun while Nabu spoke): past the hold and this slack, with him silent
# and nothing left with Whisper, the pause is over anyway; and never more than the most.
PAUSE_POLL_S = 0.05
PAUSE_SLACK_S = 1.0
PAUSE_WAIT_MAX_S = 20.0

# Words around a name that do not make it another name.
FILLER_WORDS = frozenset({"the", "a", "my", "our", "that", "this", "please"})

# Words that make a sentence about the house when no device names are known yet.
HOME_WORDS = frozenset(
    "turn switch lock unlock locked unlocked open close shut closed heating heater thermostat "
    "temperature light lights lamp door garage gate".split()
)


@dataclass
class HomeRequest:
    """What a sentence asks of the home."""

    intent: str
    entities: list[Entity] = field(default_factory=list)
    ambiguous: bool = False
    doubtful: bool = False
    state: str = ""
    temperature: float | None = None
    response: str = ""
    name_score: float = 100.0
    """How close the name heard was to the device's (rapidfuzz, 100 = exact)."""
    unreachable: bool = False
    """The home has not answered since Nabu started: the sentence is only recognised."""
    named_whole: bool = False
    """A device was named by its whole name or alias (hassil's strict match), and not by
    a name a longer one begins with at the end of a sentence not heard as finished."""

    @property
    def complete(self) -> bool:
        """Surely the whole command, not the start of a longer one he paused in."""
        return self.named_whole and not self.ambiguous and not self.doubtful

    @property
    def is_question(self) -> bool:
        return self.intent in QUESTIONS


class HomeMatcher:
    """hassil over the home's own names; rebuilt when Home Assistant's names change."""

    def __init__(self, home):
        self._home = home
        data = home_assistant_intents.get_intents("en")
        data["intents"] = {k: v for k, v in data["intents"].items() if k in HANDLED}
        self._intents = Intents.from_dict(data)
        self._key: tuple = ()
        self._entities: list[Entity] = []
        self._slots: dict = {}
        self._names: set[str] = set()

    def refresh(self) -> None:
        """Take the home's current names (on the event loop; the states change there)."""
        entities = self._home.entities()
        key = tuple(entities)
        if key == self._key:
            return
        self._key, self._entities = key, entities
        names = []
        for e in entities:
            for name in {e.name, *e.aliases}:
                names.append((normalise(name), e.entity_id, {"domain": e.domain}))
        self._names = {name for name, _, _ in names}
        areas = sorted({e.area for e in entities if e.area})
        self._slots = {
            "name": TextSlotList.from_tuples(names, allow_template=False),
            "area": TextSlotList.from_tuples(
                [(normalise(a), a) for a in areas], allow_template=False
            ),
            "floor": TextSlotList.from_tuples([], allow_template=False),
        }

    def match(self, text: str) -> HomeRequest | None:
        """What `text` asks of the home, or None; pure CPU work, safe off the event loop."""
        spoken = normalise(text)
        if not spoken:
            return None
        # Whisper ends a sentence it heard as finished with a full stop or a question mark;
        # a pause mid-sentence usually leaves it without one ("Close the garage").
        ended = text.rstrip().endswith((".", "?", "!"))
        if not self._entities:
            return self._match_blind(spoken)
        strict = list(recognize_all(spoken, self._intents, slot_lists=self._slots, language="en"))
        # A device named as Warren named it beats an area-and-kind reading of the same
        # words ("close the garage door": the Garage Door, not doors in the garage).
        strict.sort(key=lambda r: "name" not in r.entities)
        for result in strict:
            request = self._resolve(result, spoken, ended)
            if request is not None and request.entities:
                return request
        candidates: list[HomeRequest] = []
        for loose in recognize_all(
            spoken,
            self._intents,
            slot_lists=self._slots,
            language="en",
            allow_unmatched_entities=True,
        ):
            if set(loose.unmatched_entities) - {"name", "domain"}:
                continue
            if "name" not in loose.unmatched_entities:
                continue
            if loose.intent.name == "HassGetState" and "state" not in loose.entities:
                continue  # "tell me ..." with no state asked about is not about the home
            request = self._resolve(loose, spoken, ended)
            if request is not None and request.entities:
                candidates.append(request)
        # The reading whose name came closest to a device's name.
        return max(candidates, key=lambda r: r.name_score, default=None)

    def _match_blind(self, spoken: str) -> HomeRequest | None:
        """A home command while the home has never answered: say so rather than guess."""
        if self._home.connected:
            return None  # an empty home: nothing here is a home command
        # With no names to match, templates that are all slots fit any sentence; only
        # words that speak of the house make it a home command.
        if not set(spoken.split()) & HOME_WORDS:
            return None
        for loose in recognize_all(
            spoken,
            self._intents,
            slot_lists=self._empty_slots(),
            language="en",
            allow_unmatched_entities=True,
        ):
            if set(loose.unmatched_entities) - {"name", "domain", "area"}:
                continue
            sentence = loose.intent_sentence.text if loose.intent_sentence else ""
            if sentence.replace("[<the>]", "").strip() == "{name}":
                continue  # a bare name: anything at all would match it
            if loose.intent.name == "HassGetState" and "state" not in loose.entities:
                continue  # "what's the capital of France?" is not about the home
            return HomeRequest(intent=loose.intent.name, unreachable=True)
        return None

    @staticmethod
    def _empty_slots() -> dict:
        empty = TextSlotList.from_tuples([], allow_template=False)
        return {"name": empty, "area": empty, "floor": empty}

    def _resolve(self, result, spoken: str, ended: bool) -> HomeRequest | None:
        """The devices a recognised sentence is about (none: it doesn't fit this home)."""
        if result.intent.name not in HANDLED:
            return None
        sentence = result.intent_sentence.text if result.intent_sentence else ""
        if sentence.replace("[<the>]", "").strip() == "{name}":
            return None  # a bare name is not a command
        slots: dict[str, MatchEntity] = result.entities
        request = HomeRequest(intent=result.intent.name, response=result.response or "")
        if "state" in slots:
            request.state = str(slots["state"].value)
        if "temperature" in slots:
            request.temperature = float(slots["temperature"].value)
        domain = slots["domain"].value if "domain" in slots else None
        allowed = (result.intent_data.requires_context or {}).get("domain")
        allowed = [allowed] if isinstance(allowed, str) else allowed
        area = str(slots["area"].value) if "area" in slots else ""
        device_class = str(slots["device_class"].value) if "device_class" in slots else ""
        by_id = {e.entity_id: e for e in self._entities}
        if "name" in slots:
            request.entities = [by_id[slots["name"].value]]
            # "close the garage" names the Garage Door by its alias, but he may be pausing
            # before "door": a sentence that ends in a name a longer name begins with, and
            # that Whisper did not hear as finished, may be going on.
            heard = normalise(slots["name"].text)
            request.named_whole = ended or not (
                spoken.endswith(heard) and any(n.startswith(heard + " ") for n in self._names)
            )
        elif "name" in result.unmatched_entities:
            heard = result.unmatched_entities["name"].text
            closest = self._closest(
                heard, [e for e in self._entities if not allowed or e.domain in allowed]
            )
            request.entities, request.doubtful, request.ambiguous, request.name_score = closest
        elif request.intent == "HassClimateGetTemperature":
            request.entities = [
                e
                for e in self._entities
                if (not area or e.area == area) and e.domain in ("sensor", "climate")
            ]
        elif area or domain:
            request.entities = [
                e
                for e in self._entities
                if (not area or e.area == area)
                and (not domain or e.domain == domain)
                and (not device_class or self._device_class(e) == device_class)
                and e.domain != "sensor"
            ]
        return request

    def _device_class(self, entity: Entity) -> str:
        state = self._home.states.get(entity.entity_id) or {}
        return str(state.get("attributes", {}).get("device_class") or "")

    def _closest(
        self, heard: str, candidates: list[Entity]
    ) -> tuple[list[Entity], bool, bool, float]:
        """(entities, doubtful, ambiguous, score) for a name not heard exactly."""
        heard = normalise(heard).removeprefix("the ").strip()
        heard_words = set(heard.split()) - FILLER_WORDS
        scored = []
        for e in candidates:
            if e.domain == "sensor":
                continue
            names = [normalise(n) for n in (e.name, *e.aliases)]
            # More than one word that is in none of its names: a sentence, not a name
            # ("tell me a story about the kitchen" is not the kitchen light).
            joined = max(fuzz.ratio(heard.replace(" ", ""), n.replace(" ", "")) for n in names)
            if min(len(heard_words - set(n.split())) for n in names) > 1 and joined < NAME_SURE:
                continue
            scored.append((max(joined, *(fuzz.token_set_ratio(heard, n) for n in names)), e))
        scored.sort(key=lambda p: -p[0])
        if not scored or scored[0][0] < NAME_MAYBE:
            return [], False, False, 0.0
        top = scored[0][0]
        tied = sorted((e for s, e in scored if s >= top - NAME_TIE), key=lambda e: e.name)
        if len(tied) > 1:
            return tied, False, True, top
        return [scored[0][1]], top < NAME_SURE, False, top


class HomeCommands(FrameProcessor):
    """Carries out plain home commands and answers state questions without the LLM."""

    def __init__(
        self,
        actions: HomeActions,
        phrases: PhraseMatcher,
        on_complete=None,
        utterance: UtteranceState | None = None,
        pause_hold_s: float = 0.0,
        **kwargs,
    ):
        """`phrases`: the one command matcher, for his yes and no to a read-back.
        `on_complete`: awaited when an utterance is a whole command or an answer, so its
        reply need not wait out the pause hold (SpeechReleaseGate.complete_utterance).
        `utterance`: the sentence he is in; a request not surely complete waits for its
        pause to end (None: no pause hold, everything is acted on at once), which
        `pause_hold_s` of silence (turn.pause_tolerance_s) makes."""
        super().__init__(**kwargs)
        self._phrases = phrases
        self._actions = actions
        self._on_complete = on_complete
        self._utterance = utterance
        self._pause_hold_s = pause_hold_s
        home = actions.home
        self._matcher = HomeMatcher(home) if home is not None else None
        self._timer: asyncio.Task | None = None
        # The LLM's tools ask through the same HomeActions: their questions time out too.
        actions.on_question = self._start_timer

    def _is_yes(self, text: str) -> bool:
        return self._phrases.is_command(text, Command.YES)

    def _is_no(self, text: str) -> bool:
        return self._phrases.is_command(text, Command.NO)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._actions.home is not None:
            # In the background: Nabu talks at once whether or not the home answers.
            await self._actions.home.start()
        if not (isinstance(frame, TranscriptionFrame) and frame.text.strip()):
            await self.push_frame(frame, direction)
            return
        if self._actions.waiting:
            self._cancel_timer()
            if self._actions.is_answer(frame.text, self._is_yes, self._is_no):
                await self._complete()
                await self.push_frame(consumed(frame), direction)
                self.create_task(self._answer(frame.text), "home-answer")
                return
            # Not an answer: the question is cancelled (and that said); his words go on.
            reply, _ = await self._actions.answer(frame.text, self._is_yes, self._is_no)
            if reply:
                await self.push_frame(TTSSpeakFrame(reply, append_to_context=False))
        request = await self._match(frame.text)
        if request is None:
            await self.push_frame(frame, direction)
            return
        started = time.monotonic()
        if request.complete:
            await self._complete()
        # Close the turn at once; the home may take a moment and audio must keep flowing.
        await self.push_frame(consumed(frame), direction)
        self.create_task(self._carry_out(request, frame.text, started), "home-command")

    async def _complete(self) -> None:
        if self._on_complete is not None:
            await self._on_complete()

    async def _match(self, text: str) -> HomeRequest | None:
        if self._matcher is None:
            return None
        try:
            self._matcher.refresh()
            # 5-120 ms of hassil on the 2-core CPU: off the loop, other sessions keep going.
            return await asyncio.to_thread(self._matcher.match, text)
        except Exception as e:  # a matcher bug must not cost Warren his sentence
            logger.exception(f"{self}: matching [{text}] failed: {e}")
            return None

    async def reply(self, request: HomeRequest) -> str:
        """The one sentence Warren hears for `request`, failures included."""
        try:
            return await self.handle(request)
        except HomeAssistantError as e:
            return e.spoken
        except Exception as e:
            logger.exception(f"{self}: {request.intent} failed: {e}")
            return "Sorry, something went wrong with your home system."

    async def _carry_out(self, request: HomeRequest, text: str, started: float) -> None:
        if not request.complete and not await self._pause_over():
            logger.info(f"{self}: [{text}] was the start of a longer sentence; not acted on")
            return
        reply = await self.reply(request)
        logger.info(
            f"{self}: [{text}] -> {request.intent} "
            f"{[e.entity_id for e in request.entities]}: [{reply}] "
            f"({time.monotonic() - started:.2f}s)"
        )
        await self._say(text, reply)

    async def _pause_over(self) -> bool:
        """Whether the utterance just heard ended there (False: he went on, and Whisper's
        transcript of the whole sentence came after it)."""
        utterance = self._utterance
        if utterance is None:
            return True
        heard = len(utterance.transcripts)
        waited = 0.0
        while waited < PAUSE_WAIT_MAX_S:
            if len(utterance.transcripts) > heard:
                return False
            if utterance.pause_expired or len(utterance.transcripts) < heard:
                return True  # the pause reached its hold, or a new utterance began
            silent = not utterance.speaking and utterance.awaiting == 0
            if silent and waited >= self._pause_hold_s + PAUSE_SLACK_S:
                return True
            await asyncio.sleep(PAUSE_POLL_S)
            waited += PAUSE_POLL_S
        return True

    async def _say(self, text: str, reply: str) -> None:
        """Speak `reply`, and put the exchange in the conversation so the LLM knows what
        happened ("turn it off again" later needs to know what "it" is)."""
        await self.push_frame(TTSSpeakFrame(reply, append_to_context=False))
        await self.push_frame(
            LLMMessagesAppendFrame(
                messages=[
                    {"role": "user", "content": text.strip()},
                    {"role": "assistant", "content": reply},
                ],
                run_llm=False,
            )
        )

    async def handle(self, request: HomeRequest) -> str:
        actions = self._actions
        if request.unreachable:
            home = actions.home
            raise HomeAssistantError(REFUSED if home is not None and home.refused else UNREACHABLE)
        if not request.entities:
            return "I couldn't find that in your home."
        if request.is_question:
            return await self._answer_question(request)
        verb = ACTS.get(request.intent, "set_temperature")
        planned = []
        for entity in request.entities:
            try:
                planned.append(self._plan(entity, verb, request))
            except ValueError:
                continue
        if not planned:
            return f"I can't do that with {spoken_name(request.entities[0])}."
        if request.ambiguous and len(planned) > 1:
            return actions.choose(planned)
        return await actions.request(planned, doubtful=request.doubtful or request.ambiguous)

    def _plan(self, entity: Entity, verb: str, request: HomeRequest) -> Action:
        home = self._actions.home
        state = home.states.get(entity.entity_id) if home else None
        temperature_c = None
        if request.temperature is not None:
            temperature_c = to_celsius(request.temperature, self._actions.locale.temperature_unit)
        return plan(entity, verb, state, self._actions.config, self._actions.locale, temperature_c)

    async def _answer_question(self, request: HomeRequest) -> str:
        actions = self._actions
        if request.ambiguous:
            names = [spoken_name(e) for e in request.entities]
            return capitalised(f"Do you mean {', '.join(names[:-1])} or {names[-1]}?")
        if request.intent == "HassClimateGetTemperature":
            sensors = [e for e in request.entities if e.domain == "sensor"] or request.entities
            entity = sensors[0]
            return describe_state(entity, await actions.state_of(entity), actions.locale)
        if request.state and len(request.entities) == 1:
            entity = request.entities[0]
            state = await actions.state_of(entity)
            sentence = describe_state(entity, state, actions.locale)
            if state is None or state.get("state") in ("unavailable", "unknown"):
                return sentence
            return (
                ("Yes, " if state.get("state") == request.state else "No, ")
                + sentence[:1].lower()
                + sentence[1:]
            )
        said = [
            describe_state(e, await actions.state_of(e), actions.locale) for e in request.entities
        ]
        return " ".join(said[:4])

    def _start_timer(self) -> None:
        self._cancel_timer()
        self._timer = self.create_task(self._expire(), "home-confirm-timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            task, self._timer = self._timer, None
            if not task.done():
                task.cancel()

    async def _expire(self) -> None:
        await asyncio.sleep(self._actions.config.confirm_timeout_s)
        sentence = self._actions.expired()
        self._timer = None
        if sentence:
            await self.push_frame(TTSSpeakFrame(sentence, append_to_context=False))

    async def _answer(self, text: str) -> None:
        try:
            reply, _ = await self._actions.answer(text, self._is_yes, self._is_no)
        except HomeAssistantError as e:
            reply = e.spoken
        logger.info(f"{self}: answer [{text}] -> [{reply}]")
        if reply:
            await self._say(text, reply)

    async def cleanup(self):
        self._cancel_timer()
        if self._actions.home is not None:
            await self._actions.home.close()
        await super().cleanup()
