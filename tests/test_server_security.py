"""`nabu serve` admission: token, origins, session ids, health and page; nothing here talks."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from benchmarks.phone_client import PhoneClient
from nabu_pipeline.server import auth_token_for, is_loopback, token_matches

from .server_harness import ROOT, in_process

TOKEN = "unit-test-token-0123456789abcdef"


@pytest.fixture
def secured(config_for):
    config = config_for(None, server={"allowed_origins": ["https://nabu.example.org"]})
    with in_process(config, token=TOKEN) as srv:
        yield srv


async def refused_status(url: str, **headers) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers or None):
            pass
    return refused.value.response.status_code


async def test_token_is_required_and_checked(secured):
    assert await refused_status(secured.ws()) == 401
    assert await refused_status(secured.ws(token="wrong-token-0123456789abcdef")) == 401
    assert await refused_status(secured.ws(token=TOKEN[:-1])) == 401
    async with PhoneClient(secured.ws(token=TOKEN)) as phone:
        assert phone.of("bot-ready") and phone.session_info["resumed"] is False
    # Native apps may send it as a bearer header instead.
    bearer = PhoneClient(secured.ws())
    await bearer.open(Authorization=f"Bearer {TOKEN}")
    await bearer.close()


async def test_origins(secured):
    url = secured.ws(token=TOKEN)
    assert await refused_status(url, Origin="https://evil.example.com") == 403
    for origin in ("https://nabu.example.org", secured.http):  # allowed, and the page's own
        phone = PhoneClient(url)
        await phone.open(Origin=origin)
        await phone.close()


async def test_session_ids_are_checked(secured):
    phone = PhoneClient(secured.ws(token=TOKEN, session="../etc"))
    await phone.open(ready=False, mic=False)
    await phone.wait_until(lambda: phone.closed, 10, "close")
    assert phone.close_code == 1008 and "session ids are" in phone.errors()[0]


def test_health_and_page(secured):
    assert secured.health() == {"status": "ok", "sessions": 0, "max_sessions": 4}
    page = httpx.get(f"{secured.http}/", timeout=5)
    assert page.status_code == 200 and "nabu-client.js" in page.text
    js = httpx.get(f"{secured.http}/nabu-client.js", timeout=5)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "PipecatClient" in js.text and "WavMediaManager" in js.text


def test_token_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("::")
    assert auth_token_for("127.0.0.1", {}) is None
    assert auth_token_for("0.0.0.0", {"NABU_AUTH_TOKEN": TOKEN}) == TOKEN
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN + "x", TOKEN)


@pytest.mark.parametrize(
    ("env", "needle"),
    [({}, "NABU_AUTH_TOKEN"), ({"NABU_AUTH_TOKEN": "short"}, "too short")],
)
def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, env, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "nabu_pipeline.cli", "serve", "--host", "0.0.0.0"],
        cwd=tmp_path,  # no .env of the developer's
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


async def test_idle_session_is_closed_and_can_resume(config_for):
    with in_process(config_for(None, server={"session_idle_timeout_s": 2})) as srv:
        phone = PhoneClient(srv.ws(session="idle-session-01"))
        await phone.open()
        await phone.wait_until(lambda: phone.closed, 15, "idle close")
        await phone.close()
        async with PhoneClient(srv.ws(session="idle-session-01")) as again:
            assert again.session_info["session"] == "idle-session-01"
