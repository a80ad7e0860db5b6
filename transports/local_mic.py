"""`nabu mic`: talk to Nabu through this machine's microphone and speaker (desk testing).

pipecat's LocalAudioTransport (PyAudio) does the audio; Nabu's echo canceller
matters here too, since a laptop's speaker is right next to its microphone.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from nabu_pipeline.config import NabuConfig
from nabu_pipeline.pipeline import build_session, describe_llm


class MicUnavailable(Exception):
    """PyAudio (PortAudio) is missing; the message names the fix."""


async def run_mic(config: NabuConfig) -> None:
    try:
        from pipecat.transports.local.audio import LocalAudioTransport, LocalAudioTransportParams
    except ImportError:
        raise MicUnavailable(
            "nabu mic needs PyAudio: apt-get install portaudio19-dev && pip install 'nabu[mic]'"
        ) from None
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
    # Reminders are said here too, and missed ones told, as on his phone.
    from nabu_pipeline.reminders import WorkerSpeaker

    reminders, speaker = session.reminders, WorkerSpeaker(session.worker, rtvi=False)
    await reminders.start()
    logger.info(session.alerts.describe())

    @session.worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame) -> None:
        await reminders.greet(speaker)

    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(session.worker)
    logger.info("Listening on the default microphone; Ctrl-C to stop.")
    try:
        await runner.run()
    finally:
        reminders.detach(speaker)
        await reminders.close()
        await session.alerts.wait_settled(config.safety.delivery_deadline_s)
        await session.alerts.close()


def main(config: NabuConfig) -> int:
    asyncio.run(run_mic(config))
    return 0
