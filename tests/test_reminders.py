"""Reminders: parsed from his words, kept in real SQLite, said on time, repeated, escalated."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pipecat.frames.frames import TranscriptionFrame, TTSSpeakFrame
from pipecat.tests.utils import SleepFrame, run_test

from nabu_pipeline.alerts import AlertService, WebhookChannel
from nabu_pipeline.config import LocaleConfig, NabuConfig, SafetyConfig
from nabu_pipeline.pipeline import build_matcher
from nabu_pipeline.reminders import ReminderService
from processors.reminder_commands import ReminderCommands
from processors.reminder_time import (
    ReminderTimeError,
    next_due,
    parse_duration,
    plan_reminder,
    plan_timer,
    spoken_when,
)

from .alert_receiver import AlertReceiver

CHICAGO = ZoneInfo("America/Chicago")
# Saturday 7 March 2026, 3:07 pm; daylight saving starts the next night (2 am, 8 March).
NOW = datetime(2026, 3, 7, 15, 7, tzinfo=CHICAGO)
LOCALE = LocaleConfig(time_zone="America/Chicago")
SAFETY = SafetyConfig(
    contact_name="Mary",
    contact_relation="daughter",
    reminder_repeat_after_s=60,
    reminder_escalate_min=5,
    retry_base_delay_s=0.05,
)
MATCHER = build_matcher(NabuConfig(safety=SAFETY))

PLANS = [
    # request, task, first due (local), rule, read back
    ("take my pills at nine every morning", "take your pills", "2026-03-08 09:00", "FREQ=DAILY",
     "at 9 in the morning, every day"),
    ("take my pills every morning at 9", "take your pills", "2026-03-08 09:00", "FREQ=DAILY",
     "at 9 in the morning, every day"),
    ("at 9 to take my pills", "take your pills", "2026-03-07 21:00", "", "today at 9 at night"),
    ("call Mary tomorrow at half past ten", "call Mary", "2026-03-08 10:30", "",
     "tomorrow at 10:30 in the morning"),
    ("take the chicken out in ten minutes", "take the chicken out", "2026-03-07 15:17", "",
     "today at 3:17 in the afternoon"),
    ("in 20 minutes to check the oven", "check the oven", "2026-03-07 15:27", "",
     "today at 3:27 in the afternoon"),
    ("take my pills at 9:30 a.m. every day", "take your pills", "2026-03-08 09:30", "FREQ=DAILY",
     "at 9:30 in the morning, every day"),
    ("every day at 8 pm to take my pills", "take your pills", "2026-03-07 20:00", "FREQ=DAILY",
     "at 8 in the evening, every day"),
    ("call the doctor on Monday at 10", "call the doctor", "2026-03-09 10:00", "",
     "on Monday at 10 in the morning"),
    ("water the plants every Sunday at 10 am", "water the plants", "2026-03-08 10:00",
     "FREQ=WEEKLY;BYDAY=SU", "every Sunday, at 10 in the morning"),
    ("put the kettle on at twenty past four", "put the kettle on", "2026-03-07 16:20", "",
     "today at 4:20 in the afternoon"),
    ("my appointment at noon tomorrow", "your appointment", "2026-03-08 12:00", "",
     "tomorrow at noon"),
    ("put the bins out tonight", "put the bins out", "2026-03-07 21:00", "", "today at 9 at night"),
]  # fmt: skip


@pytest.mark.parametrize(("request_", "task", "due", "rule", "spoken"), PLANS)
def test_reminder_requests_are_placed_in_his_time_zone(request_, task, due, rule, spoken):
    plan = plan_reminder(request_, NOW)
    assert plan.task == task
    assert plan.first_due.strftime("%Y-%m-%d %H:%M") == due
    assert plan.first_due.tzinfo == CHICAGO
    assert plan.rule == rule
    assert spoken_when(plan.first_due, NOW, plan.rule) == spoken


@pytest.mark.parametrize("request_", ["take my pills", "at nine", ""])
def test_a_request_without_a_time_or_a_task_is_asked_about_not_guessed(request_):
    with pytest.raises(ReminderTimeError):
        plan_reminder(request_, NOW)


@pytest.mark.parametrize(
    ("said", "seconds"),
    [("ten minutes", 600), ("an hour", 3600), ("half an hour", 1800), ("90 seconds", 90),
     ("1 hour and 30 minutes", 5400), ("an hour and a half", 5400), ("twenty five minutes", 1500),
     ("5 min", 300)],
)  # fmt: skip
def test_timer_durations(said, seconds):
    assert parse_duration(said) == seconds
    assert plan_timer(said, NOW).first_due == NOW + timedelta(seconds=seconds)


def test_nine_every_morning_stays_at_nine_across_daylight_saving_changes():
    plan = plan_reminder("take my pills at nine every morning", NOW)
    due, seen = plan.first_due, []
    for _ in range(3):
        seen.append(due)
        due = next_due(plan.rule, plan.dtstart_local, CHICAGO, due)
    assert [d.strftime("%d %H:%M") for d in seen] == ["08 09:00", "09 09:00", "10 09:00"]
    utc = [d.astimezone(ZoneInfo("UTC")).hour for d in seen]
    assert utc == [14, 14, 14]  # CDT (UTC-5) from the 8th
    # In the autumn: the 1 November 2026 change back to CST (UTC-6).
    autumn = plan_reminder("take my pills at nine every morning", datetime(2026, 10, 30, 12, 0,
                           tzinfo=CHICAGO))  # fmt: skip
    after = next_due(autumn.rule, autumn.dtstart_local, CHICAGO, autumn.first_due)
    assert autumn.first_due.astimezone(ZoneInfo("UTC")).hour == 14
    assert after.strftime("%d %H:%M") == "01 09:00"
    assert after.astimezone(ZoneInfo("UTC")).hour == 15


class Clock:
    """The scheduler's injectable clock: time moves only when the test says so."""

    def __init__(self, start: datetime):
        self.t = start.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Phone:
    """A listener that records what Nabu would say on his phone."""

    def __init__(self):
        self.said: list[tuple[str, dict]] = []

    async def say(self, text: str, data: dict) -> None:
        self.said.append((text, data))


