"""Nabu in Warren's home, against a real Home Assistant core (tests/home_assistant/).

Sentences go through the same matcher and actions the pipeline uses; every assertion
about the home reads Home Assistant's own state over its REST API.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from nabu_pipeline.config import HomeAssistantConfig, LocaleConfig, NabuConfig
from nabu_pipeline.home_actions import HomeActions
from nabu_pipeline.home_assistant import REFUSED, UNREACHABLE, HomeAssistant
from nabu_pipeline.pipeline import build_matcher
from processors.home_commands import HomeCommands, HomeMatcher

from .home_assistant.core import HomeAssistantCore

PHRASES = build_matcher(NabuConfig())


def ha_config(core: HomeAssistantCore, **kw) -> HomeAssistantConfig:
    return HomeAssistantConfig(url=core.url, token=core.token, **kw)


class Home:
    """A connected client, its actions and the local command stage's logic."""

    def __init__(self, core, locale=None, **kw):
        self.config = ha_config(core, **kw)
        self.client = HomeAssistant(self.config)
        self.actions = HomeActions(self.client, self.config, locale or LocaleConfig())
        self.stage = HomeCommands(self.actions, PHRASES)
        self.actions.on_question = None  # the stage's timer needs a running pipeline
        self.matcher = HomeMatcher(self.client)

    async def __aenter__(self):
        await self.client.start()
        assert await self.client.wait_ready(15), "client never got the home's states"
        return self

    async def __aexit__(self, *exc):
        await self.client.close()

    async def say(self, text: str) -> str:
        """What Nabu answers to `text` on the local path (None: not a home command)."""
        if self.actions.waiting:
            reply, consumed = await self.actions.answer(text, self.stage._is_yes, self.stage._is_no)
            if consumed:
                return reply
        self.matcher.refresh()
        request = self.matcher.match(text)
        if request is None:
            return None
        return await self.stage.reply(request)


async def test_client_reads_names_aliases_areas_and_follows_state(ha):
    async with Home(ha) as home:
        entities = {e.entity_id: e for e in home.client.entities()}
        kitchen = entities["light.kitchen_light"]
        assert kitchen.name == "Kitchen Light" and kitchen.area == "Kitchen"
        assert kitchen.aliases == ("Kitchen Lamp",)
        assert entities["lock.front_door"].area == "Hallway"
        # Helpers are not Warren's devices.
        assert not any(e.startswith("input_boolean.") for e in entities)
        # A change made elsewhere (a wall switch) arrives by the subscription, no polling.
        assert home.client.states["light.kitchen_light"]["state"] == "off"
        await asyncio.to_thread(ha.set_switch, "input_boolean.kitchen_light_power", True)
        assert await home.client.wait_for_state(
            "light.kitchen_light", lambda s: s["state"] == "on", 10
        )


async def test_plain_commands_act_and_questions_never_do(ha):
    async with Home(ha) as home:
        assert await home.say("Turn on the kitchen light.") == "The kitchen light is on."
        assert ha.state("light.kitchen_light")["state"] == "on"
        # Tolerant names: the alias, and a plural Whisper might write.
        assert await home.say("Turn off the kitchen lamp.") == "The kitchen light is off."
        assert ha.state("light.kitchen_light")["state"] == "off"
        assert await home.say("Switch on the kitchen lights, please.") == (
            "The kitchen light is on."
        )
        # Questions read; they never change anything.
        before = {e: ha.state(e)["state"] for e in ("lock.front_door", "light.bedroom_light")}
        assert await home.say("Is the front door locked?") == "Yes, the front door is locked."
        assert await home.say("Is the bedroom light on?") == "No, the bedroom light is off."
        after = {e: ha.state(e)["state"] for e in before}
        assert before == after
        # Warren's units: 19.5 C in Fahrenheit.
        assert await home.say("What's the temperature in the living room?") == (
            "It's 67 degrees in the living room."
        )
        ha.set_switch("input_boolean.garage_door_up", True)
        assert await home.client.wait_for_state(
            "cover.garage_door", lambda s: s["state"] == "open", 10
        )
        assert await home.say("Close the garage door.") == "The garage door is closed."
        assert ha.state("cover.garage_door")["state"] == "closed"
        # Not home commands: the LLM gets them.
        assert await home.say("I'm cold.") is None
        assert await home.say("Tell me a story about the kitchen.") is None


