"""The `nabu` command: talk, serve, mic, bench (names other tools rely on; DESIGN.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from benchmarks.clips import ManifestError
from nabu_pipeline.config import ConfigError, load_config, load_dotenv_file
from nabu_pipeline.logs import setup_logging
from nabu_pipeline.models import ModelError
from transports.audio_file import AudioFileError
from transports.local_mic import MicUnavailable


def _speed(value: str) -> float:
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number, got {value!r}") from None
    if not 0.1 <= speed <= 20:
        raise argparse.ArgumentTypeError("--speed must be between 0.1 and 20")
    return speed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nabu", description="Nabu, a voice assistant for Warren.")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = p.add_subparsers(dest="command", required=True)

    talk = sub.add_parser("talk", help="play recordings into Nabu and record its answers")
    talk.add_argument("--input", action="append", required=True, type=Path, metavar="IN.wav")
    talk.add_argument("--output", required=True, type=Path, metavar="OUT.wav")
    talk.add_argument("--config", type=Path, default=None)
    talk.add_argument("--speed", type=_speed, default=1.0, help="feed audio X times real time")

    serve = sub.add_parser("serve", help="WebSocket server for the phone app and browser page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--config", type=Path, default=None)

    mic = sub.add_parser("mic", help="talk to Nabu through this machine's microphone and speaker")
    mic.add_argument("--config", type=Path, default=None)

    bench = sub.add_parser("bench", help="latency and accuracy benchmarks")
    bench.add_argument(
        "--suite",
        choices=("latency", "accuracy", "paused", "nospeech", "vocabulary", "home"),
        default="latency",
    )
    bench.add_argument("--manifest", type=Path, default=None)
    bench.add_argument("--repeat", type=int, default=1)
    bench.add_argument("--llm-base-url", default=None)
    bench.add_argument("--out", type=Path, required=True)
    bench.add_argument("--config", type=Path, default=None)
    return p


def _talk(args) -> int:
    from nabu_pipeline.talk import format_result, talk

    for path in args.input:
        if not path.is_file():
            raise AudioFileError(f"Input file not found: {path}")
    config = load_config(args.config)
    result = asyncio.run(talk(config, args.input, args.output, speed=args.speed))
    print(format_result(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    load_dotenv_file()
    try:
        if args.command == "talk":
            return _talk(args)
        if args.command == "bench":
            from benchmarks.run import main as bench_main

            return bench_main(args)
        if args.command == "serve":
            from nabu_pipeline.server import serve

            return serve(load_config(args.config), args.host, args.port)
        if args.command == "mic":
            from transports.local_mic import main as mic_main

            return mic_main(load_config(args.config))
    except (ConfigError, ModelError, AudioFileError, ManifestError, MicUnavailable) as e:
        print(f"nabu: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
