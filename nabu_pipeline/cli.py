"""The `nabu` command: talk, serve, devices, mic, bench (names other tools and checks rely on).

Everything that can be checked without the models (arguments, the log level, the output
file, the port) is checked first; the heavy imports (pipecat, the pipeline) happen only
after, so `--help` and a mistyped argument answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from nabu_pipeline import preflight
from nabu_pipeline.logs import setup_logging

CONFIG_HELP = (
    "YAML file laid over configs/default.yaml; it names only what differs "
    "(default: $NABU_CONFIG, else the defaults alone)"
)


def _speed(value: str) -> float:
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number, got {value!r}") from None
    if not 0.1 <= speed <= 20:
        raise argparse.ArgumentTypeError("--speed must be between 0.1 and 20")
    return speed


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to 65535, got {value!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {port}")
    return port


def _log_level(value: str) -> str:
    try:
        return preflight.log_level(value, "--log-level")
    except preflight.PreflightError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--log-level ")) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nabu",
        description="Nabu, a voice assistant for Warren. `nabu COMMAND --help` describes each.",
        epilog="Environment: OPENAI_API_KEY, NABU_LLM_BASE_URL, NABU_LLM_MODEL, NABU_CONFIG, "
        "NABU_AUTH_TOKEN, NABU_DATA_DIR, NABU_LOG_LEVEL; .env in this directory is read.",
    )
    p.add_argument(
        "--log-level",
        type=_log_level,
        default=None,
        metavar="LEVEL",
        help="how much to log: DEBUG, INFO (the default), WARNING or ERROR "
        "(also TRACE, SUCCESS, CRITICAL); overrides $NABU_LOG_LEVEL",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    talk = sub.add_parser(
        "talk",
        help="play recordings into Nabu and record its answers",
        description="Play each recording into the full pipeline as if spoken, the next one "
        "only after Nabu's reply has finished; print what was heard, what Nabu said and "
        "per-stage latencies; write everything Nabu said to one WAV file.",
    )
    talk.add_argument(
        "--input",
        action="append",
        required=True,
        type=Path,
        metavar="IN.wav",
        help="a recording of what Warren says (any sample rate or channels); repeat --input "
        "for a conversation of several turns, played in the order given",
    )
    talk.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="OUT.wav",
        help="WAV file for everything Nabu said (written even if silent); must end in .wav",
    )
    talk.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    talk.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="X",
        help="feed the recordings X times faster than real time (0.1-20; default 1, as if "
        "spoken); faster saves time but can change where turns end",
    )

    serve = sub.add_parser(
        "serve",
        help="WebSocket server for the phone app and browser page",
        description="Serve the phone app: WebSocket /ws (Pipecat protocol), a browser page "
        "at /, health at /healthz. Bound to anything but loopback it needs NABU_AUTH_TOKEN.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every "
        "network, which needs NABU_AUTH_TOKEN)",
    )
    serve.add_argument("--port", type=_port, default=7860, help="TCP port, 1-65535 (default 7860)")
    serve.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    serve.add_argument(
        "--certfile",
        default=None,
        metavar="PEM",
        help="certificate: serve HTTPS (a phone's browser gives the microphone only to secure "
        "pages); overrides server.tls_certfile",
    )
    serve.add_argument("--keyfile", default=None, metavar="PEM", help="private key of --certfile")

    devices = sub.add_parser(
        "devices",
        help="phones paired with `nabu serve` (device tokens)",
        description="List the phones paired with nabu serve, or revoke one's token at once.",
    )
    devices.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    dev = devices.add_subparsers(dest="action", required=True)
    dev.add_parser("list", help="paired and revoked devices")
    revoke = dev.add_parser("revoke", help="stop a device's token working")
    revoke.add_argument("id", type=int, help="the device's number in `nabu devices list`")

    mic = sub.add_parser(
        "mic",
        help="talk to Nabu through this machine's microphone and speaker",
        description="Talk to Nabu through this machine's microphone and speaker (desk "
        "testing; needs PyAudio). Prints each turn like `nabu talk`; Ctrl-C stops, and the "
        "conversation is kept.",
    )
    mic.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    mic.add_argument(
        "--list-devices", action="store_true", help="list the microphones and speakers and exit"
    )
    mic.add_argument(
        "--input-device",
        default=None,
        metavar="NUMBER|NAME",
        help="microphone: a number or (part of) a name from --list-devices "
        "(overrides mic.input_device; default: the system's)",
    )
    mic.add_argument(
        "--output-device",
        default=None,
        metavar="NUMBER|NAME",
        help="speaker: a number or (part of) a name from --list-devices "
        "(overrides mic.output_device; default: the system's)",
    )
    mic.add_argument(
        "--session", default=None, metavar="ID", help="carry on an earlier conversation"
    )

    bench = sub.add_parser(
        "bench",
        help="latency, accuracy and hearing benchmarks",
        description="Run a benchmark suite; writes DIR/results.json, DIR/report.md and plots.",
    )
    bench.add_argument(
        "--suite",
        choices=("latency", "accuracy", "paused", "nospeech", "vocabulary", "home", "concurrent"),
        default="latency",
        help="latency (default): Nabu vs stock pipecat vs the sequential design; accuracy: "
        "WER and speed of Whisper tiny.en and base; paused, nospeech, vocabulary: hearing; "
        "concurrent: conversations at once through a real `nabu serve`, and its memory",
    )
    bench.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE.tsv",
        help="clips to use: TSV with file, duration_s, transcript (default: the bundled clips)",
    )
    bench.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="run each clip N times (default 1)"
    )
    bench.add_argument(
        "--sessions",
        type=int,
        default=3,
        metavar="N",
        help="concurrent suite: conversations at once (default 3)",
    )
    bench.add_argument(
        "--conversations",
        type=int,
        default=20,
        metavar="N",
        help="concurrent suite: one-turn conversations before the memory reading (default 20)",
    )
    bench.add_argument(
        "--llm-base-url",
        default=None,
        metavar="URL",
        help="an OpenAI-protocol server to use instead of the built-in scripted one",
    )
    bench.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for the results"
    )
    bench.add_argument("--config", type=Path, default=None, metavar="FILE", help=CONFIG_HELP)
    return p


def _talk(args) -> int:
    from nabu_pipeline.config import load_config
    from nabu_pipeline.talk import format_result, talk
    from transports.audio_file import AudioFileError

    for path in args.input:
        if not path.is_file():
            raise AudioFileError(f"Input file not found: {path}")
    preflight.output_wav(args.output)
    config = load_config(args.config)
    result = asyncio.run(talk(config, args.input, args.output, speed=args.speed))
    print(format_result(result))
    return 1 if result.write_error else 0


def _serve(args) -> int:
    config = _serve_config(args)
    from nabu_pipeline.server import auth_token_for, serve

    auth_token_for(args.host)  # a missing token is the first thing to fix, then the port
    preflight.port_free(args.host, args.port)
    return serve(config, args.host, args.port)


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that are the user's to fix: printed as one line, exit 2."""
    from nabu_pipeline.config import ConfigError
    from nabu_pipeline.models import ModelError
    from transports.audio_file import AudioFileError

    return (preflight.PreflightError, ConfigError, ModelError, AudioFileError)