async def test_reminders_are_kept_across_a_restart(tmp_path):
    alerts = AlertService(SAFETY, [])
    first = ReminderService(tmp_path, SAFETY, LOCALE, alerts, clock=Clock(NOW))
    await first.open()
    await first.add(plan_reminder("take my pills at nine every morning", NOW))
    await first.close()
    second = ReminderService(tmp_path, SAFETY, LOCALE, alerts, clock=Clock(NOW))
    await second.open()
    (kept,) = await second.active()
    await second.close()
    assert kept.task == "take your pills" and kept.rule == "FREQ=DAILY"
    assert datetime.fromtimestamp(kept.next_due, CHICAGO).strftime("%d %H:%M") == "08 09:00"


async def test_due_reminder_is_said_twice_then_escalates_when_not_acknowledged(tmp_path):
    clock = Clock(NOW)
    async with AlertReceiver() as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        service = ReminderService(tmp_path, SAFETY, LOCALE, alerts, clock=clock)
        await service.open()
        phone = Phone()
        service.attach(phone)
        await service.add(plan_reminder("take my pills at nine every morning", NOW))
        clock.t = datetime(2026, 3, 8, 9, 0, tzinfo=CHICAGO).timestamp()
        await service.tick()
        clock.advance(30)
        await service.tick()  # not yet said again
        clock.advance(31)
        await service.tick()  # a minute on: said again
        clock.advance(60)
        await service.tick()  # only twice
        clock.advance(5 * 60)
        await service.tick()  # five minutes after it was due: the family is told
        (alert,) = alerts.sent
        await alert.delivered.wait()
        (next_time,) = await service.active()
        await service.close()
        await alerts.close()
    texts = [t for t, _ in phone.said]
    assert texts == [
        "Warren, it's time to take your pills.",
        "Reminder: it's time to take your pills. Say okay when it's done.",
        "You haven't answered your reminder to take your pills. I've let Mary know.",
    ]
    assert phone.said[0][1]["type"] == "nabu-reminder"
    body = receiver.acknowledged[0].body
    assert body["kind"] == "reminder-missed"
    assert body["message"] == (
        "Warren has not answered his reminder to take his pills, due at 9 in the morning."
    )
    # Tomorrow's is still there, at nine.
    assert datetime.fromtimestamp(next_time.next_due, CHICAGO).strftime("%d %H:%M") == "09 09:00"


