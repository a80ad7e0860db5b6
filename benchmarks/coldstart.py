"""Child process for the cold-start measurement: start Nabu, print READY when it can listen."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


async def _main(config_path: str | None) -> None:
    from pipecat.workers.runner import WorkerRunner

    from nabu_pipeline.config import load_config
    from nabu_pipeline.pipeline import build_session
    from transports.wav_file import WavFileTransport, wav_transport_params

    config = load_config(config_path)
    transport = WavFileTransport(
        wav_transport_params(config.audio.in_sample_rate_hz, config.audio.out_sample_rate_hz)
    )
    session = build_session(
        config, transport, worker_kwargs={"enable_rtvi": False, "idle_timeout_secs": None}
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(session.worker)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(transport.input().ready.wait(), 60)
    print("READY", flush=True)
    await runner.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    from nabu_pipeline.logs import setup_logging

    setup_logging("WARNING")
    asyncio.run(_main(args.config))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
