"""Load: connect/talk/disconnect cycles and concurrent conversations on `nabu serve`.

Loopback only, bounded in count and time. Real Pipecat-protocol clients, real
Whisper and Piper, the scripted OpenAI-protocol server. The server runs in this
process, so this process's resident memory (VmRSS) is the server's; it is read
after a warm-up cycle (models loaded) and again at the end. The config has the
STT and TTS fallbacks on, so the failover machinery is in every session.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from pathlib import Path

import pytest

from benchmarks.phone_client import PhoneClient, load_pcm
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

from .conftest import CLIPS
from .helpers import captured_logs, server_tasks, wait_server_tasks, wait_sessions
from .server_harness import in_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CYCLES = 20
CONCURRENT = 3
TURNS_EACH = 2
# Clip -> a word of its transcript -> the word the answer carries.
QUESTIONS = {
    "goforward": ("forward", "apple"),
    "sb_spk1_snt1": ("dog", "banana"),
    "sb_spk2_snt4": ("coat", "orange"),
}
MAX_GROWTH_MB = 60.0
"""Whole run, after warm-up (allocator high-water marks, caches filling)."""
MAX_LATE_GROWTH_MB = 25.0
"""Second half of the cycles: memory must level off, not climb with every session."""


def rss_mb() -> float:
    """This process's resident set size (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss_mb() -> float:
    gc.collect()
    time.sleep(0.2)
    gc.collect()
    return rss_mb()


def answer_for(messages: list[dict]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    text = str(users[-1]["content"]).lower() if users else ""
    for keyword, word in reversed(list(QUESTIONS.values())):
        if keyword in text:
            return f"Your word is {word}."
    return "Sorry, say again?"


async def conversation(srv, clips: list[str]) -> tuple[PhoneClient, list[float]]:
    """Connect, say each clip and wait for its answer, disconnect."""
    latencies = []
    async with PhoneClient(srv.ws()) as phone:
        for clip in clips:
            await phone.turn(load_pcm(CLIPS / f"{clip}.wav"), within_s=90)
            latencies.append(phone.bot_audio_starts[-1] - phone.said_until[-1])
    return phone, latencies


def check(phone: PhoneClient, clips: list[str]) -> list[str]:
    """What went wrong in one conversation (empty: nothing)."""
    problems = []
    text = phone.bot_text()
    for clip in clips:
        if QUESTIONS[clip][1] not in text:
            problems.append(f"{phone.session}: no {QUESTIONS[clip][1]!r} in {text!r}")
    if phone.errors():
        problems.append(f"{phone.session}: RTVI errors {phone.errors()}")
    return problems


async def test_cycles_and_concurrent_conversations(config_for):
    clips = list(QUESTIONS)
    with ScriptedLLMServer(Script(reply=answer_for, ttft_s=0.1)) as llm:
        fallback = {"fallback": "openai", "openai": {"base_url": llm.url}}
        config = config_for(llm.url, stt=fallback, tts=fallback)
        with in_process(config) as srv, captured_logs("ERROR") as errors:
            # Warm-up: every clip once, three sessions at once (models, caches, allocator pools
            # reach their working size before memory is measured).
            await asyncio.gather(*(conversation(srv, [clip]) for clip in clips))
            await wait_sessions(srv, 0)
            rss_before, tasks_before = settled_rss_mb(), server_tasks(srv, samples=5)
            threads_before = threading.active_count()
            problems: list[str] = []
            latencies: list[float] = []
            rss_by_cycle: list[float] = []
            started = time.monotonic()
            for i in range(CYCLES):
                said = [clips[i % len(clips)]]
                phone, lat = await conversation(srv, said)
                await wait_sessions(srv, 0)
                problems += check(phone, said)
                latencies += lat
                rss_by_cycle.append(settled_rss_mb())
            cycles_s = time.monotonic() - started
            rss_mid, rss_after_cycles = rss_by_cycle[CYCLES // 2 - 1], rss_by_cycle[-1]

            started = time.monotonic()
            plans = [[clips[(i + t) % len(clips)] for t in range(TURNS_EACH)] for i in range(3)]
            results = await asyncio.gather(*(conversation(srv, plan) for plan in plans))
            await wait_sessions(srv, 0)
            concurrent_s = time.monotonic() - started
            for (phone, lat), plan in zip(results, plans, strict=True):
                problems += check(phone, plan)
                latencies += lat
            sessions = {phone.session for phone, _ in results}
            tasks_after = await wait_server_tasks(srv, tasks_before)
            rss_after = settled_rss_mb()
            threads_after = threading.active_count()
            health = await asyncio.to_thread(srv.health)

    report = (
        f"\nLoad: {CYCLES} connect/talk/disconnect cycles in {cycles_s:.0f}s, then "
        f"{CONCURRENT} concurrent conversations x {TURNS_EACH} turns in {concurrent_s:.0f}s\n"
        f"  errors: {len(problems)} failed turns, {len(errors)} ERROR log lines\n"
        f"  first audio after speech: p50 {statistics.median(latencies):.2f}s, "
        f"max {max(latencies):.2f}s over {len(latencies)} turns\n"
        f"  RSS: {rss_before:.0f} MiB after warm-up, {rss_mid:.0f} MiB after "
        f"{CYCLES // 2} cycles, {rss_after_cycles:.0f} MiB after {CYCLES}, "
        f"{rss_after:.0f} MiB after the concurrent conversations "
        f"({rss_after - rss_before:+.0f} MiB)\n"
        f"  RSS per cycle (MiB): {' '.join(f'{r:.0f}' for r in rss_by_cycle)}\n"
        f"  server asyncio tasks {len(tasks_before)} -> {len(tasks_after)}; threads "
        f"{threads_before} -> {threads_after}\n"
        f"  tasks before: {tasks_before}\n  tasks after: {tasks_after}"
    )
    print(report)
    assert not problems, problems
    assert not errors, errors
    assert len(sessions) == CONCURRENT and health["sessions"] == 0
    assert len(tasks_after) <= len(tasks_before), report
    assert rss_after - rss_before < MAX_GROWTH_MB, report
    half = CYCLES // 2
    assert max(rss_by_cycle[half:]) - max(rss_by_cycle[:half]) < MAX_LATE_GROWTH_MB, report
