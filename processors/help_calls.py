"""Calls for help: "help", "I've fallen", "I can't get up" reach Warren's family at once.

This stage sits right after STT, before the transcript guard's doubt check and
long before the LLM: a help phrase (a fixed template in the one phrase matcher)
interrupts whatever Nabu is saying, answers at once ("I'm letting Mary, your
daughter, know right now. Stay where you are.") and hands the alert to the
process-wide alert service, which delivers it even if this session ends.

A half-heard transcript with a word of help in it is not guessed at and not
ignored: Nabu asks "Do you need help?"; "yes", or no answer within
`safety.confirm_timeout_s`, alerts; "no" stands down. If no channel has
acknowledged within `safety.delivery_deadline_s`, Nabu tells Warren so plainly.
Nabu never claims to have called emergency services: it cannot.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from hassil.parse_expression import parse_sentence
from hassil.sample import sample_expression
from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from rapidfuzz import fuzz

from nabu_pipeline.alerts import Alert, AlertService
from nabu_pipeline.config import GuardConfig, LocaleConfig, SafetyConfig
from processors.consumed_transcript import consumed
from processors.firm_speech import firm_speech
from processors.phrases import Command, PhraseMatcher
from processors.text_normalise import normalise
from processors.transcript_guard import judge, strip_phantom_sentences

DO_YOU_NEED_HELP = "Do you need help?"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# A transcript this close (rapidfuzz's ratio, 0-100) to a help sentence, or this short with a
# help word in it, is asked about rather than passed on: on a slowed, noisy "I can't get up"
# Whisper heard "I can't get out", and "I fell" became "I fall in".
NEAR_HELP_RATIO = 80
SHORT_WORDS = 4
STAND_DOWN = "All right. I'm here if you need me."


def help_templates(safety: SafetyConfig) -> tuple[str, ...]:
    """The help phrases of this config, with "call <her name>" and "call my <relation>"."""
    extra = []
    name = safety.contact_name.strip().lower()
    if name and name != "your family" and re.fullmatch(r"[\w' -]+", name):
        extra += [f"call {name}", f"(get|tell) {name}"]
    relation = safety.contact_relation.strip().lower()
    if relation and re.fullmatch(r"[\w' -]+", relation):
        extra += [f"call my {relation}", f"(get|tell) my {relation}"]
    return (*safety.help_phrases, *extra)


def mentions_help(text: str, safety: SafetyConfig) -> bool:
    """A word of help in `text` ("help", "fallen", "emergency", "get up")."""
    padded = f" {normalise(text)} "
    return any(f" {normalise(w)} " in padded for w in safety.help_words)


def help_sentences(templates: tuple[str, ...]) -> frozenset[str]:
    """Every sentence the help templates can say, normalised (for near-miss comparison)."""
    sentences = set()
    for template in templates:
        expression = parse_sentence(template).expression
        for sample in sample_expression(expression):
            words = normalise(sample).split()
            if words:
                sentences.add(" ".join(words))
    return frozenset(sentences)


def sounds_like_help(text: str, sentences: frozenset[str], safety: SafetyConfig) -> bool:
    """Nearly a help phrase ("I can't get out"), or a short sentence with a help word in it."""
    words = normalise(text).split()
    if not words or len(words) > 8:
        return False
    if len(words) <= SHORT_WORDS and mentions_help(text, safety):
        return True
    said = " ".join(words)
    return any(fuzz.ratio(said, s, score_cutoff=NEAR_HELP_RATIO) for s in sentences)


class HelpCallHandler(FrameProcessor):
    """Recognises calls for help before anything else and raises the alert."""

    def __init__(
        self,
        matcher: PhraseMatcher,
        alerts: AlertService,
        safety: SafetyConfig,
        guard: GuardConfig,
        locale: LocaleConfig,
        *,
        session_id: str = "",
        vocabulary: tuple[str, ...] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._matcher = matcher
        self._alerts = alerts
        self._safety = safety
        self._guard = guard
        self._locale = locale
        self._session_id = session_id
        self._vocabulary = vocabulary
        self._asked: str | None = None
        """The doubtful words that made Nabu ask "Do you need help?", while it waits."""
        self._answer_timer: asyncio.Task | None = None
        self._watchers: set[asyncio.Task] = set()
        self._sentences = help_sentences(help_templates(safety))

    async def cleanup(self):
        await super().cleanup()
        for task in [self._answer_timer, *self._watchers]:
            if task is not None:
                await self.cancel_task(task)

    # --- what Warren hears ----------------------------------------------------------------------

    @property
    def answer(self) -> str:
        if not self._alerts.configured:
            return (
                "I can't reach anyone for you: no one has been set up for me to alert. "
                "If you can, use your phone to call someone."
            )
        who = self._safety.contact
        who += "," if "," in who else ""  # "Mary, your daughter, know"
        return f"I'm letting {who} know right now. Stay where you are."

    @property
    def unanswered(self) -> str:
        if not self._alerts.configured:
            return "I didn't hear you, and I have no way to reach anyone. If you can, call someone."
        return f"I didn't hear you, so I'm letting {self._safety.contact_short} know."

    @property
    def not_delivered(self) -> str:
        return (
            f"I haven't been able to reach {self._safety.contact_short} yet. I'm still trying. "
            "If you can, call someone on your phone."
        )

    # --- frames ---------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            if await self._handle(frame, direction):
                return
        await self.push_frame(frame, direction)

    async def _handle(self, frame: TranscriptionFrame, direction: FrameDirection) -> bool:
        text = frame.text
        if self._asked is not None:
            asked = self._asked
            match = self._matcher.match(text, only=(Command.YES, Command.NO, Command.HELP))
            if match is not None and match.command == Command.NO:
                self._stop_waiting()
                logger.info(f"{self}: 'Do you need help?' answered no: standing down")
                await self.push_frame(consumed(frame), direction)
                await self.push_frame(firm_speech(STAND_DOWN))
                return True
            if match is not None:
                self._stop_waiting()
                await self._call_for_help(frame, direction, f"{asked} / {text}", self.answer)
                return True
            if mentions_help(text, self._safety):
                self._stop_waiting()
                await self._call_for_help(frame, direction, f"{asked} / {text}", self.answer)
                return True
            # Something else entirely: he is talking, so he can answer; the question lapses.
            self._stop_waiting()
        if self.is_call_for_help(text):
            await self._call_for_help(frame, direction, text, self.answer)
            return True
        cleaned = strip_phantom_sentences(text, self._guard)
        verdict = judge(cleaned, frame.result, self._guard, self._vocabulary, self._matcher)
        doubtful = verdict.action == "doubtful" and mentions_help(cleaned, self._safety)
        near = verdict.action != "drop" and sounds_like_help(cleaned, self._sentences, self._safety)
        if not (doubtful or near):
            return False
        why = verdict.reason if doubtful else "close to a call for help"
        logger.info(f"{self}: [{text}] ({why}): asking if he needs help")
        await self.broadcast_interruption()
        await self.push_frame(consumed(frame), direction)
        await self.push_frame(firm_speech(DO_YOU_NEED_HELP))
        self._asked = text.strip()
        self._answer_timer = self.create_task(self._await_answer(), "help-answer")
        return True

    def is_call_for_help(self, text: str) -> bool:
        """A help phrase as the whole utterance, or as one of its sentences.

        Nabu re-transcribes an utterance across his pauses, so "Help me!" said soon after
        another sentence can arrive as "Go forward ten metres. Help me."
        """
        if self._matcher.match(text, only=(Command.HELP,)) is not None:
            return True
        sentences = [s for s in _SENTENCE.split(text.strip()) if s]
        return len(sentences) > 1 and any(
            self._matcher.match(s, only=(Command.HELP,)) is not None for s in sentences
        )

    def _stop_waiting(self) -> None:
        self._asked = None
        timer, self._answer_timer = self._answer_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _await_answer(self) -> None:
        await asyncio.sleep(self._safety.confirm_timeout_s)
        asked, self._asked = self._asked, None
        self._answer_timer = None
        if asked is None:
            return
        logger.warning(f"{self}: no answer to 'Do you need help?' after [{asked}]: alerting")
        alert = self._raise(asked, kind="help-unanswered")
        await self.push_frame(firm_speech(self.unanswered))
        self._watch(alert)

    async def _call_for_help(
        self, frame: TranscriptionFrame, direction: FrameDirection, said: str, spoken: str
    ) -> None:
        # The alert goes out first: nothing below may delay it.
        alert = self._raise(said.strip(), kind="help")
        logger.warning(f"{self}: call for help [{said}]: alert {alert.id} raised")
        await self.broadcast_interruption()
        await self.push_frame(consumed(frame), direction)
        await self.push_frame(firm_speech(spoken))
        self._watch(alert)

    def _raise(self, said: str, *, kind: str) -> Alert:
        now = datetime.now(self._locale.tzinfo).strftime("%H:%M")
        who = self._locale.user_name
        words = said.strip().rstrip(".!?,; ")
        if kind == "help":
            message = f'{who} called for help at {now}. He said: "{words}".'
        else:
            message = (
                f'{who} may need help: at {now} he said "{words}", and did not answer when '
                "Nabu asked if he needed help."
            )
        return self._alerts.raise_alert(kind, message, said=said, session=self._session_id)

    def _watch(self, alert: Alert) -> None:
        if not self._alerts.configured:
            return
        task = self.create_task(self._tell_if_undelivered(alert), f"help-watch-{alert.id}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _tell_if_undelivered(self, alert: Alert) -> None:
        try:
            await asyncio.wait_for(alert.delivered.wait(), self._safety.delivery_deadline_s)
            return
        except TimeoutError:
            pass
        logger.error(
            f"{self}: alert {alert.id} not acknowledged by any channel after "
            f"{self._safety.delivery_deadline_s:.0f}s ({alert.channels}); telling Warren"
        )
        await self.push_frame(firm_speech(self.not_delivered))
        await alert.delivered.wait()
        reached = f"I've reached {self._safety.contact_short} now. Stay where you are."
        await self.push_frame(firm_speech(reached))
