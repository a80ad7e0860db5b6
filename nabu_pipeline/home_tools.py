"""Warren's home as LLM tools (pipecat function calling), for what the phrases don't cover.

"I'm cold", "turn off everything downstairs", "set the heating to 22": the LLM gets two
tools, one that reads states and one that acts on named devices, with the home's
devices (names, areas, states) in the tool descriptions, kept current as Home
Assistant's names change. Acting goes through the same HomeActions as the local path,
so the confirmation rule holds whichever path asked: a risky action comes back to the
LLM as the question to ask, and Warren's "yes" is heard by the HomeCommands stage
before the LLM. Reading never acts. Devices are named to the LLM by their names, never
entity ids, so no id can end up in speech.
"""

from __future__ import annotations

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import FunctionCallParams, LLMService
from rapidfuzz import fuzz

from nabu_pipeline.config import HomeAssistantConfig, LocaleConfig
from nabu_pipeline.home_actions import (
    NOT_CONFIGURED,
    HomeActions,
    describe_state,
    plan,
    spoken_name,
    to_celsius,
)
from nabu_pipeline.home_assistant import REFUSED, UNREACHABLE, Entity, HomeAssistantError
from processors.openai_llm import last_user_text
from processors.text_normalise import normalise

READ = "get_home_state"
ACT = "control_home_devices"
ACTIONS = (
    "turn_on",
    "turn_off",
    "lock",
    "unlock",
    "open",
    "close",
    "set_temperature",
    "arm",
    "disarm",
)
NAME_SURE = 85.0
_ANY_CONFIG = HomeAssistantConfig()
_ANY_LOCALE = LocaleConfig()


def _catalogue(actions: HomeActions) -> str:
    home = actions.home
    if home is None or not home.entities():
        return "The home's devices are not known right now (Home Assistant is not connected)."
    lines = []
    for e in sorted(home.entities(), key=lambda e: (e.area, e.name)):
        aliases = f" (also called {', '.join(e.aliases)})" if e.aliases else ""
        area = f" in the {e.area}" if e.area else ""
        lines.append(f"- {e.name}{aliases}: a {e.domain}{area}")
    return "Warren's devices:\n" + "\n".join(lines)


def _names(description: str) -> dict:
    return {"type": "array", "items": {"type": "string"}, "description": description}


def tools_schema(actions: HomeActions) -> ToolsSchema:
    catalogue = _catalogue(actions)
    read = FunctionSchema(
        name=READ,
        description=(
            "Read the current state of devices in Warren's home (lights, locks, doors, "
            "heating, temperatures). Never changes anything. Use it for any question about "
            f"the home.\n{catalogue}"
        ),
        properties={
            "names": _names("Device names as listed; empty for all devices."),
            "area": {"type": "string", "description": "Only devices in this area (optional)."},
        },
        required=[],
    )
    act = FunctionSchema(
        name=ACT,
        description=(
            "Change devices in Warren's home. Only for a clear request to act, never to "
            "answer a question. Say to Warren exactly the sentence this returns: it is the "
            "true outcome, or a question he must answer yes to before Nabu acts.\n"
            f"{catalogue}"
        ),
        properties={
            "names": _names("Device names as listed."),
            "action": {"type": "string", "enum": list(ACTIONS)},
            "temperature": {
                "type": "number",
                "description": "For set_temperature: degrees in Warren's unit "
                f"({'Fahrenheit' if actions.locale.temperature_unit == 'F' else 'Celsius'}).",
            },
        },
        required=["names", "action"],
    )
    return ToolsSchema(standard_tools=[read, act])


def find(actions: HomeActions, name: str, area: str = "") -> list[Entity]:
    """Devices called `name` (exact name or alias first, then the closest names)."""
    home = actions.home
    entities = home.entities() if home else []
    if area:
        entities = [e for e in entities if normalise(e.area) == normalise(area)]
    wanted = normalise(name).removeprefix("the ")
    exact = [e for e in entities if wanted in {normalise(n) for n in (e.name, *e.aliases)}]
    if exact:
        return exact
    scored = sorted(
        ((max(fuzz.token_set_ratio(wanted, normalise(n)) for n in (e.name, *e.aliases)), e)
         for e in entities),
        key=lambda p: -p[0],
    )  # fmt: skip
    if not scored or scored[0][0] < NAME_SURE:
        return []
    return [e for s, e in scored if s >= scored[0][0] - 5]


