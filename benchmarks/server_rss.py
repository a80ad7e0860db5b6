"""Measure `nabu serve`'s memory over many sessions, and what holds it.

    python -m benchmarks.server_rss [--sessions 300] [--concurrency 4] [--turn-every 5]

The server runs in this process (uvicorn on its own loop in a thread, as the
tests run it) so that after the sessions the script can look inside: the
Python objects still alive (sessions, pipelines, processors), the asyncio
tasks and threads, and how much of the resident memory glibc gives back to
the system when asked (`malloc_trim`), i.e. how much is freed memory the
allocator keeps rather than anything still in use. Each session connects,
sends client-ready and a second of audio; every `--turn-every`th one asks a
real question (Whisper, the scripted LLM, Piper) and waits for the reply.
Run it once per change; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.phone_client import PhoneClient, load_pcm
from nabu_pipeline.config import load_config
from nabu_pipeline.logs import setup_logging
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from tests.server_harness import in_process

CLIPS = Path(__file__).resolve().parent / "clips"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def live_objects() -> Counter:
    """Live instances of the classes one session creates, by class name."""
    gc.collect()
    wanted = (
        "PipelineWorker",
        "FastAPIWebsocketTransport",
        "PhoneFrameSerializer",
        "FailoverWhisperSTTService",
        "SileroVADAnalyzer",
        "LiveSession",
        "InferenceSession",
        "LLMContext",
        "WebSocket",
    )
    counts: Counter = Counter()
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in wanted:
            counts[name] += 1
    return counts


async def one_session(url: str, speech: bytes, turn: bool) -> None:
    phone = PhoneClient(url)
    await phone.open()
    try:
        if turn:
            await phone.turn(speech, within_s=120)
        else:
            phone.say(speech[: 16000 * 2])  # a second of audio, no question
            await asyncio.sleep(1.2)
    finally:
        await phone.close()


async def run(args) -> None:
    config = load_config(env={**os.environ})
    data = config.model_dump(exclude={"source"})
    data["stt"]["model"] = "tiny.en"
    data["server"]["max_sessions"] = max(4, args.concurrency)
    data["server"]["data_dir"] = tempfile.mkdtemp(prefix="nabu-rss-")
    from nabu_pipeline.config import NabuConfig

    if args.no_trim:
        import nabu_pipeline.freed_memory

        nabu_pipeline.freed_memory.release_freed_memory = lambda: None
    speech = load_pcm(CLIPS / "goforward.wav")
    samples = []
    with (
        ScriptedLLMServer(Script(reply="The door is locked. The light is on.", ttft_s=0.1)) as llm,
    ):
        data["llm"]["base_url"] = llm.url
        with in_process(NabuConfig(**data)) as srv:
            # One session first: models, caches and the first pipeline's imports are paid once.
            await one_session(srv.ws(), speech, turn=True)
            samples.append((0, rss_mb()))
            print(f"after warm-up session: {samples[-1][1]:.0f} MB")
            done = 0
            started = time.monotonic()
            while done < args.sessions:
                batch = min(args.concurrency, args.sessions - done)
                await wait_idle(srv)  # the previous batch's sessions have ended on the server
                await asyncio.gather(
                    *(
                        one_session(srv.ws(), speech, (done + i + 1) % args.turn_every == 0)
                        for i in range(batch)
                    )
                )
                done += batch
                if done % 50 < batch or done == args.sessions:
                    samples.append((done, rss_mb()))
                    print(
                        f"{done} sessions: {samples[-1][1]:.0f} MB "
                        f"({time.monotonic() - started:.0f} s)"
                    )
            await wait_idle(srv)
            await asyncio.sleep(10)  # the server releases freed memory 5 s after the last one
            idle = rss_mb()
            loop = srv.server.loop
            tasks = asyncio.run_coroutine_threadsafe(_task_count(), loop).result(10)
            objects = live_objects()
            after_gc = rss_mb()
            trimmed = None
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                trimmed = rss_mb()
            except OSError:
                pass
            print(f"idle 10 s after the last session: {idle:.0f} MB")
            print(f"after gc.collect(): {after_gc:.0f} MB; live objects: {dict(objects)}")
            print(f"server loop tasks: {tasks}; threads: {threading.active_count()}")
            if trimmed is not None:
                print(f"after malloc_trim(0): {trimmed:.0f} MB")
            print(f"LLM requests: {len(llm.requests)}")
    print("samples:", samples)


async def wait_idle(srv, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while srv.health()["sessions"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _task_count() -> int:
    return len(asyncio.all_tasks())


def main() -> None:
    setup_logging(os.environ.get("NABU_LOG_LEVEL", "WARNING"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--turn-every", type=int, default=5)
    p.add_argument(
        "--no-trim",
        action="store_true",
        help="measure without the server's release of freed memory when idle",
    )
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
