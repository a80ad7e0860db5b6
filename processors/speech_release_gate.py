"""Speech release gate: Nabu never starts talking into one of Warren's pauses.

Warren pauses mid-sentence for 0.5-1.2 s. Ending his turn that late would
add the whole STT + LLM + TTS time on top of the wait. Instead the turn ends
as soon as a segment's transcript is in, the answer is prepared at once
(speculatively), and this gate, just before the output transport, holds the
reply's frames until he has been silent for `hold_s` since he last spoke.

If he resumes within the hold, pipecat's barge-in (VAD user turn start)
interrupts the speculative reply; the held frames are dropped unheard and
his next words join the same question (see `processors/history_window.py`,
which merges consecutive user messages). The hold runs in parallel with
STT, LLM and TTS, so it costs only what exceeds their own latency.

The hold also lasts while speech he said is still with Whisper: on a busy CPU
a transcript can take longer than the hold, and releasing then spoke the answer
to his first words, then answered the whole sentence again (the paused suite
with one core busy cut 6 of 8 sentences so).

The gate holds only a reply that has not started: while Nabu is already
speaking, its own voice echoing back through the phone must not pause it.

A reply released early (a whole command, a finished question: `complete_utterance`)
leaves his utterance open until Nabu is actually heard or the whole hold has
passed, whichever comes first. If he goes on before the reply's first sound
("What time? (1 s) ...is my doctor's appointment"), the reply is interrupted
unheard, as within the hold, and his words join the same sentence: an early
release then costs nothing. Only a reply already playing when he goes on has
cut him off.

A turn that only may be complete (a whole question: `offer_early_release`) is judged
lazily: smart-turn on his audio runs only once the reply's first audio is here while the
whole hold still has time to run. On a 2-core CPU most replies the LLM writes arrive after
the hold anyway, and asking smart-turn then only added its own time to them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    UninterruptibleFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.utterance_state import UtteranceState

# Longest the release waits for Whisper to return speech it is still transcribing; past
# it the reply goes out anyway (a stuck STT must not silence Nabu).
UNTRANSCRIBED_WAIT_MAX_S = 8.0
UNTRANSCRIBED_POLL_S = 0.05


class SpeechReleaseGate(FrameProcessor):
    """Holds a new reply until Warren has been quiet for `hold_s`."""

    def __init__(self, hold_s: float, utterance: UtteranceState | None = None, **kwargs):
        super().__init__(**kwargs)
        self._hold_s = hold_s
        self._utterance = utterance
        self._holding = False
        self._user_speaking = False
        self._bot_speaking = False
        self._speech_end: float | None = None
        self._held: list[tuple[Frame, FrameDirection]] = []
        self._timer: asyncio.Task | None = None
        self._expiry: asyncio.Task | None = None
        """After an early release: ends his utterance when the whole hold has passed."""
        self._offer: tuple[float, Callable[[], Awaitable[bool]]] | None = None
        """A shorter hold for this stretch of speech, if a judge, asked once a reply is
        ready, agrees his turn is complete."""
        self._offer_armed = False
        """Only audio held after the stale reply (if any) was dropped is this turn's reply."""
        self._judging: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @property
    def hold_s(self) -> float:
        return self._hold_s

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._user_speaking = True
            await self._cancel_timer()
            self._cancel_expiry()  # he went on before Nabu was heard: the utterance is open
            self._withdraw_offer()  # what he says now is judged on its own transcript
            if not self._bot_speaking:
                self._holding = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._user_speaking = False
            self._speech_end = time.monotonic() - frame.stop_secs
            if self._holding:
                self._schedule_release()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            if self._expiry is not None:  # the early reply is heard: his utterance is over
                self._cancel_expiry()
                self._expire_utterance()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, InterruptionFrame):
            async with self._lock:
                dropped = [f for f, _ in self._held if not isinstance(f, UninterruptibleFrame)]
                self._held = [(f, d) for f, d in self._held if isinstance(f, UninterruptibleFrame)]
            if dropped:
                logger.debug(f"{self}: dropped {len(dropped)} held frame(s) unheard")
            self._offer_armed = True  # what is held from now on is the new reply
            if self._user_speaking:
                self._holding = True
        elif isinstance(frame, EndFrame):
            await self._release("end of session")
        elif isinstance(frame, CancelFrame):
            await self._cancel_timer()
            self._cancel_expiry()
            self._withdraw_offer()
            self._held.clear()

        if (
            direction == FrameDirection.DOWNSTREAM
            and self._holding
            and not isinstance(frame, (SystemFrame, StartFrame, EndFrame))
        ):
            async with self._lock:
                if self._holding:
                    self._held.append((frame, direction))
                    if isinstance(frame, OutputAudioRawFrame):
                        self._judge_offer()
                    return
        await self.push_frame(frame, direction)

    async def complete_utterance(self, hold_s: float) -> None:
        """What Warren said is already complete (a whole command, a yes to a question, a turn
        that sounds finished): hold its reply only `hold_s` after his speech instead of the
        full pause hold.

        Called from another stage's task, which an interruption may cancel at any await (the
        user aggregator interrupts as the very transcript that completes the turn reaches it).
        So nothing here awaits: cancelled between dropping the old timer and starting the new
        one, the gate would hold the reply with no timer left to release it (seen: no answer
        at all until Warren spoke again)."""
        if self._holding and not self._user_speaking and self._speech_end is not None:
            logger.debug(f"{self}: complete utterance; hold {hold_s:.2f}s")
            self._schedule_release(hold_s)

    def offer_early_release(self, hold_s: float, judge: Callable[[], Awaitable[bool]]) -> None:
        """What Warren said may be complete (a whole question): hold its reply only `hold_s`
        after his speech if `judge` says so. `judge` (smart-turn, ~35 ms of a core and more
        on a busy one) is awaited only when a reply's audio is held while the whole hold
        still runs, the one case its answer can shorten; it is never asked otherwise.

        Synchronous, like complete_utterance: the caller's task may be cancelled by the
        interruption its own transcript causes."""
        if not self._holding or self._user_speaking or self._speech_end is None:
            return
        self._withdraw_offer()
        self._offer = (hold_s, judge)
        # After earlier words of this utterance ("How long? (0.8 s) do I boil an egg?") a
        # reply made for them may be held or still on its way here; the interruption his new
        # words cause will drop it. Judged before that lands, the shorter hold released the
        # stale reply (seen on a busy CPU: "How long?" answered). So then only audio held
        # after that interruption is this question's reply.
        earlier = self._utterance is not None and len(self._utterance.transcripts) > 1
        self._offer_armed = not earlier
        logger.debug(
            f"{self}: offered a {hold_s:.2f}s hold"
            + (", judged after the earlier reply is dropped" if earlier else "")
        )

    def _judge_offer(self) -> None:
        """A reply is ready and held: ask the judge, if there is one and it can still help."""
        if (
            self._offer is None
            or not self._offer_armed
            or self._judging is not None
            or self._speech_end is None
        ):
            return
        if time.monotonic() >= self._speech_end + self._hold_s:
            return  # the whole hold is over (its timer is about to release the reply)
        hold_s, judge = self._offer
        self._judging = self.create_task(self._judged(hold_s, judge), name=f"{self}::judge")

    async def _judged(self, hold_s: float, judge: Callable[[], Awaitable[bool]]) -> None:
        try:
            complete = await judge()
        except Exception as e:  # the judge failing only costs the shorter hold
            logger.warning(f"{self}: turn judge failed ({type(e).__name__}: {e})")
            complete = False
        self._judging = None
        self._offer = None
        if complete:
            await self.complete_utterance(hold_s)

    def _withdraw_offer(self) -> None:
        """Synchronous (see complete_utterance)."""
        self._offer = None
        if self._judging is not None:
            judging, self._judging = self._judging, None
            if judging is not asyncio.current_task():
                judging.cancel()

    def _schedule_release(self, hold_s: float | None = None) -> None:
        """Replace the release timer; synchronous, so no caller's cancellation can split it."""
        if self._timer is not None:
            timer, self._timer = self._timer, None
            if timer is not asyncio.current_task():
                timer.cancel()
        assert self._speech_end is not None
        hold_s = self._hold_s if hold_s is None else min(hold_s, self._hold_s)
        delay = max(0.0, self._speech_end + hold_s - time.monotonic())
        self._timer = self.create_task(
            self._release_after(delay, early=hold_s < self._hold_s), name=f"{self}::release"
        )

    async def _release_after(self, delay: float, early: bool = False) -> None:
        await asyncio.sleep(delay)
        waited = 0.0
        while (
            self._utterance is not None
            and self._utterance.awaiting > 0
            and waited < UNTRANSCRIBED_WAIT_MAX_S
        ):
            await asyncio.sleep(UNTRANSCRIBED_POLL_S)
            waited += UNTRANSCRIBED_POLL_S
        if waited:
            logger.debug(f"{self}: waited {waited:.2f}s more for speech still with Whisper")
        self._timer = None
        if not self._user_speaking:
            if not early:
                self._expire_utterance()
            elif self._utterance is not None and self._speech_end is not None:
                self._cancel_expiry()
                left = max(0.0, self._speech_end + self._hold_s - time.monotonic())
                self._expiry = self.create_task(
                    self._expire_after(left), name=f"{self}::utterance_expiry"
                )
            await self._release(
                "a complete utterance" if early else f"{self._hold_s:.2f}s of silence"
            )

    def _expire_utterance(self) -> None:
        """His utterance is over: what he says next starts a new one."""
        if self._utterance is not None and not self._utterance.speaking:
            self._utterance.pause_expired = True

    async def _expire_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._expiry = None
        self._expire_utterance()

    def _cancel_expiry(self) -> None:
        """Synchronous (see complete_utterance): the task only sleeps, then sets a flag."""
        if self._expiry is not None:
            expiry, self._expiry = self._expiry, None
            if expiry is not asyncio.current_task():
                expiry.cancel()

    async def _release(self, why: str) -> None:
        async with self._lock:
            self._holding = False
            held, self._held = self._held, []
            for frame, direction in held:
                await self.push_frame(frame, direction)
        if held:
            logger.debug(f"{self}: released {len(held)} frame(s) after {why}")

    async def _cancel_timer(self) -> None:
        if self._timer is not None:
            timer, self._timer = self._timer, None
            if timer is not asyncio.current_task():
                await self.cancel_task(timer)

    async def cleanup(self):
        await self._cancel_timer()
        self._cancel_expiry()
        self._withdraw_offer()
        await super().cleanup()
