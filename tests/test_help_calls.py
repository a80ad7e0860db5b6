"""Calls for help reach the family at once, whatever else is going on.

Real HTTP: every alert goes to an aiohttp receiver started by the test. The
pipeline tests speak each help phrase (Piper, clean and a slowed, noisy copy)
through the whole pipeline and check the alert arrived with no LLM request
before it.
"""

from __future__ import annotations

import asyncio

import pytest
from pipecat.frames.frames import InterruptionFrame, TranscriptionFrame, TTSSpeakFrame
from pipecat.tests.utils import SleepFrame, run_test

from nabu_pipeline.alerts import AlertService, HomeAssistantNotifyChannel, WebhookChannel
from nabu_pipeline.config import GuardConfig, LocaleConfig, NabuConfig, SafetyConfig
from nabu_pipeline.pipeline import build_matcher
from nabu_pipeline.scripted_llm import refused_url
from processors.help_calls import DO_YOU_NEED_HELP, STAND_DOWN, HelpCallHandler
from processors.phrases import Command
from processors.whisper_stt import TranscriptEvidence

from .alert_receiver import AlertReceiver

SAFETY = SafetyConfig(
    contact_name="Mary",
    contact_relation="daughter",
    retry_base_delay_s=0.05,
    retry_max_delay_s=0.2,
)
MATCHER = build_matcher(NabuConfig(safety=SAFETY))

HELP_SAID = [
    "Help!",
    "Help me.",
    "Help me, please.",
    "I've fallen.",
    "I have fallen and I can't get up.",
    "I fell.",
    "I fell down.",
    "I can't get up.",
    "Emergency!",
    "It's an emergency.",
    "Call my daughter.",
    "Call Mary.",
    "Help, I've fallen.",
    "I Fallen.",  # Whisper drops the 've of a slurred "I've fallen"
    "Um, help me. Help me!",
    "Nabu, help!",
]
NOT_HELP = [
    "Help me with the TV.",
    "Can you help me find my glasses?",
    "My daughter called.",
    "I fell asleep in my chair.",
    "The emergency room is on Elm Street.",
    "Call me later.",
]


@pytest.mark.parametrize("text", HELP_SAID)
def test_each_call_for_help_is_recognised_and_trusted(text):
    match = MATCHER.match(text)
    assert match is not None and match.command == Command.HELP, (text, match)
    assert match.trusted  # so it passes the guard's doubt check


@pytest.mark.parametrize("text", NOT_HELP)
def test_sentences_that_merely_mention_help_are_not_calls_for_help(text):
    match = MATCHER.match(text)
    assert match is None or match.command != Command.HELP, (text, match)


def test_contact_is_named_from_config():
    assert SAFETY.contact == "Mary, your daughter"
    assert SafetyConfig(contact_relation="son").contact == "your son"
    assert SafetyConfig().contact == "your family"


def _evidence(**kw):
    base = dict(
        no_speech_prob=0.05,
        avg_logprob=-0.3,
        compression_ratio=1.2,
        rms_dbfs=-25.0,
        language_prob=None,
        audio_s=1.5,
        stt_s=0.5,
    )
    base.update(kw)
    return TranscriptEvidence(**base)


def _handler(alerts: AlertService, safety: SafetyConfig = SAFETY) -> HelpCallHandler:
    return HelpCallHandler(MATCHER, alerts, safety, GuardConfig(), LocaleConfig())


async def test_webhook_that_fails_twice_then_acknowledges_gets_the_alert():
    async with AlertReceiver(fail_first=2) as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        alert = alerts.raise_alert("help", "Warren called for help.", said="Help!", session="s1")
        await asyncio.wait_for(alert.delivered.wait(), 20)
        await alerts.close()
    assert [r.status for r in receiver.received] == [500, 500, 200]
    body = receiver.acknowledged[0].body
    assert body["said"] == "Help!" and body["session"] == "s1" and body["kind"] == "help"
    assert body["at"] and body["message"] == "Warren called for help."
    assert alert.channels == {f"webhook 127.0.0.1:{receiver.port}": "delivered"}


async def test_home_assistant_notify_call_is_a_plain_rest_post():
    """The shape Home Assistant's REST API takes (a real HA is tested where the fixture exists)."""
    async with AlertReceiver() as receiver:
        channel = HomeAssistantNotifyChannel(receiver.base_url, "tok-123", "notify.marys_phone")
        alerts = AlertService(SAFETY, [channel])
        alert = alerts.raise_alert("help", "Warren called for help.")
        await asyncio.wait_for(alert.delivered.wait(), 20)
        await alerts.close()
    (got,) = receiver.received
    assert got.path == "/api/services/notify/marys_phone"
    assert got.headers["Authorization"] == "Bearer tok-123"
    assert got.body == {"title": "Nabu: help", "message": "Warren called for help."}


async def test_help_interrupts_answers_at_once_and_alerts():
    async with AlertReceiver() as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        down, _ = await run_test(
            _handler(alerts),
            frames_to_send=[TranscriptionFrame("I can't get up.", "", ""), SleepFrame(1.0)],
            expected_down_frames=None,
        )
        await alerts.close()
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken == ["I'm letting Mary, your daughter, know right now. Stay where you are."]
    assert any(isinstance(f, InterruptionFrame) for f in down)
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == [" "]  # consumed
    assert receiver.acknowledged[0].body["said"] == "I can't get up."
    for text in spoken:
        assert "emergency services" not in text.lower() and "ambulance" not in text.lower()


