"""Warren's phone app (nabu_pipeline/web/app.*) in real headless Chromium, against `nabu serve`.

Playwright drives Debian's Chromium (no browser download) at a phone's size, with Chromium's
fake microphone playing a WAV. The server is the real `nabu serve` process (killed with SIGKILL
and restarted mid-conversation), the LLM a real OpenAI-protocol server (scripted_llm), Whisper and
Piper the real models. axe-core (npm, tests/webclient) checks accessibility in the page.

Screenshots of each state go to $NABU_SCREENSHOTS when set (tests/report/screenshots/ holds the
committed ones), else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

from .server_harness import ROOT, cli_process, free_port

playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")

CHROMIUM = next(
    (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
)
AXE = ROOT / "tests" / "webclient" / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 412, "height": 915}  # CSS pixels of a common Android phone (Pixel 7)
MASTER = "master-token-for-the-phone-app-0123456789"
QUESTION = "Is the front door locked?"
FIRST_REPLY = "Yes, the front door is locked. The porch light is on."
SECOND_REPLY = "The back door is locked too."
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or not AXE.is_file(),
    reason="needs Chromium and `npm ci` in tests/webclient (.ci/run does both)",
)


def spoken_question(
    out: Path, lead_s: float = 3.0, tail_s: float = 150.0, text: str = QUESTION
) -> None:
    """espeak-ng says `text`, padded with silence (Chromium loops the fake microphone file)."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "135", "-w", str(raw), text],
        check=True,
        timeout=60,
    )
    audio, rate = sf.read(str(raw), dtype="float32")
    pad = lambda s: np.zeros(int(rate * s), dtype=np.float32)  # noqa: E731
    sf.write(str(out), np.concatenate([pad(lead_s), audio * 0.8, pad(tail_s)]), rate)


def asks_no_part(tmp_path: Path) -> Path:
    """A config under which Nabu never asks about one doubted word (`guard.word_probability_min`
    0). These tests are about the app; espeak-ng's "front door locked" runs "door" into
    "locked", Whisper doubts "door" (0.29-0.39 here, 0.35 is the line) and Nabu rightly asks
    "Is the front what locked?" (tests/test_partial_repair.py tests that)."""
    path = tmp_path / "asks-no-part.yaml"
    path.write_text("guard:\n  word_probability_min: 0\n")
    return path


def screenshots_dir(tmp_path: Path) -> Path:
    path = Path(os.environ["NABU_SCREENSHOTS"]) if os.environ.get("NABU_SCREENSHOTS") else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def open_app(pw, srv, profile: Path, mic: Path | None):
    """The phone app at `srv`'s `/` in a phone-sized Chromium, loaded."""
    browser = launch(pw, profile, mic)
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.goto(f"{srv.http}/")
    wait_for(page, "ev.some(e => e.type === 'loaded')", 30, "app loaded")
    return page


def launch(pw, profile: Path, mic: Path | None):
    """A phone-sized Chromium; a persistent profile, since incognito apps are not installable."""
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run"]
    if mic is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
        ]
    else:  # the microphone prompt is answered "Block", as Warren might
        args += ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]
    return pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=args,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        reduced_motion="reduce",  # screenshots without a pulse caught mid-way
    )


def events(page) -> list[dict]:
    return page.evaluate("window.nabuEvents")


def wait_for(page, predicate_js: str, timeout_s: float, what: str) -> None:
    """Wait for a JS condition over `nabuEvents` (as `ev`) and the page; say what it saw if not."""
    try:
        page.wait_for_function(
            f"() => {{ const ev = window.nabuEvents || []; return {predicate_js}; }}",
            timeout=timeout_s * 1000,
            polling=200,
        )
    except playwright.TimeoutError:
        kinds = [e["type"] for e in events(page)]
        raise AssertionError(f"{what}: not within {timeout_s}s; events {kinds}") from None


def count(page, kind: str) -> int:
    return sum(1 for e in events(page) if e["type"] == kind)


