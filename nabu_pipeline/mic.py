"""`nabu mic`: talk to Nabu through this machine's microphone and speaker (desk testing).

The same pipeline as `nabu talk` and `nabu serve` (`build_session`), on
pipecat's local audio transport. A laptop's speaker is right next to its
microphone, so the echo canceller (on by default) hears what is played and
Nabu's own voice cannot interrupt it. Each finished turn is printed like
`nabu talk` prints it; the conversation is committed to the same store as
`nabu serve`'s as it happens, so Ctrl-C loses nothing, and `--session ID`
carries on an earlier one.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loguru import logger

from nabu_pipeline.config import ConfigError, NabuConfig
from transports.local_mic import SoundDevices, local_audio_transport, open_portaudio

if TYPE_CHECKING:
    from nabu_pipeline.latency import LatencyObserver, TurnRecord

# The pipeline's modules (pipecat, models) are imported only once the devices are known
# to work, so a machine without them gets its one sentence and nothing else.

# Nabu's own short answer counts as finished when nothing has happened for this long after.
REPLY_SETTLE_S = 2.0
PRINT_POLL_S = 0.2


def list_devices() -> str:
    """The microphones and speakers PortAudio can open, for `nabu mic --list-devices`."""
    pa = open_portaudio()
    try:
        return SoundDevices(pa).describe()
    finally:
        pa.terminate()


def new_session_id() -> str:
    return time.strftime("mic-%Y%m%d-%H%M%S")


@dataclass
class TurnPrinter:
    """Prints each turn (heard, said, latencies) once Nabu has finished answering it.

    An LLM answer is finished when the assistant aggregator, after the speaker,
    closes its turn (`answered`). Nabu's own short answers (a stop, "say that
    again", "did you say") close no such turn; they are printed once everything
    has been quiet for `REPLY_SETTLE_S` (polled by `run`), or when a later turn
    begins. Going by quiet alone printed answers early: Piper may pause more than
    a second between sentences on a busy machine.
    """

    latency: LatencyObserver
    printed: int = 0
    lines: list[str] = field(default_factory=list)
    answered: int = 0
    """Turns with an LLM answer whose assistant turn has closed."""

    def _finished(self, turn: TurnRecord, later: list[TurnRecord], now: float) -> bool:
        if any(t.transcript or t.reply for t in later):
            return True
        if turn.llm_request is not None:
            done = [t for t in self.latency.turns if t.llm_request is not None]
            return turn in done[: self.answered]
        state = self.latency.state
        busy = state.bot_speaking or state.llm_running or state.tts_running
        return (
            turn.bot_stopped is not None
            and not busy
            and now - state.last_activity >= REPLY_SETTLE_S
        )

    def assistant_turn_closed(self) -> None:
        self.answered += 1
        self.flush()

    def flush(self, *, everything: bool = False) -> None:
        from nabu_pipeline.talk import format_turn

        turns = [t for t in self.latency.turns if t.transcript or t.reply]
        now = time.monotonic()
        while self.printed < len(turns):
            turn = turns[self.printed]
            if not everything and not self._finished(turn, turns[self.printed + 1 :], now):
                return
            self.printed += 1
            text = format_turn(self.printed, turn.as_dict())
            self.lines.append(text)
            print(text, flush=True)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PRINT_POLL_S)
            self.flush()


async def run_mic(config: NabuConfig, session_id: str | None = None) -> str:
    """Listen and answer until Ctrl-C (SIGINT) or SIGTERM; returns the session id."""
    if session_id is not None:
        from nabu_pipeline.server import SESSION_ID

        if not SESSION_ID.match(session_id):
            raise ConfigError(
                f"--session must be 8-128 letters, digits, '-' or '_' (got {session_id!r})"
            )
    pa = await asyncio.to_thread(open_portaudio)
    try:
        devices = SoundDevices(pa)
        mic = devices.choose("input", config.mic.input_device)
        speaker = devices.choose("output", config.mic.output_device)
        devices.check_rate("input", mic, config.audio.in_sample_rate_hz)
        devices.check_rate("output", speaker, config.audio.out_sample_rate_hz)
    except BaseException:
        pa.terminate()
        raise
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.workers.runner import WorkerRunner

    from nabu_pipeline.conversation_store import ConversationStore, record_turns
    from nabu_pipeline.pipeline import build_session, describe_llm
    from processors.echo_canceller import EchoReference

    # The sound card's threads report what is played and when the microphone recorded
    # (transports.local_audio): steadier than the event loop the pipeline runs on.
    echo = EchoReference(config.audio.in_sample_rate_hz)
    transport = local_audio_transport(
        pa,
        input_device=mic,
        output_device=speaker,
        in_rate_hz=config.audio.in_sample_rate_hz,
        out_rate_hz=config.audio.out_sample_rate_hz,
        on_played=echo.push,
    )
    logger.info(describe_llm(config))
    if not config.audio.echo_cancellation:
        logger.warning(
            "Echo cancellation is off (audio.echo_cancellation): with a speaker near the "
            "microphone, Nabu may hear itself and stop mid-sentence; use headphones"
        )
    store = await ConversationStore(
        config.server.data_path, retention_days=config.server.history_retention_days
    ).open()
    printer_task: asyncio.Task | None = None
    session = None
    reminder_speaker = None
    session_id = session_id or new_session_id()
    try:
        messages, known = await store.load(session_id, config.conversation.history_turns)
        # Building the pipeline loads Whisper and Piper the first time (seconds): off the loop.
        session = await asyncio.to_thread(
            build_session,
            config,
            transport,
            context=LLMContext(messages),
            worker_kwargs={
                "enable_rtvi": False,
                "idle_timeout_secs": None,
                "conversation_id": session_id,
            },
            echo_reference=echo,
        )
        record_turns(store, session_id, session.parts["user"], session.parts["assistant"])
        printer = TurnPrinter(session.latency)
        # Reminders are said here too, and missed ones told, as on his phone.
        from nabu_pipeline.reminders import WorkerSpeaker

        reminder_speaker = WorkerSpeaker(session.worker, rtvi=False)
        await session.reminders.start()
        logger.info(session.alerts.describe())

        @session.parts["assistant"].event_handler("on_assistant_turn_stopped")
        async def _answered(_aggregator, _message) -> None:
            printer.assistant_turn_closed()

        @session.worker.event_handler("on_pipeline_started")
        async def _started(_worker, _frame) -> None:
            nonlocal printer_task
            printer_task = asyncio.create_task(printer.run(), name="nabu-mic-turns")
            await session.reminders.greet(reminder_speaker)
            print(
                f"Listening on {mic.name!r} (microphone {mic.index}), speaking on "
                f"{speaker.name!r} (speaker {speaker.index}); "
                f"{'carrying on' if known else 'new'} conversation {session_id}"
                f"{f' ({len(messages)} messages)' if known else ''}. Ctrl-C to stop.",
                flush=True,
            )

        runner = WorkerRunner(handle_sigint=True, handle_sigterm=True)
        await runner.add_workers(session.worker)
        await runner.run()
        printer.flush(everything=True)
    finally:
        if printer_task is not None:
            printer_task.cancel()
            with suppress(asyncio.CancelledError):
                await printer_task
        if session is not None:
            if reminder_speaker is not None:
                session.reminders.detach(reminder_speaker)
            await session.reminders.close()
            await session.alerts.wait_settled(config.safety.delivery_deadline_s)
            await session.alerts.close()
        stored = len(await store.messages(session_id))
        await store.close()
    print(
        f"Stopped. Conversation {session_id} kept ({stored} messages in {store.path}); "
        f"`nabu mic --session {session_id}` carries on.",
        flush=True,
    )
    return session_id


def main(config: NabuConfig, *, session_id: str | None = None) -> int:
    asyncio.run(run_mic(config, session_id))
    return 0


__all__ = ["TurnPrinter", "list_devices", "main", "run_mic"]