async def test_doubtful_help_asks_and_no_stands_down():
    async with AlertReceiver() as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        down, _ = await run_test(
            _handler(alerts),
            frames_to_send=[
                TranscriptionFrame(
                    "I need help with the fall.", "", "", result=_evidence(avg_logprob=-0.9)
                ),
                SleepFrame(0.2),
                TranscriptionFrame("No.", "", ""),
                SleepFrame(0.5),
            ],
            expected_down_frames=None,
        )
        await alerts.close()
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken == [DO_YOU_NEED_HELP, STAND_DOWN]
    assert receiver.received == []


async def test_doubtful_help_then_yes_alerts():
    async with AlertReceiver() as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        down, _ = await run_test(
            _handler(alerts),
            frames_to_send=[
                TranscriptionFrame("I think I fell.", "", "", result=_evidence(avg_logprob=-0.9)),
                SleepFrame(0.2),
                TranscriptionFrame("Yes.", "", ""),
                SleepFrame(1.0),
            ],
            expected_down_frames=None,
        )
        await alerts.close()
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken[0] == DO_YOU_NEED_HELP and spoken[1].startswith("I'm letting Mary")
    assert receiver.acknowledged[0].body["said"] == "I think I fell. / Yes."


async def test_no_answer_to_do_you_need_help_alerts():
    safety = SAFETY.model_copy(update={"confirm_timeout_s": 0.5})
    async with AlertReceiver() as receiver:
        alerts = AlertService(safety, [WebhookChannel(receiver.url)])
        down, _ = await run_test(
            _handler(alerts, safety),
            frames_to_send=[
                TranscriptionFrame(
                    "I think I fell over there", "", "", result=_evidence(avg_logprob=-0.95)
                ),
                SleepFrame(1.5),
            ],
            expected_down_frames=None,
        )
        await alerts.close()
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken == [DO_YOU_NEED_HELP, "I didn't hear you, so I'm letting Mary know."]
    assert receiver.acknowledged[0].body["kind"] == "help-unanswered"


async def test_every_channel_down_warren_is_told_plainly():
    safety = SAFETY.model_copy(update={"delivery_deadline_s": 1.0, "request_timeout_s": 0.5})
    channels = [
        WebhookChannel(refused_url() + "/alert"),
        HomeAssistantNotifyChannel(refused_url(), "tok", "marys_phone"),
    ]
    alerts = AlertService(safety, channels)
    down, _ = await run_test(
        _handler(alerts, safety),
        frames_to_send=[TranscriptionFrame("Help!", "", ""), SleepFrame(2.0)],
        expected_down_frames=None,
    )
    (alert,) = alerts.sent
    attempts = dict(alert.attempts)
    await alerts.close()
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    print("every channel down:", spoken, attempts, alert.channels)
    assert spoken == [
        "I'm letting Mary, your daughter, know right now. Stay where you are.",
        "I haven't been able to reach Mary yet. I'm still trying. "
        "If you can, call someone on your phone.",
    ]
    assert all(n >= 2 for n in attempts.values()), attempts  # still retrying


async def test_no_channel_configured_nabu_does_not_pretend():
    alerts = AlertService(SAFETY, [])
    down, _ = await run_test(
        _handler(alerts),
        frames_to_send=[TranscriptionFrame("I've fallen.", "", "")],
        expected_down_frames=None,
    )
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken == [
        "I can't reach anyone for you: no one has been set up for me to alert. "
        "If you can, use your phone to call someone."
    ]


def test_webhook_url_from_environment(monkeypatch):
    monkeypatch.setenv("NABU_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    from nabu_pipeline.alerts import channels_for

    names = [c.name for c in channels_for(SafetyConfig(alert_webhooks=("http://a:1/x",)))]
    assert names == ["webhook a:1", "webhook 127.0.0.1:9"]


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("I can't get out.", True),  # Whisper's "I can't get up" on a slowed, noisy copy
        ("I fall in", True),  # ... and its "I fell"
        ("Oh my daughter.", True),  # ... and its "Call my daughter"
        ("What's the weather?", False),
        ("Help me with the TV.", False),
    ],
)
async def test_near_miss_of_a_help_phrase_is_asked_about(text, asks):
    alerts = AlertService(SAFETY, [])
    down, _ = await run_test(
        _handler(alerts),
        frames_to_send=[TranscriptionFrame(text, "", "")],
        expected_down_frames=None,
    )
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken == ([DO_YOU_NEED_HELP] if asks else []), text


async def test_help_as_the_last_sentence_of_a_longer_utterance_alerts():
    async with AlertReceiver() as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        down, _ = await run_test(
            _handler(alerts),
            frames_to_send=[
                TranscriptionFrame("Go forward 10 meters. Help me!", "", ""),
                SleepFrame(0.3),
                TranscriptionFrame("Don't help me with that.", "", ""),
                SleepFrame(1.0),
            ],
            expected_down_frames=None,
        )
        await alerts.close()
    assert [r.body["said"] for r in receiver.acknowledged] == ["Go forward 10 meters. Help me!"]
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert texts == [" ", "Don't help me with that."]
