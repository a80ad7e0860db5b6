"""Checks of the command line that need no models: a mistake found after Whisper and Piper
have loaded (or, for `nabu talk`, after the whole conversation) costs the user a minute
and, in the worst case, the transcript. Each failure is one sentence naming the fix."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class PreflightError(Exception):
    """A command-line value that cannot work; the message says what would."""


def log_level(value: str | None, origin: str) -> str:
    """`value` as a loguru level name (any case), or an error naming `origin`."""
    level = (value or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise PreflightError(
            f"{origin} {value!r} is not a log level; use one of {', '.join(LOG_LEVELS)} "
            "(INFO is the default)"
        )
    return level


def output_wav(path: Path) -> None:
    """`nabu talk --output` must be a WAV file that can be written, checked before it runs."""
    if path.is_dir():
        raise PreflightError(f"--output {path} is a directory; name a file in it, e.g. reply.wav")
    if path.suffix.lower() != ".wav":
        raise PreflightError(
            f"--output {path} must end in .wav (Nabu writes its speech as a WAV file), "
            f"e.g. --output {path.with_suffix('.wav')}"
        )
    folder = next((a for a in path.absolute().parents if a.exists()), None)
    if folder is not None and not folder.is_dir():
        raise PreflightError(f"--output {path} cannot be written: {folder} is a file, not a folder")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as e:
        raise PreflightError(
            f"--output {path} cannot be written ({e.strerror or e}); choose a file in a "
            "directory you can write to"
        ) from None
    if not existed:
        path.unlink(missing_ok=True)


def port_free(host: str, port: int) -> None:
    """Bind `host:port` the way uvicorn will, and let go at once: a port in use or a host that
    is not this machine's is reported before the models load, not after."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PreflightError(f"--host {host} is not an address this machine knows ({e})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # as uvicorn does, so a port left in TIME_WAIT is not "in use"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PreflightError(
                f"port {port} on {host} is already in use (another nabu serve?); stop that "
                f"program or pick another port, e.g. --port {port + 1 if port < 65535 else 7860}"
            ) from None
        if e.errno == errno.EACCES:
            raise PreflightError(
                f"port {port} needs administrator rights on this machine; use one above 1023, "
                "e.g. --port 7860"
            ) from None
        raise PreflightError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    finally:
        sock.close()
