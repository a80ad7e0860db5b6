"""`nabu mic`: talk to Nabu through this machine's microphone and speaker (desk testing).

pipecat's LocalAudioTransport (PyAudio) does the audio; Nabu's echo canceller
matters here too, since a laptop's speaker is right next to its microphone.
"""

from __future__ import annotations

import asyncio
import importlib.util

from loguru import logger

from nabu_pipeline.config import NabuConfig
from nabu_pipeline.pipeline import build_session, describe_llm


class MicUnavailable(Exception):
    """PyAudio (PortAudio) is missing; the message names the fix."""


NO_PYAUDIO = (
    "nabu mic needs PyAudio and the PortAudio library. Install PortAudio "
    "(Debian/Ubuntu: apt-get install portaudio19-dev; macOS: brew install portaudio), then, "
    "in the Nabu checkout: pip install -e '.[mic]'"
)


async def run_mic(config: NabuConfig) -> None:
    # Checked before pipecat's module is imported: it logs a fix of its own (`uv add ...`).
    if importlib.util.find_spec("pyaudio") is None:
        raise MicUnavailable(NO_PYAUDIO)
    try:
        from pipecat.transports.local.audio import LocalAudioTransport, LocalAudioTransportParams
    except ImportError:
        raise MicUnavailable(NO_PYAUDIO) from None
    from pipecat.workers.runner import WorkerRunner

    transport = LocalAudioTransport(
        LocalAudioTransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=config.audio.in_sample_rate_hz,
            audio_out_enabled=True,
            audio_out_sample_rate=config.audio.out_sample_rate_hz,
        )
    )
    logger.info(describe_llm(config))
    session = build_session(
        config, transport, worker_kwargs={"enable_rtvi": False, "idle_timeout_secs": None}
    )
    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(session.worker)
    logger.info("Listening on the default microphone; Ctrl-C to stop.")
    await runner.run()


def main(config: NabuConfig) -> int:
    asyncio.run(run_mic(config))
    return 0