async def test_acknowledged_reminder_is_not_repeated_or_escalated(tmp_path):
    clock = Clock(NOW)
    alerts = AlertService(SAFETY, [])
    service = ReminderService(tmp_path, SAFETY, LOCALE, alerts, clock=clock)
    phone = Phone()
    service.attach(phone)
    await service.add(plan_timer("ten minutes", NOW))
    clock.advance(600)
    await service.tick()
    assert service.acknowledge() is not None
    clock.advance(3600)
    await service.tick()
    await service.close()
    assert [t for t, _ in phone.said] == ["Warren, your 10 minute timer is done."]
    assert alerts.sent == [] and await_nothing(service)


def await_nothing(service: ReminderService) -> bool:
    return not service.waiting


async def test_due_while_no_phone_is_connected_alerts_and_he_hears_it_on_connecting(tmp_path):
    clock = Clock(NOW)
    async with AlertReceiver() as receiver:
        alerts = AlertService(SAFETY, [WebhookChannel(receiver.url)])
        service = ReminderService(tmp_path, SAFETY, LOCALE, alerts, clock=clock)
        await service.add(plan_reminder("check the oven in 20 minutes", NOW))
        clock.advance(20 * 60)
        await service.tick()  # nobody connected
        await alerts.sent[0].delivered.wait()
        phone = Phone()
        await service.greet(phone)  # he connects
        again = Phone()
        await service.greet(again)  # told once only
        await service.close()
        await alerts.close()
    assert receiver.acknowledged[0].body["message"] == (
        "Warren missed his reminder to check the oven, due at 3:27 in the afternoon: "
        "his phone was not connected."
    )
    assert [t for t, _ in phone.said] == [
        "While you were away, your reminder to check the oven was due at 3:27 in the "
        "afternoon. I've let Mary know."
    ]
    assert again.said == []


async def test_the_reminder_conversation_without_the_llm(tmp_path):
    clock = Clock(NOW)
    service = ReminderService(tmp_path, SAFETY, LOCALE, AlertService(SAFETY, []), clock=clock)
    said = [
        "Remind me to take my pills at nine every morning.",
        "Yes.",
        "Set a timer for ten minutes.",
        "Yes.",
        "Remind me to call Mary at 3 pm.",
        "No.",
        "What reminders do I have?",
        "Cancel the pill reminder.",
        "What reminders do I have?",
        "Remind me to take my pills.",
    ]
    frames = []
    for text in said:
        frames += [TranscriptionFrame(text, "", ""), SleepFrame(0.2)]
    down, _ = await run_test(
        ReminderCommands(MATCHER, service), frames_to_send=frames, expected_down_frames=None
    )
    await service.close()
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    for question, answer in zip(said, spoken, strict=True):
        print(f"Warren: {question}\nNabu:   {answer}")
    assert spoken == [
        "I'll remind you to take your pills at 9 in the morning, every day. Shall I save it?",
        "Saved. I'll remind you to take your pills at 9 in the morning, every day.",
        "A timer for 10 minutes. Shall I start it?",
        "Timer started. It ends today at 3:17 in the afternoon.",
        "I'll remind you to call Mary tomorrow at 3 in the afternoon. Shall I save it?",
        "All right, I will not save it.",
        "You have 2 reminders: a 10 minute timer, ending today at 3:17 in the afternoon; "
        "to take your pills at 9 in the morning, every day.",
        "Cancelled your reminder to take your pills at 9 in the morning, every day.",
        "You have one reminder: a 10 minute timer, ending today at 3:17 in the afternoon.",
        "When should I remind you? Say it with the time, for example: remind me to take my "
        "pills at nine every morning.",
    ]
    assert all(f.text == " " for f in down if isinstance(f, TranscriptionFrame))


@pytest.mark.parametrize(
    "text",
    ["Tell me about the moon.", "Remind me what the doctor said.", "Set the table.",
     "What time is my timer?", "Cancel my trip to Ohio."],
)  # fmt: skip
async def test_other_sentences_are_not_reminder_commands(text, tmp_path):
    service = ReminderService(tmp_path, SAFETY, LOCALE, AlertService(SAFETY, []), clock=Clock(NOW))
    down, _ = await run_test(
        ReminderCommands(MATCHER, service),
        frames_to_send=[TranscriptionFrame(text, "", "")],
        expected_down_frames=None,
    )
    await service.close()
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == [text]
    assert not [f for f in down if isinstance(f, TTSSpeakFrame)]
