"""A call for help on `nabu serve` is delivered even when the phone vanishes straight after.

The receiver refuses the first two deliveries, so the alert is still being retried
when the phone's connection drops (no closing handshake, as out of coverage); the
server's process-wide alert service, not the session, owns the delivery.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.phone_client import PhoneClient, load_pcm
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

from .alert_receiver import ThreadedAlertReceiver
from .helpers import marys_safety
from .server_harness import in_process

pytestmark = pytest.mark.slow


async def test_help_is_delivered_after_the_phone_vanishes(synth, config_for):
    help_me = load_pcm(synth("Help me!", "serve_help", lead_s=0.3, tail_s=0.3))
    with ThreadedAlertReceiver(fail_first=2) as receiver:
        with ScriptedLLMServer(Script(ttft_s=0.05)) as llm:
            config = config_for(
                llm.url,
                safety=marys_safety(
                    alert_webhooks=[receiver.url],
                    retry_base_delay_s=2.0,
                ),
            )
            with in_process(config) as srv:
                async with PhoneClient(srv.ws()) as phone:
                    phone.say(help_me)
                    await phone.wait_until(lambda: receiver.received, 60, "first delivery")
                    await phone.vanish()
                    vanished_at = asyncio.get_running_loop().time()
                    await phone.wait_until(
                        lambda: srv.health()["sessions"] == 0 or receiver.acknowledged,
                        30,
                        "session end",
                    )
                    sessions_gone = srv.health()["sessions"] == 0
                    await phone.wait_until(lambda: receiver.acknowledged, 60, "acknowledged")
                    sessions_after = srv.health()["sessions"]
                    waited = asyncio.get_running_loop().time() - vanished_at
    print(
        f"\nphone vanished after the first attempt; deliveries "
        f"{[r.status for r in receiver.received]}; acknowledged {waited:.1f}s later; "
        f"sessions then: {sessions_after}"
    )
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert receiver.acknowledged[0].body["said"].lower().startswith("help me")
    assert sessions_gone and sessions_after == 0  # gone before the alert got through
    assert llm.requests == []