QUESTION_NEVER_ACTS = (
    "Nothing was changed: Warren asked a question. Answer it (get_home_state reads the "
    "home); ask him whether he wants it changed."
)
_QUESTION_WORDS = frozenset(
    "is are was were what whats which how does do did where who when has have isn't aren't "
    "doesn't".split()
)


def is_question(text: str) -> bool:
    """ "Is the light on?" asks; "Could you turn the light on?" is a polite request."""
    words = normalise(text).replace("what's", "whats").split()
    return bool(words) and words[0] in _QUESTION_WORDS


def register_home_tools(llm: LLMService, context: LLMContext, actions: HomeActions) -> None:
    """Give the LLM the home's tools, and keep their device list current."""

    def refresh() -> None:
        context.set_tools(tools_schema(actions))

    refresh()
    if actions.home is not None:
        actions.home.listeners.append(refresh)

    async def read(params: FunctionCallParams) -> None:
        args = params.arguments
        try:
            said = await _read(actions, list(args.get("names") or []), str(args.get("area") or ""))
        except HomeAssistantError as e:
            said = e.spoken
        logger.info(f"Home tool {READ}({dict(args)}) -> [{said}]")
        await params.result_callback({"say": said})

    async def act(params: FunctionCallParams) -> None:
        args = params.arguments
        asked = last_user_text(params.context)
        try:
            if is_question(asked):
                # A known failure of voice assistants: "is the light on?" turned it on.
                said = QUESTION_NEVER_ACTS
            else:
                said = await _act(actions, args)
        except HomeAssistantError as e:
            said = e.spoken
        logger.info(f"Home tool {ACT}({dict(args)}) -> [{said}]")
        await params.result_callback({"say": said})

    llm.register_function(READ, read)
    # An action once sent cannot be unsent: let it finish even if Warren talks over it.
    llm.register_function(ACT, act, cancel_on_interruption=False)


def _require_home(actions: HomeActions) -> None:
    """Raise Warren's sentence when the home cannot be asked (rather than "no such device")."""
    home = actions.home
    if home is None:
        raise HomeAssistantError(NOT_CONFIGURED)
    if not home.connected and not home.entities():
        raise HomeAssistantError(REFUSED if home.refused else UNREACHABLE)


async def _read(actions: HomeActions, names: list[str], area: str) -> str:
    _require_home(actions)
    home = actions.home
    if names:
        found: list[Entity] = []
        for name in names:
            hits = find(actions, name, area)
            if not hits:
                return f"There's no device called {name} in Warren's home."
            found += hits
    else:
        found = [e for e in home.entities() if not area or normalise(e.area) == normalise(area)]
    said = [describe_state(e, await actions.state_of(e), actions.locale) for e in found]
    return " ".join(said) if said else "There are no such devices."


async def _act(actions: HomeActions, args) -> str:
    _require_home(actions)
    verb = str(args.get("action") or "")
    names = list(args.get("names") or [])
    if verb not in ACTIONS or not names:
        return "Ask Warren which device he means."
    temperature_c = None
    if args.get("temperature") is not None:
        temperature_c = to_celsius(float(args["temperature"]), actions.locale.temperature_unit)
    planned = []
    for name in names:
        hits = find(actions, name)
        if not hits:
            return f"There's no device called {name}. Ask Warren which device he means."
        if len(hits) > 1:
            return actions.choose(
                [_plan(actions, e, verb, temperature_c) for e in hits if _fits(e, verb)]
                or [_plan(actions, hits[0], verb, temperature_c)]
            )
        try:
            planned.append(_plan(actions, hits[0], verb, temperature_c))
        except ValueError:
            return f"I can't {verb.replace('_', ' ')} {spoken_name(hits[0])}."
    return await actions.request(planned)


def _fits(entity: Entity, verb: str) -> bool:
    try:
        plan(entity, verb, None, _ANY_CONFIG, _ANY_LOCALE, 20.0)
        return True
    except ValueError:
        return False


def _plan(actions: HomeActions, entity: Entity, verb: str, temperature_c: float | None):
    state = actions.home.states.get(entity.entity_id) if actions.home else None
    return plan(entity, verb, state, actions.config, actions.locale, temperature_c)