def axe_violations(page) -> list[dict]:
    """axe-core's WCAG 2.0-2.2 A/AA and best-practice rules on the page as it is now."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async (tags) => { const r = await axe.run(document,"
        " {runOnly: {type: 'tag', values: tags}});"
        " return {violations: r.violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' '))})), passes: r.passes.length}; }",
        AXE_TAGS,
    )
    print(f"  axe-core: {len(result['violations'])} violations, {result['passes']} rules passed")
    return result["violations"]


def shot(page, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def replies(messages: list[dict]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    return FIRST_REPLY if len(users) <= 1 else SECOND_REPLY


@pytest.mark.slow
@needs_browser
def test_phone_app_pairs_answers_and_survives_a_server_restart(tmp_path):
    shots = screenshots_dir(tmp_path)
    mic = tmp_path / "question.wav"
    spoken_question(mic)
    port = free_port()
    log = tmp_path / "serve.log"
    report: list[str] = []
    with ScriptedLLMServer(Script(reply=replies, ttft_s=0.2)) as llm:
        env = {
            "NABU_LLM_BASE_URL": llm.url,
            "NABU_DATA_DIR": str(tmp_path / "data"),
            "NABU_AUTH_TOKEN": MASTER,
            "NABU_CONFIG": str(asks_no_part(tmp_path)),
        }
        with playwright.sync_playwright() as pw:
            browser = launch(pw, tmp_path / "profile", mic)
            page = browser.pages[0] if browser.pages else browser.new_page()
            with cli_process(env, log, port=port) as srv:
                # Pairing: only the master token may ask for a link; the link carries another.
                assert httpx.get(f"{srv.http}/pairing", timeout=10).status_code == 401
                pairing = httpx.get(
                    f"{srv.http}/pairing", headers={"Authorization": f"Bearer {MASTER}"}, timeout=10
                ).json()
                link = pairing["url"]
                assert link.startswith(f"{srv.http}/#pair=") and "<svg" in pairing["svg"]
                # The desk page shows the same link and its QR code once given the master token.
                desk = browser.new_page()
                desk.goto(f"{srv.http}/desk")
                desk.fill("#token", MASTER)
                desk.click("#pair-refresh")
                desk.wait_for_selector("#pair-qr svg", timeout=30000)
                assert desk.inner_text("#pair-url") == link
                desk.locator("#pairing").screenshot(
                    path=str(shots / "desk-pairing.png"), mask=[desk.locator("#pair-url")]
                )
                desk.close()
                device_token = link.split("#pair=")[1]
                assert len(device_token) >= 40 and device_token != MASTER

                page.goto(link)
                wait_for(page, "ev.some(e => e.type === 'loaded')", 30, "app loaded")
                stored = page.evaluate(
                    "({token: localStorage.getItem('nabu-token'),"
                    " server: localStorage.getItem('nabu-server'), url: location.href})"
                )
                assert stored["token"] == device_token
                assert stored["server"] == srv.http
                assert "pair=" not in stored["url"] and device_token not in stored["url"]
                report.append(f"paired: token stored, address bar now {stored['url']}")

                # Installable: the browser accepts the manifest and the service worker.
                sw_state = page.evaluate(
                    "navigator.serviceWorker.ready.then(r => r.active.state === 'activated'"
                    " ? 'activated' : new Promise(ok => r.active.addEventListener("
                    "'statechange', e => e.target.state === 'activated' && ok('activated'))))"
                )
                assert sw_state == "activated", sw_state
                cdp = browser.new_cdp_session(page)
                manifest = cdp.send("Page.getAppManifest")
                assert manifest["url"].endswith("/manifest.webmanifest")
                assert not manifest["errors"], manifest["errors"]
                installability = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
                assert installability == [], installability
                report.append(
                    f"service worker {sw_state}; manifest errors {manifest['errors']}; "
                    f"installability errors {installability}"
                )

                assert page.inner_text("#status-word") == "Ready"
                assert axe_violations(page) == []
                shot(page, shots, "idle")

                page.click("#big")  # the one tap: "Start talking"
                wait_for(page, "ev.some(e => e.type === 'bot-ready')", 90, "connected")
                assert page.inner_text("#status-word") == "Listening"
                shot(page, shots, "listening")
                assert axe_violations(page) == []

                wait_for(page, "ev.some(e => e.type === 'bot-output')", 120, "first answer")
                wait_for(page, "document.body.dataset.state === 'speaking'", 30, "speaking")
                shot(page, shots, "speaking")
                assert axe_violations(page) == []
                wait_for(page, "ev.some(e => e.type === 'bot-stopped-speaking')", 60, "answered")
                heard = page.inner_text("#you-said").lower()
                assert {"front", "locked"} <= set(heard.replace(".", " ").replace("?", " ").split())
                assert page.inner_text("#nabu-said") == FIRST_REPLY
                first_audio = next(e for e in events(page) if e["type"] == "bot-stopped-speaking")[
                    "bot_audio_samples"
                ]
                assert first_audio / 24000 > 2.0, first_audio
                session = page.evaluate("localStorage.getItem('nabu-session')")
                assert session
                report.append(
                    f"Q1 heard {heard!r}; answered {FIRST_REPLY!r} "
                    f"({first_audio / 24000:.1f}s of audio); session {session[:8]}"
                )

                # Kill the server mid-conversation: no goodbye, the socket just dies.
                srv.process.send_signal(signal.SIGKILL)
                srv.process.wait(10)
                wait_for(page, "document.body.dataset.state === 'reconnecting'", 30, "reconnecting")
                report.append(f"server killed; page: {page.inner_text('#status-word')!r}")
                wait_for(
                    page,
                    "ev.some(e => e.type === 'problem' && e.kind === 'unreachable')",
                    60,
                    "unreachable advice",
                )
                shot(page, shots, "reconnecting")
                assert axe_violations(page) == []
                report.append(
                    "page while the server is down: "
                    + " | ".join(page.inner_text(s) for s in ("#status-word", "#problem-title"))
                )
            ready_before = count(page, "bot-ready")
            with cli_process(env, log, port=port) as srv:
                wait_for(
                    page,
                    f"ev.filter(e => e.type === 'bot-ready').length > {ready_before}",
                    120,
                    "reconnected",
                )
                resumed = [
                    e["data"]
                    for e in events(page)
                    if e["type"] == "server-message" and e["data"].get("type") == "nabu-session"
                ]
                assert resumed[-1]["session"] == session, resumed
                assert resumed[-1]["resumed"] is True and resumed[-1]["messages"] >= 2
                assert "Connected again" in page.inner_text("#status-detail")
                report.append(
                    f"reconnected: session {resumed[-1]['session'][:8]} resumed with "
                    f"{resumed[-1]['messages']} messages; page says "
                    f"{page.inner_text('#status-detail')!r}"
                )
                wait_for(
                    page,
                    "ev.filter(e => e.type === 'bot-stopped-speaking').length >= 2",
                    150,
                    "second answer",
                )
                assert page.inner_text("#nabu-said") == SECOND_REPLY
                last = llm.requests[-1].messages
                said = json.dumps(last).lower()
                assert "front" in said and FIRST_REPLY.lower() in said, last
                report.append(
                    f"Q2 after restart answered {SECOND_REPLY!r}; the LLM saw the first "
                    f"exchange ({len(last)} messages)"
                )

                # The Stop button does what saying "stop" does: Nabu stops and says "Okay."
                outputs = count(page, "bot-output")
                page.click("#stop")
                wait_for(
                    page,
                    f"ev.filter(e => e.type === 'bot-output').length > {outputs}"
                    " && ev[ev.length - 1].type !== 'stop-pressed'"
                    " && ev.filter(e => e.type === 'bot-output').pop().text === 'Okay.'",
                    60,
                    "Stop acknowledged",
                )
                report.append("Stop button: Nabu said 'Okay.'")

                # In the background the microphone is released and the connection closed.
                page.evaluate(
                    "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
                    "document.dispatchEvent(new Event('visibilitychange'))"
                )
                wait_for(page, "document.body.dataset.state === 'paused'", 20, "backgrounded")
                deadline_ok = False
                for _ in range(100):
                    if srv.health()["sessions"] == 0:
                        deadline_ok = True
                        break
                    page.wait_for_timeout(200)
                assert deadline_ok, "server still has the session after the app went background"
                page.evaluate(
                    "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
                    "document.dispatchEvent(new Event('visibilitychange'))"
                )
                ready_before = count(page, "bot-ready")
                wait_for(
                    page,
                    f"ev.filter(e => e.type === 'bot-ready').length > {ready_before}",
                    60,
                    "back from background",
                )
                report.append("background: session closed on the server; back: reconnected")
            browser.close()
    server_log = log.read_text(errors="replace")
    assert device_token not in server_log and MASTER not in server_log
    assert "Device 1 (" in server_log
    print("\nPhone app in Chromium:\n  " + "\n  ".join(report))


@pytest.mark.slow
@needs_browser
def test_phone_app_says_what_to_do_when_the_microphone_is_refused(tmp_path):
    shots = screenshots_dir(tmp_path)
    with (
        ScriptedLLMServer(Script(reply=FIRST_REPLY)) as llm,
        cli_process(
            {"NABU_LLM_BASE_URL": llm.url, "NABU_DATA_DIR": str(tmp_path / "data")},
            tmp_path / "serve.log",
        ) as srv,
        playwright.sync_playwright() as pw,
    ):
        page = open_app(pw, srv, tmp_path / "profile", None)
        page.click("#big")
        wait_for(page, "ev.some(e => e.type === 'problem')", 30, "microphone problem")
        problem = next(e for e in events(page) if e["type"] == "problem")
        assert problem["kind"] == "microphone", problem
        assert page.inner_text("#problem-title") == "Nabu can't hear you"
        assert "Allow" in page.inner_text("#problem-text")
        assert page.inner_text("#big-label") == "Try again now"
        shot(page, shots, "microphone-refused")
        assert axe_violations(page) == []
        # Text that scales (WCAG 1.4.4): at twice the phone's text size nothing runs off the side.
        page.evaluate("document.documentElement.style.fontSize = '200%'")
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{wide}px wider than the phone at 200% text"
        shot(page, shots, "microphone-refused-200pc-text")
        assert srv.health()["sessions"] == 0  # nothing connected without a microphone
        page.context.close()


@pytest.mark.slow
@needs_browser
def test_hold_to_talk_hears_only_while_the_button_is_held(tmp_path):
    """A noisy room: what is said while the button is up never reaches Nabu."""
    ignored, asked = tmp_path / "ignored.wav", tmp_path / "asked.wav"
    spoken_question(ignored, lead_s=3.0, tail_s=14.0, text="Turn on the kitchen radio.")
    spoken_question(asked, lead_s=0.0, tail_s=150.0)
    a, rate = sf.read(str(ignored), dtype="float32")
    b, _ = sf.read(str(asked), dtype="float32")
    mic = tmp_path / "mic.wav"
    sf.write(str(mic), np.concatenate([a, b]), rate)  # kitchen radio at ~3 s, question at ~19 s
    with (
        ScriptedLLMServer(Script(reply=FIRST_REPLY, ttft_s=0.2)) as llm,
        cli_process(
            {
                "NABU_LLM_BASE_URL": llm.url,
                "NABU_DATA_DIR": str(tmp_path / "data"),
                "NABU_CONFIG": str(asks_no_part(tmp_path)),
            },
            tmp_path / "serve.log",
        ) as srv,
        playwright.sync_playwright() as pw,
    ):
        page = open_app(pw, srv, tmp_path / "profile", mic)
        page.click("text=Hold to talk")
        page.click("#big")
        wait_for(page, "ev.some(e => e.type === 'bot-ready')", 90, "connected")
        assert page.inner_text("#big-label") == "Hold to talk"
        assert page.inner_text("#status-word") == "Ready"
        page.wait_for_timeout(13000)  # the kitchen radio plays to a closed microphone
        assert count(page, "user-transcription") == 0, events(page)
        box = page.locator("#big").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        wait_for(page, "document.body.dataset.state === 'listening'", 10, "held")
        assert page.inner_text("#big-label").startswith("Listening")
        page.wait_for_timeout(12000)  # the question, spoken while holding
        page.mouse.up()
        wait_for(page, "ev.some(e => e.type === 'bot-stopped-speaking')", 120, "answered")
        heard = page.inner_text("#you-said").lower()
        assert "locked" in heard and "kitchen" not in heard and "radio" not in heard, heard
        assert page.inner_text("#nabu-said") == FIRST_REPLY
        sent = json.dumps(
            [m for r in llm.requests for m in r.messages if m["role"] == "user"]
        ).lower()
        assert len(llm.requests) == 1 and "locked" in sent and "kitchen" not in sent
        print(f"\nHold to talk: heard only {heard!r} (the radio before the hold was not sent)")
        page.context.close()


@pytest.mark.slow
@needs_browser
def test_server_closing_a_quiet_session_goes_unnoticed(tmp_path):
    """Nothing times out on Warren: the server's idle close is followed by a silent resume."""
    mic = tmp_path / "silence.wav"
    sf.write(str(mic), np.zeros(16000 * 60, dtype=np.float32), 16000)
    config = tmp_path / "quick-idle.yaml"
    config.write_text("server:\n  session_idle_timeout_s: 3\n")
    with (
        ScriptedLLMServer(Script(reply=FIRST_REPLY)) as llm,
        cli_process(
            {"NABU_LLM_BASE_URL": llm.url, "NABU_DATA_DIR": str(tmp_path / "data")},
            tmp_path / "serve.log",
            "--config",
            str(config),
        ) as srv,
        playwright.sync_playwright() as pw,
    ):
        page = open_app(pw, srv, tmp_path / "profile", mic)
        page.click("#big")
        wait_for(
            page,
            "ev.filter(e => e.type === 'bot-ready').length >= 3",
            120,
            "two idle closes, each resumed",
        )
        sessions = {
            e["data"]["session"]
            for e in events(page)
            if e["type"] == "server-message" and e["data"].get("type") == "nabu-session"
        }
        states = [e["state"] for e in events(page) if e["type"] == "state"]
        assert len(sessions) == 1, sessions
        assert count(page, "disconnected") >= 2
        assert "reconnecting" not in states and "problem" not in states, states
        assert page.inner_text("#status-word") == "Listening"
        print(f"\nIdle closes: {count(page, 'disconnected')}, states shown {states}")
        page.context.close()
    assert "nobody spoke for 3s" in (tmp_path / "serve.log").read_text()