async def test_only_a_whole_name_at_the_end_makes_a_complete_command(ha):
    """A complete command is answered after a short hold; anything that may be the start
    of a longer sentence (he pauses mid-command) waits out his pause."""
    async with Home(ha) as home:
        home.matcher.refresh()

        def complete(text: str) -> bool:
            request = home.matcher.match(text)
            assert request is not None and request.entities, text
            return request.complete

        assert complete("Close the garage door.")
        assert complete("Turn on the kitchen lamp.")
        assert complete("Is the front door locked?")  # the name is not where it ends
        assert not complete("Close the garage")  # an alias, but "garage door" may follow
        assert complete("Unlock the front door.")  # "front door lock" could, but it ended
        assert not complete("Unlock the front door")
        assert not complete("Turn on the kitchen")  # two devices fit
        assert not complete("Turn off the bedroom")  # an area, not a name


async def test_unlock_waits_for_yes(ha):
    async with Home(ha) as home:
        question = await home.say("Unlock the front door.")
        assert question == "Shall I unlock the front door?"
        await asyncio.sleep(1.0)
        assert ha.state("lock.front_door")["state"] == "locked"
        assert await home.say("Yes.") == "The front door is unlocked."
        assert ha.state("lock.front_door")["state"] == "unlocked"


async def test_anything_but_yes_cancels_and_says_so(ha):
    async with Home(ha) as home:
        assert await home.say("Open the garage door.") == "Shall I open the garage door?"
        assert await home.say("No.") == "Okay, I will not open the garage door."
        assert ha.state("cover.garage_door")["state"] == "closed"
        # Something else entirely cancels too, and his words go on as a new request.
        assert await home.say("Unlock the front door.") == "Shall I unlock the front door?"
        reply, consumed = await home.actions.answer(
            "What time is it?", lambda t: False, lambda t: False
        )
        assert reply == "Okay, I will not unlock the front door." and not consumed
        assert ha.state("lock.front_door")["state"] == "locked"


async def test_silence_cancels_after_the_timeout(ha):
    async with Home(ha, confirm_timeout_s=0.5) as home:
        assert await home.say("Unlock the front door.") == "Shall I unlock the front door?"
        await asyncio.sleep(0.7)
        assert home.actions.expired() == "I didn't hear a yes, so I will not unlock the front door."
        assert not home.actions.waiting
        assert await home.say("Yes.") is None  # a late yes answers nothing
        assert ha.state("lock.front_door")["state"] == "locked"


async def test_heating_set_points_outside_the_comfortable_range_are_confirmed(ha):
    async with Home(ha, locale=LocaleConfig(temperature_unit="C")) as home:
        assert (
            await home.say("Set the heating to 22 degrees.") == "The heating is set to 22 degrees."
        )
        assert ha.state("climate.heating")["attributes"]["temperature"] == 22
        assert await home.say("Set the heating to 29 degrees.") == (
            "Shall I set the heating to 29 degrees?"
        )
        assert ha.state("climate.heating")["attributes"]["temperature"] == 22
        assert await home.say("Turn off the heating.") == "Shall I turn the heating off?"
        assert await home.say("yes") == "The heating is off."
        assert ha.state("climate.heating")["state"] == "off"


async def test_done_only_when_the_home_shows_it(ha):
    ha.set_switch("input_boolean.garage_door_up", True)
    ha.set_switch("input_boolean.garage_door_jammed", True)
    async with Home(ha, done_timeout_s=1.5) as home:
        assert await home.say("Close the garage door.") == "The garage door didn't close."
        assert ha.state("cover.garage_door")["state"] == "open"


async def test_two_devices_that_fit_get_a_question(ha):
    async with Home(ha) as home:
        assert await home.say("Turn on the kitchen.") == (
            "The kitchen light or the kitchen speaker?"
        )
        assert ha.state("switch.kitchen_speaker")["state"] == "off"
        assert await home.say("The speaker.") == "The kitchen speaker is on."
        assert ha.state("switch.kitchen_speaker")["state"] == "on"
        assert ha.state("light.kitchen_light")["state"] == "off"


async def test_refused_token_is_one_sentence(ha):
    config = HomeAssistantConfig(url=ha.url, token="not-a-valid-token")
    client = HomeAssistant(config)
    await client.start()
    try:
        assert not await client.wait_ready(2)
        actions = HomeActions(client, config, LocaleConfig())
        from nabu_pipeline.home_actions import plan
        from nabu_pipeline.home_assistant import Entity

        action = plan(
            Entity("light.kitchen_light", "Kitchen Light"), "turn_on", None, config, LocaleConfig()
        )
        assert await actions.perform([action]) == REFUSED
    finally:
        await client.close()


