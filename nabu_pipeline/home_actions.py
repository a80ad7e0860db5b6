"""Acting in Warren's home safely and truthfully, whichever path (phrases or LLM) asked.

Three rules live here so that both paths obey them:
- Safety: unlocking, opening a door, garage or gate, disarming an alarm, turning the
  heating off or a set point outside the comfortable range, and anything asked with a
  doubtful name are read back ("Shall I unlock the front door?") and wait for a yes;
  anything else, or `confirm_timeout_s` of nothing, cancels and says so.
- Truth: an action is reported done only when Home Assistant's state shows it done
  (a `state_changed` event within `done_timeout_s`); otherwise Warren hears plainly that
  it did not happen. Home Assistant being unreachable, slow or refusing the token is one
  sentence, never a pretence.
- Plain speech: names as Warren says them, temperatures in his unit, never entity ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from nabu_pipeline.config import HomeAssistantConfig, LocaleConfig
from nabu_pipeline.home_assistant import Entity, HomeAssistant, HomeAssistantError
from processors.text_normalise import normalise

NOT_CONFIGURED = "I'm not connected to a home system, so I can't do that."
# "will not", not "won't": its weak "n't" made "I won't unlock" sound like "I want to
# unlock" (tiny.en heard exactly that), the opposite of what Nabu means.
CANCELLED = "Okay, I will not {what}."
TIMED_OUT = "I didn't hear a yes, so I will not {what}."
# Door-like covers: opening one lets someone in.
RISKY_COVER_CLASSES = frozenset({"door", "garage", "gate"})
RISKY_COVER_WORDS = ("door", "garage", "gate")


def spoken_name(entity: Entity) -> str:
    """ "the kitchen light" (friendly names are Title Case; speech is not)."""
    name = entity.name.strip().lower()
    return name if name.lower().startswith("the ") else f"the {name}"


def capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def to_celsius(value: float, unit: str) -> float:
    return (value - 32) * 5 / 9 if unit == "F" else value


def from_celsius(value_c: float, unit: str) -> float:
    return value_c * 9 / 5 + 32 if unit == "F" else value_c


def say_degrees(value_c: float, locale: LocaleConfig) -> str:
    value = from_celsius(value_c, locale.temperature_unit)
    rounded = round(value * 2) / 2 if locale.temperature_unit == "C" else round(value)
    number = f"{rounded:g}"
    return f"{number} degrees"


@dataclass(frozen=True)
class Action:
    """One service call on one device, with how to tell it worked and how to say it."""

    entity: Entity
    service: str
    data: dict = field(default_factory=dict)
    expect: Callable[[dict], bool] = lambda _s: True
    phrase: str = ""
    """Imperative, for the read-back: "unlock the front door"."""
    done: str = ""
    failed: str = ""
    risky: bool = False

    @property
    def domain(self) -> str:
        return "climate" if self.service.startswith("set_") else self.entity.domain


def _state_is(*wanted: str) -> Callable[[dict], bool]:
    return lambda state: state.get("state") in wanted


def plan(
    entity: Entity,
    verb: str,
    state: dict | None,
    config: HomeAssistantConfig,
    locale: LocaleConfig,
    temperature_c: float | None = None,
) -> Action:
    """The Action for `verb` (turn_on, turn_off, lock, unlock, open, close, set_temperature)."""
    name = spoken_name(entity)
    domain = entity.domain
    attrs = (state or {}).get("attributes", {})
    if domain == "lock":
        verb = {"turn_on": "lock", "turn_off": "unlock"}.get(verb, verb)
    if domain == "cover":
        verb = {"turn_on": "open", "turn_off": "close"}.get(verb, verb)
    if domain == "lock" and verb in ("lock", "unlock"):
        past = f"{verb}ed"
        return Action(
            entity,
            verb,
            expect=_state_is(past),
            phrase=f"{verb} {name}",
            done=f"{capitalised(name)} is {past}.",
            failed=f"{capitalised(name)} didn't {verb}.",
            risky=verb == "unlock",
        )
    if domain == "cover" and verb in ("open", "close"):
        door_like = attrs.get("device_class") in RISKY_COVER_CLASSES or any(
            w in entity.name.lower() for w in RISKY_COVER_WORDS
        )
        past = "open" if verb == "open" else "closed"
        return Action(
            entity,
            f"{verb}_cover",
            expect=_state_is(past),
            phrase=f"{verb} {name}",
            done=f"{capitalised(name)} is {past}.",
            failed=f"{capitalised(name)} didn't {verb}.",
            risky=verb == "open" and door_like,
        )
    if domain == "climate" and verb == "set_temperature" and temperature_c is not None:
        target = round(temperature_c * 2) / 2
        degrees = say_degrees(target, locale)
        outside = not config.setpoint_min_c <= target <= config.setpoint_max_c
        return Action(
            entity,
            "set_temperature",
            data={"temperature": target},
            expect=lambda s: _close(s.get("attributes", {}).get("temperature"), target),
            phrase=f"set {name} to {degrees}",
            done=f"{capitalised(name)} is set to {degrees}.",
            failed=f"{capitalised(name)} didn't change to {degrees}.",
            risky=outside,
        )
    if verb in ("turn_on", "turn_off"):
        word = "on" if verb == "turn_on" else "off"
        expect = (
            (lambda s: s.get("state") not in ("off", "unavailable", "unknown"))
            if word == "on"
            else _state_is("off")
        )
        return Action(
            entity,
            verb,
            expect=expect,
            phrase=f"turn {name} {word}",
            done=f"{capitalised(name)} is {word}.",
            failed=f"{capitalised(name)} didn't turn {word}.",
            # Heating off in the cold is the harm an old man cannot see coming.
            risky=domain == "climate" and word == "off",
        )
    if domain == "alarm_control_panel" and verb in ("arm", "turn_on"):
        return Action(
            entity,
            "alarm_arm_away",
            expect=_state_is("armed_away", "arming"),
            phrase=f"set {name}",
            done=f"{capitalised(name)} is set.",
            failed=f"{capitalised(name)} didn't set.",
        )
    if domain == "alarm_control_panel" and verb in ("disarm", "turn_off"):
        return Action(
            entity,
            "alarm_disarm",
            expect=_state_is("disarmed"),
            phrase=f"disarm {name}",
            done=f"{capitalised(name)} is disarmed.",
            failed=f"{capitalised(name)} didn't disarm.",
            risky=True,
        )
    raise ValueError(f"can't {verb.replace('_', ' ')} {name}")


def _close(value, target: float) -> bool:
    try:
        return abs(float(value) - target) < 0.01
    except (TypeError, ValueError):
        return False


def describe_state(entity: Entity, state: dict | None, locale: LocaleConfig) -> str:
    """One spoken sentence: "The front door is locked." / "It's 67 degrees in the living room." """
    name = capitalised(spoken_name(entity))
    if state is None or state.get("state") in ("unavailable", "unknown"):
        return f"I can't tell how {spoken_name(entity)} is right now."
    attrs = state.get("attributes", {})
    value = state.get("state")
    if entity.domain == "climate":
        current = attrs.get("current_temperature")
        target = attrs.get("temperature")
        parts = []
        if current is not None:
            parts.append(f"it's {say_degrees(float(current), locale)}")
        if value == "off":
            parts.append("the heating is off")
        elif target is not None:
            parts.append(f"{spoken_name(entity)} is set to {say_degrees(float(target), locale)}")
        return capitalised(", and ".join(parts) + ".") if parts else f"{name} is {value}."
    if entity.domain == "sensor":
        try:
            celsius = to_celsius(
                float(value), "F" if "F" in attrs.get("unit_of_measurement", "") else "C"
            )
        except ValueError:
            return f"I can't tell how {spoken_name(entity)} is right now."
        where = f" in the {entity.area.lower()}" if entity.area else ""
        return f"It's {say_degrees(celsius, locale)}{where}."
    return f"{name} is {value}."


@dataclass
class _Pending:
    actions: list[Action]
    asked_at: float
    question: str


class HomeActions:
    """The confirmation rule and truthful acting, one per conversation."""

    def __init__(
        self,
        home: HomeAssistant | None,
        config: HomeAssistantConfig,
        locale: LocaleConfig,
        clock=time.monotonic,
    ):
        self.home = home
        self.config = config
        self.locale = locale
        self._clock = clock
        self._pending: _Pending | None = None
        self._choice: list[Action] | None = None
        self.on_question: Callable[[], None] | None = None
        """Called when a read-back question is asked, by either path (starts its timeout)."""

    @property
    def available(self) -> bool:
        return self.home is not None

    @property
    def waiting(self) -> bool:
        """A read-back question is open (the next utterance is its answer)."""
        return self._pending is not None or self._choice is not None

    @property
    def pending_question(self) -> str:
        return self._pending.question if self._pending else ""

    async def request(self, actions: list[Action], doubtful: bool = False) -> str:
        """Do `actions` now, or ask first when any is risky or the request was doubtful."""
        if not actions:
            return "There's nothing like that in your home."
        if any(a.risky for a in actions) or doubtful:
            what = " and ".join(a.phrase for a in actions)
            question = f"Shall I {what}?"
            self._pending = _Pending(actions, self._clock(), question)
            logger.info(f"Home: asking before acting: {question}")
            if self.on_question is not None:
                self.on_question()
            return question
        return await self.perform(actions)

    def choose(self, candidates: list[Action]) -> str:
        """Two devices fit: ask which ("The kitchen light or the kitchen speaker?")."""
        self._choice = candidates
        self._pending = None
        names = [spoken_name(a.entity) for a in candidates]
        question = capitalised(", ".join(names[:-1]) + " or " + names[-1] + "?")
        logger.info(f"Home: ambiguous; asking {question}")
        return question

    def expired(self) -> str | None:
        """The sentence to say if the open question has waited too long (and forget it)."""
        if (
            self._pending
            and self._clock() - self._pending.asked_at >= self.config.confirm_timeout_s
        ):
            what = " and ".join(a.phrase for a in self._pending.actions)
            self._pending = None
            logger.info(f"Home: no answer in {self.config.confirm_timeout_s:.0f}s; cancelled")
            return TIMED_OUT.format(what=what)
        return None

    def cancel_question(self) -> str | None:
        """Warren said "stop" or "cancel" while a question was open: what to say instead of
        a bare "Okay." (None: no question was open). Nothing is done."""
        if self._choice is not None:
            self._choice = None
            return "Okay."
        if self._pending is None:
            return None
        what = " and ".join(a.phrase for a in self._pending.actions)
        self._pending = None
        logger.info(f"Home: stopped; {what} cancelled")
        return CANCELLED.format(what=what)

    def is_answer(self, text: str, is_yes, is_no) -> bool:
        """Whether `text` answers the open question (yes, no, or one of the names offered)."""
        if self._choice is not None:
            return is_no(text) or pick_by_name(text, self._choice) is not None
        return self._pending is not None and (is_yes(text) or is_no(text))

    async def answer(self, text: str, is_yes, is_no) -> tuple[str | None, bool]:
        """(what to say, consumed) for an utterance while a question is open.

        consumed is False when the words were not an answer at all: the question is
        cancelled (and that said), and his words go on as a new request.
        """
        if self._choice is not None:
            candidates, self._choice = self._choice, None
            picked = pick_by_name(text, candidates)
            if picked is not None:
                return await self.request([picked]), True
            if is_no(text):
                return "Okay.", True
            return None, False
        pending = self._pending
        if pending is None:
            return None, False
        what = " and ".join(a.phrase for a in pending.actions)
        if self._clock() - pending.asked_at > self.config.confirm_timeout_s:
            self._pending = None
            return TIMED_OUT.format(what=what), False
        self._pending = None
        if is_yes(text):
            logger.info(f"Home: confirmed: {what}")
            return await self.perform(pending.actions), True
        logger.info(f"Home: not confirmed ([{text}]): {what} cancelled")
        return CANCELLED.format(what=what), is_no(text)

    async def perform(self, actions: list[Action]) -> str:
        """Call the services, then report only what Home Assistant's states show."""
        if self.home is None:
            return NOT_CONFIGURED
        said = []
        for action in actions:
            started = time.monotonic()
            data = {"entity_id": action.entity.entity_id, **action.data}
            try:
                await self.home.call_service(action.domain, action.service, data)
                ok = await self.home.wait_for_state(
                    action.entity.entity_id, action.expect, self.config.done_timeout_s
                )
            except HomeAssistantError as e:
                logger.warning(f"Home: {action.phrase}: {e}")
                return e.spoken
            logger.info(
                f"Home: {action.domain}.{action.service} {action.entity.entity_id} -> "
                f"{'done' if ok else 'NOT done'} ({time.monotonic() - started:.2f}s)"
            )
            said.append(action.done if ok else action.failed)
        return " ".join(said)

    async def state_of(self, entity: Entity) -> dict | None:
        """The current state: from the subscription, or straight from Home Assistant."""
        if self.home is None:
            raise HomeAssistantError(NOT_CONFIGURED)
        if self.home.connected and entity.entity_id in self.home.states:
            return self.home.states[entity.entity_id]
        return await self.home.fetch_state(entity.entity_id)


def pick_by_name(text: str, candidates: list[Action]) -> Action | None:
    """The candidate whose name Warren said back ("the speaker" picks the kitchen speaker)."""
    said = set(normalise(text).split()) - {"the", "a", "one"}
    if not said:
        return None
    scored = []
    for action in candidates:
        words = set(normalise(action.entity.name).split())
        for alias in action.entity.aliases:
            words |= set(normalise(alias).split())
        # Words that tell the candidates apart count; shared ones ("kitchen") don't.
        scored.append((len(said & words), action))
    shared = set.intersection(*(set(normalise(a.entity.name).split()) for a in candidates))
    scored = [(n - len(said & shared), a) for n, a in scored]
    scored.sort(key=lambda p: -p[0])
    if scored[0][0] > 0 and (len(scored) == 1 or scored[0][0] > scored[1][0]):
        return scored[0][1]
    return None
