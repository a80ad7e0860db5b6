"""The latency suite: each clip through the real pipeline at real-time pace, three designs.

End of speech comes from the clip itself (offline Silero VAD on the file), so
every design is timed from the same instant: the moment the last voiced audio
of the clip was fed in. Voice-to-voice ends when the first reply audio leaves
the output transport.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loguru import logger
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner
from tqdm import tqdm

from benchmarks.clips import Clip
from benchmarks.designs import SequentialDesign
from nabu_pipeline.config import NabuConfig
from nabu_pipeline.latency import STAGES
from nabu_pipeline.pipeline import Session
from nabu_pipeline.talk import STARTUP_TIMEOUT_S, feed_until_reply_done
from transports.wav_file import WavFileTransport, wav_transport_params

# Replies play 4x faster than real time in the benchmark: only their start is timed.
OUTPUT_SPEED = 4.0
# Quiet between clips, so one turn's tail never bleeds into the next.
GAP_S = 1.5

THREE_SENTENCES = (
    "The pharmacy on Main Street opens at nine in the morning. "
    "It closes at six in the evening on weekdays. "
    "On Saturdays it is open until noon."
)
EIGHTY_TOKENS = (
    "Sure, I can help with that. The pharmacy on Main Street opens at nine in the morning "
    "and closes at six in the evening on weekdays. On Saturdays it is open from nine until noon, "
    "and it is closed on Sundays and public holidays. If you need a prescription refilled, "
    "it is best to call them a day ahead so it is ready when you arrive."
)


@dataclass
class TurnMeasure:
    design: str
    clip: str
    repeat: int
    index: int
    """Position in the conversation (0 is the first turn after start-up)."""
    voice_to_voice_s: float | None
    stages: dict[str, float | None] = field(default_factory=dict)
    transcript: str = ""
    reply: str = ""
    early_replies: int = 0
    """Replies that began before the clip's speech ended (the turn was cut off)."""
    fed_at: float = 0.0
    """Wall-clock time the clip started playing in."""
    speech_end_at: float = 0.0
    first_audio_at: float | None = None
    """Wall-clock time of the first reply audio after the end of speech."""
    heard_transcripts: list[str] = field(default_factory=list)
    """Every raw Whisper transcript while this clip played (before the guard)."""
    last_transcript_at: float | None = None
    """Wall-clock time of the last of those transcripts (the one holding his last words)."""
    spoken_s: float = 0.0
    """Seconds of audio Nabu produced for this clip."""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarise(values: list[float | None]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"p50": None, "p95": None, "n": 0}
    return {
        "p50": round(_percentile(vals, 0.5), 3),
        "p95": round(_percentile(vals, 0.95), 3),
        "min": round(min(vals), 3),
        "mean": round(statistics.fmean(vals), 3),
        "n": len(vals),
    }


async def run_conversation(
    design: str,
    build: Callable[[NabuConfig, BaseTransport], Session],
    config: NabuConfig,
    clips: list[Clip],
    repeat: int,
    progress: tqdm | None = None,
) -> list[TurnMeasure]:
    """Feed clips one after another into one conversation of `design`."""
    transport = WavFileTransport(
        wav_transport_params(config.audio.in_sample_rate_hz, config.audio.out_sample_rate_hz),
        speed=1.0,
        output_speed=OUTPUT_SPEED,
    )
    session = build(config, transport)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    run_task = asyncio.create_task(runner.run())
    measures = []
    try:
        await asyncio.wait_for(transport.input().ready.wait(), STARTUP_TIMEOUT_S)
        state = session.latency.state
        for index, clip in enumerate(clips):
            bot_stops = state.bot_stops
            t0 = time.time()
            await transport.input().feed(clip.samples)
            speech_end = t0 + clip.speech_end_s
            await feed_until_reply_done(transport, state, bot_stops)
            measures.append(
                _measure(design, clip, repeat, index, session, transport, t0, speech_end)
            )
            await transport.input().feed_silence(GAP_S)
            if progress is not None:
                progress.update(1)
    finally:
        await session.worker.stop_when_done()
        try:
            await asyncio.wait_for(asyncio.shield(run_task), 20)
        except TimeoutError:
            await runner.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
    return measures


