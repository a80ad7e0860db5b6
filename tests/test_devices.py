"""Pairing and device tokens (real SQLite, real server, real CLI), the Stop message, and TLS."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from pipecat.frames.frames import InterruptionFrame, TTSSpeakFrame
from pipecat.processors.frameworks.rtvi.frames import RTVIClientMessageFrame
from pipecat.tests.utils import run_test

from benchmarks.phone_client import PhoneClient
from nabu_pipeline.devices import PAIRED, PENDING_TTL_S, REVOKED, DeviceStore
from nabu_pipeline.pairing import PairingLink, device_name, server_address
from processors.stop_phrases import STOP_MESSAGE, StopPhraseFilter

from .server_harness import ROOT, free_port, in_process
from .test_server_security import refused_status

MASTER = "master-token-for-device-tests-0123456789"
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 Chrome/131.0 Mobile"


def test_pending_token_pairs_one_device_and_revoking_stops_it(tmp_path):
    store = DeviceStore(tmp_path)
    token = store.new_pending()
    assert store.is_pending(token)
    device = store.check(token, device_name="Android Chrome")
    assert device.state == PAIRED and device.name == "Android Chrome" and device.paired
    assert not store.is_pending(token)
    assert store.check(token).id == device.id  # the same phone, next time
    assert store.check("not-a-token") is None and store.check("") is None
    assert [d.id for d in store.list()] == [device.id]
    assert store.revoke(device.id).state == REVOKED
    assert store.check(token) is None
    # Only a hash is stored: the token is nowhere in the database files.
    for path in tmp_path.iterdir():
        assert token.encode() not in path.read_bytes(), path


def test_old_pairing_links_pair_nothing(tmp_path):
    store = DeviceStore(tmp_path)
    token = store.new_pending()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE devices SET created = ?", (time.time() - PENDING_TTL_S - 60,))
    assert store.check(token) is None and not store.is_pending(token)
    store.new_pending()  # and making a new link clears it away
    assert len(store.list(include_pending=True)) == 1


def test_pairing_link_and_names():
    assert server_address("0.0.0.0", 7860, tls=True).startswith("https://")
    assert server_address("127.0.0.1", 443, tls=True) == "https://127.0.0.1"
    assert server_address("::1", 7860, tls=False) == "http://[::1]:7860"
    assert server_address("x", 1, tls=False, public_url="https://nabu.example.org/") == (
        "https://nabu.example.org"
    )
    link = PairingLink("https://nabu.example.org/#pair=abc")
    assert link.svg().startswith("<svg") and "Pairing link" in link.svg()
    assert any(block in link.terminal() for block in "█▀▄")
    assert device_name(ANDROID) == "Android Chrome"


async def test_stop_button_message_interrupts_and_says_okay():
    stop = StopPhraseFilter(("stop",), "Okay.")
    down, _ = await run_test(
        stop,
        frames_to_send=[RTVIClientMessageFrame(msg_id="1", type=STOP_MESSAGE, data=None)],
        expected_down_frames=[InterruptionFrame, TTSSpeakFrame],
    )
    assert down[-1].text == "Okay."
    # Other client messages pass by untouched.
    other = RTVIClientMessageFrame(msg_id="2", type="something-else", data=None)
    down, _ = await run_test(
        StopPhraseFilter(("stop",)),
        frames_to_send=[other],
        expected_down_frames=[RTVIClientMessageFrame],
    )


def nabu(*args: str, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nabu_pipeline.cli", *args],
        env={**os.environ, "NABU_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


async def test_device_tokens_connect_until_revoked(config_for, tmp_path):
    get = lambda *a, **k: asyncio.to_thread(httpx.get, *a, timeout=5, **k)  # noqa: E731
    with in_process(config_for(None), token=MASTER) as srv:
        data_dir = srv.server.settings.data_path
        # Only the master token gets a pairing link.
        assert (await get(f"{srv.http}/pairing")).status_code == 401
        wrong = {"Authorization": "Bearer wrong-token-0123456789abcdef"}
        assert (await get(f"{srv.http}/pairing", headers=wrong)).status_code == 401
        master = {"Authorization": f"Bearer {MASTER}"}
        link = (await get(f"{srv.http}/pairing", headers=master)).json()["url"]
        token = link.split("#pair=")[1]
        again = (await get(f"{srv.http}/pairing", headers=master)).json()["url"]
        assert again == link  # the same link until a phone uses it

        async with PhoneClient(srv.ws(token=token)) as phone:
            assert phone.of("bot-ready")
        after = (await get(f"{srv.http}/pairing", headers=master)).json()["url"]
        assert after != link  # used: the desk page shows a fresh one

        listed = await asyncio.to_thread(nabu, "devices", "list", data_dir=data_dir)
        assert listed.returncode == 0 and "paired" in listed.stdout, listed
        assert token not in listed.stdout
        revoked = await asyncio.to_thread(nabu, "devices", "revoke", "1", data_dir=data_dir)
        assert revoked.returncode == 0 and "Revoked device 1" in revoked.stdout, revoked
        assert await refused_status(srv.ws(token=token)) == 401
        missing = await asyncio.to_thread(nabu, "devices", "revoke", "99", data_dir=data_dir)
        assert missing.returncode == 2 and "no device with id 99" in missing.stderr


@pytest.mark.slow
def test_serve_over_https_with_a_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "nabu_pipeline.cli", "serve", "--port", str(port),
         "--certfile", str(cert), "--keyfile", str(key)],
        cwd=ROOT,
        env={**os.environ, "NABU_DATA_DIR": str(tmp_path / "data")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=str(cert), timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None and health.json()["status"] == "ok", tmp_path / "serve.log"
        page = httpx.get(f"https://127.0.0.1:{port}/", verify=str(cert), timeout=5)
        assert page.status_code == 200 and "manifest.webmanifest" in page.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on that port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    assert "Serving on https://" in (tmp_path / "serve.log").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "nabu_pipeline.cli", "serve", "--certfile", str(cert),
         "--keyfile", str(tmp_path / "missing.pem")],
        cwd=ROOT,
        env={**os.environ, "NABU_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "TLS private key not found" in bad.stderr, bad.stderr