async def test_home_assistant_stopped_mid_conversation(ha):
    async with Home(ha) as home:
        assert await home.say("Turn on the bedroom light.") == "The bedroom light is on."
        await asyncio.to_thread(ha.stop)
        started = time.monotonic()
        assert await home.say("Turn off the bedroom light.") == UNREACHABLE
        assert await home.say("Is the front door locked?") == UNREACHABLE
        assert time.monotonic() - started < 8
    await asyncio.to_thread(ha.start)


async def test_home_down_from_the_start_is_said_not_guessed():
    from nabu_pipeline.scripted_llm import refused_url

    config = HomeAssistantConfig(url=refused_url().removesuffix("/v1"), token="t")
    client = HomeAssistant(config)
    actions = HomeActions(client, config, LocaleConfig())
    stage = HomeCommands(actions, PHRASES)
    matcher = HomeMatcher(client)
    await client.start()
    try:
        assert not await client.wait_ready(0.5)
        matcher.refresh()
        request = matcher.match("Turn on the kitchen light.")
        assert request is not None
        assert await stage.reply(request) == UNREACHABLE
        assert await stage.reply(matcher.match("Is the front door locked?")) == UNREACHABLE
        # Not a home command at all: the LLM answers it as ever.
        assert matcher.match("What's the capital of France?") is None
    finally:
        await client.close()


def test_home_assistant_config_from_the_environment(tmp_path):
    from nabu_pipeline.config import load_config

    config = load_config(env={"NABU_HA_URL": "http://ha.local:8123", "NABU_HA_TOKEN": "s3cret"})
    assert config.home_assistant.url == "http://ha.local:8123"
    assert config.home_assistant.is_configured
    assert "s3cret" not in repr(config.home_assistant) and "s3cret" not in str(config)
    assert not load_config(env={}).home_assistant.is_configured
    path = tmp_path / "c.yaml"
    path.write_text("home_assistant:\n  url: http://x:8123\n  token: abc\n  timeout_s: 2\n")
    assert load_config(path, env={}).home_assistant.timeout_s == 2


async def test_nabu_talks_when_home_assistant_is_not_configured_or_down(tmp_path, config_for):
    """The whole pipeline starts and answers with no home, and with a home that is down."""
    from nabu_pipeline.pipeline import build_session
    from nabu_pipeline.scripted_llm import refused_url
    from transports.wav_file import WavFileTransport, wav_transport_params

    for home in ({}, {"url": refused_url().removesuffix("/v1"), "token": "t"}):
        config = config_for(None, home_assistant=home)
        session = build_session(config, WavFileTransport(wav_transport_params(16000, 24000)))
        assert ("home" in session.parts) == bool(home)


async def test_a_name_heard_roughly_is_read_back(ha):
    async with Home(ha) as home:
        # Whisper base heard Piper's "garage door" as "grouch door".
        assert await home.say("Close the grouch door.") == "Shall I close the garage door?"
        assert await home.say("Turn on the bed room light.") == "The bedroom light is on."
        assert await home.say("Turn on the kitchen lamps.") == "The kitchen light is on."
        # Two lamps: he is asked which, and his answer picks one.
        assert await home.say("Turn the lamp on.") == "The kitchen light or the living room lamp?"
        assert await home.say("The living room one.") == "The living room lamp is on."
        assert ha.state("light.living_room_lamp")["state"] == "on"