def _measure(
    design: str,
    clip: Clip,
    repeat: int,
    index: int,
    session: Session,
    transport: WavFileTransport,
    t0: float,
    speech_end: float,
) -> TurnMeasure:
    bursts = [at for at, _ in transport.output().bursts if at >= t0]
    early = [at for at in bursts if at < speech_end]
    after = [at for at in bursts if at >= speech_end]
    v2v = round(after[0] - speech_end, 3) if after else None
    out = transport.output()
    offsets = [off for at, off in out.bursts if at >= t0]
    spoken_s = (len(out.audio) - offsets[0]) / 2 / out.sample_rate if offsets else 0.0
    heard = [t for t in session.latency.turns if t.transcript_at and t.transcript_at >= t0]
    raw = [t.transcript for t in heard]
    turns = [t for t in session.latency.turns if t.bot_started and t.bot_started >= speech_end]
    turn = turns[0] if turns else None
    stages: dict[str, float | None] = dict.fromkeys(STAGES)
    transcript = reply = ""
    if turn is not None:
        stages = turn.stages()
        stages["turn_end_s"] = _since(speech_end, turn.turn_end)
        stages["stt_s"] = _since(speech_end, turn.transcript_at)
        stages["vad_stop_s"] = _since(speech_end, turn.vad_stop)
        stages["voice_to_voice_s"] = v2v
        # The whole heard utterance may span several pipeline turns; join what was heard.
        transcript = " ".join(raw)
        reply = turn.reply
    return TurnMeasure(
        design,
        clip.name,
        repeat,
        index,
        v2v,
        stages,
        transcript,
        reply,
        len(early),
        fed_at=t0,
        speech_end_at=speech_end,
        first_audio_at=after[0] if after else None,
        heard_transcripts=raw,
        last_transcript_at=max((t.transcript_at for t in heard), default=None),
        spoken_s=round(spoken_s, 3),
    )


def _since(start: float, end: float | None) -> float | None:
    return round(end - start, 3) if end is not None else None


def run_sequential(
    config: NabuConfig, clips: list[Clip], repeat: int, progress: tqdm | None = None
) -> list[TurnMeasure]:
    design = SequentialDesign(config)
    out = []
    for index, clip in enumerate(clips):
        voiced = clip.samples[: int(clip.speech_end_s * 16000) + 8000]
        turn = design.turn(voiced)
        stages = dict.fromkeys(STAGES)
        stages.update(
            turn_end_s=turn.endpoint_s,
            stt_s=round(turn.endpoint_s + turn.stt_s, 3),
            llm_ttft_s=round(turn.llm_s, 3),
            tts_first_audio_s=round(turn.tts_s, 3),
            voice_to_voice_s=round(turn.voice_to_voice_s, 3),
        )
        out.append(
            TurnMeasure(
                "sequential",
                clip.name,
                repeat,
                index,
                stages["voice_to_voice_s"],
                stages,
                turn.transcript,
                turn.reply,
            )
        )
        if progress is not None:
            progress.update(1)
    return out


def measure_cold_start(config_path: Path | None, runs: int = 2) -> list[float]:
    """Process start -> ready to listen (models loaded and warm, transport started)."""
    times = []
    env = dict(os.environ)
    for _ in range(runs):
        cmd = [sys.executable, "-m", "benchmarks.coldstart"]
        if config_path:
            cmd += ["--config", str(config_path)]
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
        )
        ready = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "READY":
                ready = time.perf_counter() - start
                break
        proc.wait(60)
        if ready is None:
            logger.warning("cold start: the child never became ready")
        else:
            times.append(round(ready, 3))
    return times


def turn_dicts(measures: list[TurnMeasure]) -> list[dict]:
    return [asdict(m) for m in measures]
