"""Running `nabu serve` for tests: in-process (uvicorn in a thread) or as the real CLI process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from nabu_pipeline.config import NabuConfig
from nabu_pipeline.server import NabuServer, uvicorn_config

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    """A server and how to reach it."""

    port: int
    server: NabuServer | None = None
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, **query) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?{q}" if q else "")

    def health(self) -> dict:
        return httpx.get(f"{self.http}/healthz", timeout=5).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def wait_healthy(port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"nabu serve exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server on port {port} not healthy after {timeout_s}s")


@contextmanager
def in_process(config: NabuConfig, *, token: str | None = None):
    """The server app under uvicorn on its own event loop in a thread (fast: models stay loaded)."""
    import uvicorn

    port = free_port()
    nabu = NabuServer(config, auth_token=token)
    server = uvicorn.Server(uvicorn_config(nabu.app, config, "127.0.0.1", port))
    server.install_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(target=server.run, name="nabu-serve", daemon=True)
    thread.start()
    try:
        wait_healthy(port, 60)
        yield Running(port=port, server=nabu)
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def cli_process(env: dict, log_path: Path, *args: str, port: int | None = None):
    """`nabu serve` as a user runs it, its stderr in `log_path`."""
    port = port or free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nabu_pipeline.cli", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(port, 120, process)
        yield Running(port=port, process=process, log_path=log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
