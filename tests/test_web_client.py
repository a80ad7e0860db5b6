"""The official Pipecat web client, in headless Chromium, against `nabu serve`.

The desk page `nabu serve` ships at /desk is @pipecat-ai/client-js with
@pipecat-ai/websocket-transport (bundled by esbuild into
nabu_pipeline/web/nabu-client.js) and the stock WavMediaManager. Chromium's
fake microphone plays a recording from ../shared/speech; the page logs every
RTVI event to the console, which Chromium prints to stderr.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from whisper_normalizer.english import EnglishTextNormalizer

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

from .conftest import CLIPS
from .server_harness import ROOT, cli_process

WEBCLIENT = ROOT / "tests" / "webclient"
BUNDLE = ROOT / "nabu_pipeline" / "web" / "nabu-client.js"
SPEECH = ROOT.parent / "shared" / "speech"
CHROMIUM = next(
    (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
)
EVENT = re.compile(r'nabu-event (\{.*\})"')
REPLY = "The front door is locked. The porch light is on."
NORMALISE = EnglishTextNormalizer()


def test_committed_bundle_is_built_from_its_source(tmp_path):
    """nabu-client.js is what esbuild makes from tests/webclient at the locked versions."""
    node = shutil.which("node")
    if node is None or not (WEBCLIENT / "node_modules" / "esbuild").is_dir():
        pytest.skip("needs node and `npm ci` in tests/webclient (.ci/run does both)")
    out = tmp_path / "nabu-client.js"
    subprocess.run([node, "build.mjs", str(out)], cwd=WEBCLIENT, check=True, timeout=120)
    assert out.read_bytes() == BUNDLE.read_bytes(), "run `npm run build` in tests/webclient"


def fake_microphone(clip: Path, out: Path, lead_s: float = 1.0, tail_s: float = 40.0) -> float:
    """The clip padded with silence (Chromium loops the file); returns where speech ends."""
    audio, rate = sf.read(str(clip), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    silence = np.zeros(int(rate * tail_s), dtype=np.float32)
    sf.write(str(out), np.concatenate([np.zeros(int(rate * lead_s)), mono, silence]), rate)
    return lead_s + len(mono) / rate


@contextmanager
def headless_chromium(url: str, mic: Path, profile: Path):
    """Debian's Chromium on `url`, `mic` as its microphone; yields it and its stderr lines."""
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
            "--autoplay-policy=no-user-gesture-required",
            "--enable-logging=stderr",
            "--v=0",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        yield proc, lines
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def browser_events(proc: subprocess.Popen, lines: queue.Queue, until, within_s: float):
    events = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if match := EVENT.search(line):
            events.append(json.loads(match.group(1)))
            if until(events):
                return events
    raise AssertionError(f"browser did not finish: {[e['type'] for e in events]}")


@pytest.mark.slow
def test_pipecat_web_client_in_chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    clip = SPEECH / "goforward.wav"
    if not clip.is_file():
        clip = CLIPS / "goforward.wav"  # the same recording, copied into the repo
    mic = tmp_path / "mic.wav"
    fake_microphone(clip, mic)
    token = "browser-test-token-0123456789abcdef"
    with ScriptedLLMServer(Script(reply=REPLY, ttft_s=0.2)) as llm:
        env = {
            "NABU_LLM_BASE_URL": llm.url,
            "NABU_DATA_DIR": str(tmp_path / "data"),
            "NABU_AUTH_TOKEN": token,
        }
        with cli_process(env, tmp_path / "serve.log") as srv:
            url = f"{srv.http}/desk?autostart=1&token={token}"
            with headless_chromium(url, mic, tmp_path / "profile") as (proc, lines):
                events = browser_events(
                    proc,
                    lines,
                    lambda evs: any(e["type"] == "bot-stopped-speaking" for e in evs),
                    within_s=120,
                )
            time.sleep(1.0)  # the server notices the page closing
            health = srv.health()
        log = srv.log()
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["connected", "bot-ready", "server-message"], kinds
    heard = " ".join(e["text"] for e in events if e["type"] == "user-transcription" and e["final"])
    assert {"go", "forward", "meters"} <= set(NORMALISE(heard).split()), heard
    spoken = " ".join(e["text"] for e in events if e["type"] == "bot-output" and e["spoken"])
    assert spoken == REPLY
    starts = [e for e in events if e["type"] == "bot-audio-start"]
    stopped = next(e for e in events if e["type"] == "bot-stopped-speaking")
    bot_audio_s = stopped["bot_audio_samples"] / 24000
    assert bot_audio_s > 2.0, stopped
    assert "bot-started-speaking" in kinds
    latency = starts[0]["since_voice_s"]
    assert latency is not None and 0 < latency < 4, starts
    print(
        f"\nChromium + Pipecat web client: events {sorted(set(kinds))}\n"
        f"  you said: {heard!r}\n  Nabu said: {spoken!r} ({bot_audio_s:.1f}s of 24 kHz audio)\n"
        f"  end of speech in the clip -> first bot audio in the browser: {latency:.2f}s"
    )
    assert health["sessions"] == 0
    assert token not in log and "token=***" in log  # access log and WebSocket lines redacted
