"""Setting, listing, cancelling and acknowledging reminders by voice, without the LLM.

"Remind me to take my pills at nine every morning" is read back with its time
and repetition ("... at 9 in the morning, every day. Shall I save it?") and
saved only on "yes": a misheard time is worse than none. "What reminders do I
have?" and "cancel the pill reminder" answer from the store; "okay" or "done"
acknowledges the reminder Nabu just said. The store and the scheduler are the
process's `ReminderService`; this stage only talks.
"""

from __future__ import annotations

import re
from datetime import datetime

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from nabu_pipeline.reminders import Reminder, ReminderService
from processors.consumed_transcript import consumed
from processors.firm_speech import firm_speech
from processors.phrases import Command, PhraseMatcher
from processors.reminder_time import (
    ReminderPlan,
    ReminderTimeError,
    plan_reminder,
    plan_timer,
    spoken_duration,
    spoken_when,
)
from processors.text_normalise import normalise

_HANDLED = (
    Command.REMIND,
    Command.TIMER,
    Command.LIST_REMINDERS,
    Command.CANCEL_REMINDER,
)


def read_back(plan: ReminderPlan, now: datetime, clock: str) -> str:
    when = spoken_when(plan.first_due, now, plan.rule, clock)
    if plan.kind == "timer":
        return f"A timer for {spoken_duration(plan.duration_s)}. Shall I start it?"
    return f"I'll remind you to {plan.task} {when}. Shall I save it?"


def _stem(word: str) -> str:
    return re.sub(r"(s|es)$", "", word)


def matching(reminders: list[Reminder], which: str) -> list[Reminder]:
    """The reminders `which` names ("pill" -> "take your pills"; "timer"; "" -> all)."""
    words = {_stem(w) for w in normalise(which).split()} - {"the", "my", "a", "to", "for"}
    if not words or words <= {"all", "every"}:
        return reminders
    if words & {"timer"}:
        return [r for r in reminders if r.kind == "timer"]
    found = []
    for r in reminders:
        task = {_stem(w) for w in normalise(r.task).split()}
        if words & task:
            found.append(r)
    return found


class ReminderCommands(FrameProcessor):
    """The spoken side of reminders and timers."""

    def __init__(self, matcher: PhraseMatcher, reminders: ReminderService, **kwargs):
        super().__init__(**kwargs)
        self._matcher = matcher
        self._reminders = reminders
        self._pending: ReminderPlan | None = None

    @property
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._reminders.clock(), self._reminders.locale.tzinfo)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            answer = await self._answer(frame.text)
            if answer is not None:
                await self.push_frame(consumed(frame), direction)
                await self.push_frame(firm_speech(answer))
                return
        await self.push_frame(frame, direction)

    async def _answer(self, text: str) -> str | None:
        """What Nabu says to `text`, or None when it is not about reminders."""
        clock = self._reminders.locale.clock
        if self._pending is not None:
            plan, self._pending = self._pending, None
            yes_no = self._matcher.match(text, only=(Command.YES, Command.NO))
            if yes_no is not None and yes_no.command == Command.YES:
                plan = plan.confirmed_at(self._now)
                saved = await self._reminders.add(plan)
                when = spoken_when(plan.first_due, self._now, plan.rule, clock)
                if saved.kind == "timer":
                    return f"Timer started. It ends {when}."
                return f"Saved. I'll remind you to {plan.task} {when}."
            if yes_no is not None:
                return "All right, I will not save it."
        if self._reminders.waiting:
            done = self._matcher.match(text, only=(Command.DONE, Command.YES))
            if done is not None and self._reminders.acknowledge() is not None:
                return "Good. Thank you."
        match = self._matcher.match(text, only=_HANDLED)
        if match is None:
            return None
        request = match.slots.get("request", "")
        if re.match(r"(what|who|where|when|how|why|which|if|whether)\b", request.lower()):
            return None  # "remind me what the doctor said": a question for the LLM
        logger.info(f"{self}: {match.command} [{text}]")
        try:
            if match.command == Command.REMIND:
                plan = plan_reminder(request, self._now)
            elif match.command == Command.TIMER:
                plan = plan_timer(match.slots.get("duration", ""), self._now)
            elif match.command == Command.LIST_REMINDERS:
                return await self._list()
            else:
                return await self._cancel(match.slots.get("which", ""), text)
        except ReminderTimeError as e:
            return str(e)
        self._pending = plan
        return read_back(plan, self._now, clock)

    async def _list(self) -> str:
        active = await self._reminders.active()
        if not active:
            return "You have no reminders."
        said = [self._reminders.describe(r) for r in active[:5]]
        more = f" And {len(active) - 5} more." if len(active) > 5 else ""
        if len(said) == 1:
            return f"You have one reminder: {said[0]}.{more}"
        return f"You have {len(active)} reminders: " + "; ".join(said) + "." + more

    async def _cancel(self, which: str, text: str) -> str:
        active = await self._reminders.active()
        everything = "all" in normalise(text).split()
        if not which and "timer" in text.lower():
            which = "timer"
        found = active if everything else matching(active, which)
        if not found:
            return "I couldn't find that reminder. Ask me what reminders you have."
        if len(found) > 1 and not which and not everything:
            said = "; ".join(self._reminders.describe(r) for r in found[:3])
            return f"You have {len(found)}: {said}. Which one should I cancel?"
        await self._reminders.cancel([r.id for r in found])
        if len(found) == 1:
            (r,) = found
            return f"Cancelled {'your reminder ' if r.kind == 'reminder' else ''}" + (
                f"{self._reminders.describe(r)}."
            )
        return f"Cancelled {len(found)} reminders."
