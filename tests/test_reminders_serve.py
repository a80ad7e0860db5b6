"""Reminders on a connected phone: `nabu serve`, a real Pipecat-protocol client, spoken words.

Warren sets two short timers by voice (read back, "yes"). The first fires on his
phone (an RTVI server message and Nabu's voice) and he answers "Okay."; the second
he ignores: it is said again, then his daughter's webhook gets the alert and he is
told so. No request reaches the LLM in the whole conversation.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.phone_client import PhoneClient, load_pcm
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

from .alert_receiver import AlertReceiver
from .helpers import marys_safety
from .server_harness import in_process

pytestmark = pytest.mark.slow
# He answers after a moment, as people do; an answer straight after Nabu stops can be
# heard as the end of his previous sentence (Nabu re-transcribes across his pauses).
PAUSE_S = 2.0


def _reminder_messages(phone: PhoneClient, kind: str) -> list[dict]:
    return [e.data for e in phone.of("server-message") if e.data.get("type") == kind]


async def test_timer_fires_on_the_phone_is_acknowledged_by_voice_and_an_ignored_one_escalates(
    synth, config_for
):
    say = {
        name: load_pcm(synth(text, f"serve_{name}", lead_s=0.3, tail_s=0.3))
        for name, text in {
            "timer": "Set a timer for ten seconds.",
            "timer2": "Set a timer for five seconds.",
            "yes": "Yes.",
            "okay": "Okay.",
        }.items()
    }
    async with AlertReceiver() as receiver:
        with ScriptedLLMServer(Script(ttft_s=0.05)) as llm:
            config = config_for(
                llm.url,
                safety=marys_safety(
                    alert_webhooks=[receiver.url],
                    reminder_repeat_after_s=15,
                    reminder_escalate_min=0.5,  # 30 s
                ),
            )
            with in_process(config) as srv:
                async with PhoneClient(srv.ws()) as phone:
                    await phone.turn(say["timer"])
                    await asyncio.sleep(PAUSE_S)
                    await phone.turn(say["yes"])
                    fired = await phone.wait_until(
                        lambda: _reminder_messages(phone, "nabu-reminder"), 40, "reminder"
                    )
                    await phone.wait_for(
                        "bot-stopped-speaking",
                        within_s=30,
                        count=len(phone.of("bot-stopped-speaking")) + 1,
                    )
                    await asyncio.sleep(1.0)
                    await phone.turn(say["okay"])
                    acknowledged = dict(srv.server.reminders.waiting)
                    first_part = phone.bot_text()

                    await asyncio.sleep(PAUSE_S)
                    await phone.turn(say["timer2"])
                    await asyncio.sleep(PAUSE_S)
                    await phone.turn(say["yes"])
                    escalated = await phone.wait_until(
                        lambda: _reminder_messages(phone, "nabu-reminder-escalated"),
                        90,
                        "escalation",
                    )
                    await phone.wait_until(lambda: receiver.acknowledged, 30, "family alert")
                    await phone.wait_for(
                        "bot-stopped-speaking",
                        within_s=30,
                        count=len(phone.of("bot-stopped-speaking")) + 1,
                    )
                    transcripts = phone.transcripts()
                    whole = phone.bot_text()
    print(f"\nWarren said: {transcripts}")
    print(f"Nabu said: {whole}")
    print(f"RTVI: {[e.data for e in phone.of('server-message')]}")
    print(f"Family alert: {receiver.acknowledged[0].body}")
    assert llm.requests == [], llm.user_texts()
    assert fired[0]["text"] == "Warren, your 10 second timer is done."
    assert "Warren, your 10 second timer is done." in first_part
    assert acknowledged == {}  # "Okay." acknowledged it
    assert "Good. Thank you." in whole
    second = [m for m in _reminder_messages(phone, "nabu-reminder") if m["id"] == 2]
    assert [m["repeat"] for m in second] == [False, True]  # said twice, then escalated
    assert "I've let Mary know." in escalated[0]["text"]
    body = receiver.acknowledged[0].body
    assert body["kind"] == "reminder-missed"
    assert body["message"].startswith("Warren has not answered his 5 second timer")
