"""A reminder on the official Pipecat web client (headless Chromium) against `nabu serve`.

The reminders are written to the data directory by another process (this test), as
they would survive a restart: one is already due when the server starts with no
phone connected (the family's webhook is told, and the browser hears about it when
it connects); the next falls due while the browser is connected and is spoken there,
with its RTVI server message.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest

from nabu_pipeline.alerts import AlertService
from nabu_pipeline.config import LocaleConfig, SafetyConfig
from nabu_pipeline.reminders import ReminderService
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from processors.reminder_time import plan_reminder

from .alert_receiver import ThreadedAlertReceiver
from .conftest import CLIPS
from .server_harness import cli_process
from .test_web_client import CHROMIUM, browser_events, fake_microphone, headless_chromium

pytestmark = pytest.mark.slow


def _save(data_dir, request: str, in_s: float) -> None:
    async def save():
        zone = LocaleConfig().tzinfo
        service = ReminderService(data_dir, SafetyConfig(), LocaleConfig(), AlertService(
            SafetyConfig(), []))  # fmt: skip
        now = datetime.now(zone)
        plan = plan_reminder(request, now)
        await service.add(plan.__class__(task=plan.task, first_due=now + timedelta(seconds=in_s)))
        await service.close()

    asyncio.run(save())


def _server_messages(events: list[dict], kind: str) -> list[dict]:
    return [
        e
        for e in events
        if e["type"] == "server-message" and (e.get("data") or {}).get("type") == kind
    ]


def test_reminders_on_the_pipecat_web_client(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    data = tmp_path / "data"
    _save(data, "check the oven at nine", in_s=1.0)  # due before anything connects
    mic = tmp_path / "mic.wav"
    fake_microphone(CLIPS / "goforward.wav", mic, lead_s=60.0, tail_s=30.0)  # he stays quiet
    with ThreadedAlertReceiver() as receiver, ScriptedLLMServer(Script()) as llm:
        env = {
            "NABU_LLM_BASE_URL": llm.url,
            "NABU_DATA_DIR": str(data),
            "NABU_ALERT_WEBHOOK_URL": receiver.url,
        }
        with cli_process(env, tmp_path / "serve.log") as srv:
            deadline = time.monotonic() + 30
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.2)
            mic_page = f"{srv.http}/desk?autostart=1"
            with headless_chromium(mic_page, mic, tmp_path / "profile") as (proc, lines):
                events = browser_events(
                    proc, lines, lambda evs: bool(_server_messages(evs, "nabu-notice")), 90
                )
                _save(data, "take my pills at nine", in_s=2.0)  # falls due while connected
                events += browser_events(
                    proc,
                    lines,
                    lambda evs: (
                        _server_messages(evs, "nabu-reminder")
                        and any(
                            e["type"] == "bot-output"
                            and e["spoken"]
                            and "take your pills" in e["text"]
                            for e in evs
                        )
                    ),
                    90,
                )
        log = srv.log()
    missed = receiver.received[0].body
    notice = _server_messages(events, "nabu-notice")[0]["data"]["text"]
    reminder = _server_messages(events, "nabu-reminder")[0]["data"]
    spoken = " ".join(e["text"] for e in events if e["type"] == "bot-output" and e["spoken"])
    print(
        f"\nfamily webhook: {missed['message']!r}\nbrowser notice: {notice!r}\n"
        f"browser reminder: {reminder}\nspoken in the browser: {spoken!r}"
    )
    assert missed["kind"] == "reminder-missed"
    assert "missed his reminder to check the oven" in missed["message"]
    assert notice.startswith("While you were away, your reminder to check the oven was due at")
    assert reminder["text"] == "Warren, it's time to take your pills."
    assert "it's time to take your pills" in spoken
    assert "Traceback" not in log
