"""`nabu talk`: play recordings into the full pipeline as if spoken; record the answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from loguru import logger
from pipecat.workers.runner import WorkerRunner

from nabu_pipeline.config import NabuConfig
from nabu_pipeline.latency import STAGES, ActivityState
from nabu_pipeline.pipeline import build_session, describe_llm
from transports.audio_file import read_pcm16, write_pcm16
from transports.wav_file import EchoPath, WavFileTransport, wav_transport_params

# After the last input, silence is fed until the reply ends, at most this long.
MAX_TRAILING_SILENCE_S = 30.0
# The reply is over when nothing has happened for this long after Nabu stopped speaking.
REPLY_SETTLE_S = 1.0
# With no reply at all (noise, a dropped transcript), give up waiting after this much quiet.
NOTHING_COMING_S = 6.0
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 20.0


@dataclass
class TalkResult:
    turns: list[dict] = field(default_factory=list)
    output: Path | None = None
    output_s: float = 0.0
    input_start_times: list[float] = field(default_factory=list)
    input_end_times: list[float] = field(default_factory=list)
    write_times: list[float] = field(default_factory=list)
    """Wall-clock time of every chunk of Nabu's speech sent out."""
    burst_s: list[float] = field(default_factory=list)
    """Length of each stretch of Nabu's speech, in order."""
    reply_start_s: list[float] = field(default_factory=list)
    """Where in `output` what Nabu said after each input begins (its replies back to back)."""
    history: list[dict] = field(default_factory=list)
    """The conversation context at the end (what the LLM would see next)."""
    write_error: str = ""
    """Why the output file could not be written (the transcript is still printed)."""
    alerts: list = field(default_factory=list)
    """Alerts raised in the conversation (`nabu_pipeline.alerts.Alert`), delivered or not."""


def _busy(state: ActivityState) -> bool:
    return (
        state.bot_speaking
        or state.llm_running
        or state.tts_running
        or state.vad_speaking
        or state.user_turn_open
    )


def reply_finished(state: ActivityState, bot_stops_before: int, now: float) -> bool:
    """Nabu has answered (and stopped), or nothing is going to come."""
    if _busy(state):
        return False
    quiet = now - state.last_activity
    if state.bot_stops > bot_stops_before:
        return quiet >= REPLY_SETTLE_S
    return quiet >= NOTHING_COMING_S


async def talk(
    config: NabuConfig,
    inputs: list[Path],
    output: Path,
    *,
    speed: float = 1.0,
    echo: EchoPath | None = None,
    after_reply: Callable[[int], Awaitable[None]] | None = None,
) -> TalkResult:
    """Run one conversation over `inputs` and write everything Nabu said to `output`."""
    clips = [read_pcm16(p, config.audio.in_sample_rate_hz) for p in inputs]
    out_rate = config.audio.out_sample_rate_hz
    transport = WavFileTransport(
        wav_transport_params(config.audio.in_sample_rate_hz, out_rate),
        speed=speed,
        echo=echo,
    )
    logger.info(describe_llm(config))
    session = build_session(
        config,
        transport,
        worker_kwargs={"enable_rtvi": False, "idle_timeout_secs": None},
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    run_task = asyncio.create_task(runner.run())
    result = TalkResult(output=output)
    try:
        await asyncio.wait_for(transport.input().ready.wait(), STARTUP_TIMEOUT_S)
        state = session.latency.state
        for path, clip in zip(inputs, clips, strict=True):
            logger.info(f"Speaking {path.name} ({len(clip) / config.audio.in_sample_rate_hz:.1f}s)")
            bot_stops_before = state.bot_stops
            result.reply_start_s.append(len(transport.output().audio) / 2 / out_rate)
            result.input_start_times.append(time.time())
            await transport.input().feed(clip)
            result.input_end_times.append(time.time())
            await feed_until_reply_done(transport, state, bot_stops_before)
            if after_reply is not None:  # tests change the world between two sentences
                await after_reply(len(result.input_end_times) - 1)
            if run_task.done():
                break
    finally:
        await session.worker.stop_when_done()
        try:
            await asyncio.wait_for(asyncio.shield(run_task), SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            logger.warning("Pipeline did not stop in time; cancelling it")
            await runner.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
        # A call for help still being delivered is finished before the command exits.
        if session.alerts is not None:
            if not await session.alerts.wait_settled(config.safety.delivery_deadline_s):
                logger.error("An alert was still undelivered when nabu talk ended")
            await session.alerts.close()
            result.alerts = list(session.alerts.sent)
        if session.reminders is not None:
            await session.reminders.close()
    audio = bytes(transport.output().audio)
    try:
        write_pcm16(output, audio, out_rate)
    except (OSError, RuntimeError, TypeError) as e:  # soundfile's errors are RuntimeErrors
        result.write_error = f"Could not write Nabu's speech to {output}: {e}"
    result.output_s = len(audio) / 2 / out_rate
    result.turns = session.latency.summary()
    offsets = [offset for _, offset in transport.output().bursts] + [len(audio)]
    result.burst_s = [(b - a) / 2 / out_rate for a, b in pairwise(offsets)]
    result.history = [m for m in session.context.get_messages() if isinstance(m, dict)]
    result.write_times = list(transport.output().write_times)
    return result


async def feed_until_reply_done(
    transport: WavFileTransport, state: ActivityState, bot_stops_before: int
) -> None:
    step_s = 0.1
    fed = 0.0
    while fed < MAX_TRAILING_SILENCE_S:
        if reply_finished(state, bot_stops_before, time.monotonic()):
            return
        await transport.input().feed_silence(step_s)
        fed += step_s
    logger.warning(f"No end of reply after {MAX_TRAILING_SILENCE_S:.0f}s of silence; moving on")


def format_turn(number: int, turn: dict) -> str:
    """What was heard, what Nabu said and the latencies of one turn (`nabu talk` and `mic`)."""
    stages = [f"{k[:-2]}={turn[k]:.2f}s" for k in STAGES if turn.get(k) is not None]
    return "\n".join(
        [
            f"Turn {number}",
            f"  You said:  {turn['transcript'] or '(nothing heard)'}",
            f"  Nabu said: {turn['reply'].strip() or '(nothing)'}",
            f"  Latency:   {' '.join(stages) if stages else '(no reply)'}",
        ]
    )


def format_result(result: TalkResult) -> str:
    lines = [format_turn(i, turn) for i, turn in enumerate(result.turns, 1)]
    for alert in result.alerts:
        channels = ", ".join(f"{k}: {v}" for k, v in alert.channels.items()) or "no channel"
        lines.append(f"Alert ({alert.kind}) {alert.message!r} -> {channels}")
    if result.write_error:
        lines.append(result.write_error)
    else:
        lines.append(f"Wrote {result.output_s:.1f}s of Nabu's speech to {result.output}")
    return "\n".join(lines)