def _bench(args) -> int:
    # The benchmarks (and what they import) load only when `nabu bench` runs.
    from benchmarks.clips import ManifestError
    from benchmarks.run import main as bench_main

    try:
        return bench_main(args)
    except ManifestError as e:
        print(f"nabu: {e}", file=sys.stderr)
        return 2


def _serve_config(args):
    """The config with --certfile/--keyfile (they override server.tls_certfile/tls_keyfile)."""
    from nabu_pipeline.config import ConfigError, load_config

    config = load_config(args.config)
    if args.certfile is None and args.keyfile is None:
        return config
    try:
        server = type(config.server).model_validate(
            {
                **config.server.model_dump(),
                "tls_certfile": args.certfile or "",
                "tls_keyfile": args.keyfile or "",
            }
        )
    except ValueError as e:
        raise ConfigError(f"--certfile/--keyfile: {e.errors()[0]['msg']}") from None
    return config.model_copy(update={"server": server})


def _devices(args) -> int:
    from nabu_pipeline.config import load_config
    from nabu_pipeline.devices import DeviceError, DeviceStore, format_devices

    store = DeviceStore(load_config(args.config).server.data_path)
    if args.action == "list":
        print(format_devices(store.list()))
        return 0
    try:
        device = store.revoke(args.id)
    except DeviceError as e:
        print(f"nabu: {e}", file=sys.stderr)
        return 2
    print(f"Revoked device {device.id} ({device.name}); its token no longer connects.")
    return 0


def _mic(args) -> int:
    from nabu_pipeline.config import load_config
    from nabu_pipeline.mic import list_devices
    from nabu_pipeline.mic import main as mic_main

    if args.list_devices:
        print(list_devices())
        return 0
    config = load_config(args.config)
    chosen = {
        key: value
        for key, value in (
            ("input_device", args.input_device),
            ("output_device", args.output_device),
        )
        if value is not None
    }
    if chosen:
        config = config.model_copy(update={"mic": config.mic.model_copy(update=chosen)})
    return mic_main(config, session_id=args.session)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nabu_pipeline.config import load_dotenv_file

    load_dotenv_file()  # first, so NABU_LOG_LEVEL in .env counts too
    try:
        level = args.log_level or preflight.log_level(
            os.environ.get("NABU_LOG_LEVEL"), "NABU_LOG_LEVEL"
        )
    except preflight.PreflightError as e:
        print(f"nabu: {e}", file=sys.stderr)
        return 2
    setup_logging(level)
    user_errors = _user_errors()
    try:
        if args.command == "talk":
            return _talk(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "devices":
            return _devices(args)
        if args.command == "mic":
            from transports.local_mic import MicUnavailable

            user_errors = (*user_errors, MicUnavailable)
            return _mic(args)
    except user_errors as e:
        print(f"nabu: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