async def test_a_slow_home_is_said_in_one_sentence_not_waited_on():
    """A server that accepts but never answers (a hung Home Assistant): the limit holds."""
    from aiohttp import web

    from nabu_pipeline.home_actions import plan
    from nabu_pipeline.home_assistant import SLOW, Entity

    async def hang(request):
        await asyncio.sleep(30)
        return web.Response(status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    config = HomeAssistantConfig(url=f"http://127.0.0.1:{port}", token="t", timeout_s=1.0)
    client = HomeAssistant(config)
    await client.start()
    try:
        actions = HomeActions(client, config, LocaleConfig())
        action = plan(
            Entity("light.kitchen_light", "Kitchen Light"), "turn_on", None, config, LocaleConfig()
        )
        started = time.monotonic()
        assert await actions.perform([action]) == SLOW
        assert time.monotonic() - started < 5
    finally:
        await client.close()
        await runner.cleanup()


@pytest.mark.parametrize(
    ("entity_id", "verb", "temperature_c", "risky"),
    [
        ("lock.front_door", "unlock", None, True),
        ("lock.front_door", "lock", None, False),
        ("cover.garage_door", "open", None, True),
        ("cover.garage_door", "close", None, False),
        ("cover.gate", "open", None, True),
        ("climate.heating", "turn_off", None, True),
        ("climate.heating", "turn_on", None, False),
        ("climate.heating", "set_temperature", 22.0, False),
        ("climate.heating", "set_temperature", 16.0, False),
        ("climate.heating", "set_temperature", 26.0, False),
        ("climate.heating", "set_temperature", 26.5, True),
        ("climate.heating", "set_temperature", 15.5, True),
        ("light.kitchen_light", "turn_off", None, False),
    ],
)
def test_which_actions_need_a_yes(entity_id, verb, temperature_c, risky):
    from nabu_pipeline.home_actions import plan
    from nabu_pipeline.home_assistant import Entity

    name = entity_id.split(".")[1].replace("_", " ").title()
    action = plan(
        Entity(entity_id, name), verb, None, HomeAssistantConfig(), LocaleConfig(), temperature_c
    )
    assert action.risky is risky


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Is the kitchen light on?", True),
        ("What's the temperature?", True),
        ("Are the doors locked?", True),
        ("Could you turn the light on?", False),
        ("Turn off everything downstairs.", False),
        ("I'm cold.", False),
    ],
)
def test_questions_are_told_from_requests(text, question):
    from nabu_pipeline.home_tools import is_question

    assert is_question(text) is question


async def test_disarming_the_alarm_needs_a_yes_from_the_llm_path_too(ha):
    from nabu_pipeline.home_tools import _act

    async with Home(ha) as home:
        assert ha.state("alarm_control_panel.house_alarm")["state"] == "armed_away"
        said = await _act(home.actions, {"names": ["House Alarm"], "action": "disarm"})
        assert said == "Shall I disarm the house alarm?"
        assert ha.state("alarm_control_panel.house_alarm")["state"] == "armed_away"
        assert await home.say("Yes please.") == "The house alarm is disarmed."
        assert ha.state("alarm_control_panel.house_alarm")["state"] == "disarmed"


async def test_new_names_and_aliases_are_picked_up_without_a_restart(ha):
    async with Home(ha) as home:
        # Unknown: at most a question ("the bedroom light or the kitchen light?"), no action.
        assert await home.say("Turn on the cooker light.") != "The kitchen light is on."
        assert ha.state("light.kitchen_light")["state"] == "off"
        await asyncio.to_thread(
            ha.ws,
            {
                "type": "config/entity_registry/update",
                "entity_id": "light.kitchen_light",
                "aliases": ["Kitchen Lamp", "Cooker Light"],
            },
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entity = next(e for e in home.client.entities() if e.name == "Kitchen Light")
            if "Cooker Light" in entity.aliases:
                break
            await asyncio.sleep(0.1)
        assert await home.say("Turn on the cooker light.") == "The kitchen light is on."
        await asyncio.to_thread(
            ha.ws,
            {
                "type": "config/entity_registry/update",
                "entity_id": "light.kitchen_light",
                "aliases": ["Kitchen Lamp"],
            },
        )


async def test_a_request_that_may_go_on_waits_for_the_end_of_his_pause():
    from processors.utterance_state import UtteranceState

    utterance = UtteranceState(pause_expired=False)
    actions = HomeActions(None, HomeAssistantConfig(), LocaleConfig())
    stage = HomeCommands(actions, PHRASES, utterance=utterance, pause_hold_s=0.2)
    utterance.transcribed("Turn on the kitchen")
    # He went on: Whisper's transcript of the whole sentence came after the half.
    waiting = asyncio.create_task(stage._pause_over())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    utterance.transcribed("Turn on the kitchen light.")
    assert await asyncio.wait_for(waiting, 10) is False
    # The pause reached its hold (the release gate marks it).
    waiting = asyncio.create_task(stage._pause_over())
    await asyncio.sleep(0.1)
    utterance.pause_expired = True
    assert await asyncio.wait_for(waiting, 10) is True
    # A pause the gate did not mark (it holds nothing while Nabu speaks) is over once he has
    # been silent past the hold, with nothing left with Whisper; not while he speaks.
    utterance.pause_expired, utterance.speaking = False, True
    waiting = asyncio.create_task(stage._pause_over())
    await asyncio.sleep(2.0)
    assert not waiting.done()
    utterance.speaking = False
    assert await asyncio.wait_for(waiting, 10) is True
