"""`nabu mic` through a microphone and a speaker: virtual ones, on a machine with no sound card.

A private PulseAudio server (tests/virtual_sound.py) gives the real `nabu mic` process a
speaker and a microphone through PortAudio, ALSA and ALSA's pulse plugin, as on a desktop.
Warren's recorded question is played into the room; Nabu's answer is recorded off the
speaker and transcribed back with Whisper; the speaker's sound is looped back into the
microphone at a laptop's level, so Nabu's own voice reaches its microphone while it talks.
The LLM is the local OpenAI-protocol server (nabu_pipeline/scripted_llm.py).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nabu_pipeline.scripted_llm import DEFAULT_REPLY, Script, ScriptedLLMServer
from transports.local_mic import NO_DEVICES

from .conftest import CLIPS, transcribe
from .virtual_sound import missing_tools, virtual_sound, write_wav

NABU = [sys.executable, "-m", "nabu_pipeline.cli"]
QUESTION = CLIPS / "goforward.wav"  # "Go forward ten meters." (licence: benchmarks/clips)
# A laptop's speaker reaches its own microphone about 10 dB down, 40 ms later.
ECHO_LEVEL = 0.3
ECHO_DELAY_MS = 40
STARTUP_TIMEOUT_S = 240.0
DEVICES = ("--input-device", "pulse", "--output-device", "pulse")
REPLY_TIMEOUT_S = 180.0

needs_virtual_sound = pytest.mark.skipif(
    bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (.ci/run installs them)"
)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NABU, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def _pyaudio_missing() -> bool:
    try:
        import pyaudio  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(_pyaudio_missing(), reason="needs PyAudio (pip install -e '.[mic]')")
def test_without_sound_devices_one_sentence_names_the_alternatives(tmp_path):
    if Path("/dev/snd").exists():
        pytest.skip("this machine has sound hardware")
    # No PulseAudio either: the server named here does not exist.
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path / 'nothing'}"}
    expected = "nabu: " + NO_DEVICES.format(what="microphone or speaker")
    for args in (["mic"], ["mic", "--list-devices"]):
        result = _run(args, env)
        assert result.returncode == 2, result
        # Exactly one sentence: no PortAudio, ALSA or JACK chatter, no traceback.
        assert result.stderr.strip() == expected, result.stderr
        assert result.stdout == ""
    assert "nabu serve" in expected and "nabu talk" in expected


@needs_virtual_sound
def test_devices_are_listed_and_chosen_by_number_or_name(tmp_path):
    with virtual_sound(tmp_path / "sound") as sound:
        listed = _run(["mic", "--list-devices"], sound.env)
        assert listed.returncode == 0, listed.stderr
        assert "Microphones (input):" in listed.stdout
        assert "Speakers (output):" in listed.stdout
        assert " pulse " in listed.stdout, listed.stdout

        unknown = _run(["mic", "--input-device", "no such mic"], sound.env)
        assert unknown.returncode == 2
        assert "No microphone is called 'no such mic'" in unknown.stderr
        assert "--list-devices" in unknown.stderr

        number = _run(["mic", "--output-device", "99"], sound.env)
        assert number.returncode == 2
        assert "There is no speaker number 99" in number.stderr

        # The same choice from the config file's `mic` section.
        config = tmp_path / "mic.yaml"
        config.write_text('mic:\n  input_device: "the attic"\n')
        configured = _run(["mic", "--config", str(config)], sound.env)
        assert configured.returncode == 2
        assert "No microphone is called 'the attic'" in configured.stderr
        assert "Traceback" not in unknown.stderr + number.stderr + configured.stderr


class _Lines:
    """The lines a process prints, read as they come."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    def wait_for(self, text: str, timeout_s: float, *, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._new:
            while sum(text in line for line in self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._new.wait(min(left, 1.0))
        return True

    def text(self) -> str:
        return "\n".join(self.lines)


def _converse(tmp_path: Path, *, echo_cancellation: bool, settle_s: float):
    """Run `nabu mic`, ask one question, wait for the answer, Ctrl-C; return what happened."""
    data = tmp_path / "data"
    config = tmp_path / "nabu.yaml"
    config.write_text(f"audio:\n  echo_cancellation: {str(echo_cancellation).lower()}\n")
    with (
        ScriptedLLMServer(Script(ttft_s=0.05, tokens_per_s=200)) as llm,
        virtual_sound(tmp_path / "sound") as sound,
    ):
        sound.echo_into_microphone(level=ECHO_LEVEL, delay_ms=ECHO_DELAY_MS)
        heard = sound.record("speaker.monitor", "heard")
        microphone = sound.record("room.monitor", "microphone")
        env = {**sound.env, "NABU_LLM_BASE_URL": llm.url, "NABU_DATA_DIR": str(data)}
        log = (tmp_path / "nabu.log").open("w")
        process = subprocess.Popen(
            [*NABU, "mic", "--config", str(config), *DEVICES],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        out = _Lines(process.stdout)
        try:
            assert out.wait_for("Listening on 'pulse'", STARTUP_TIMEOUT_S), out.text()
            time.sleep(1.0)
            sound.play_into_room(QUESTION).wait(30)
            # A turn is printed once Nabu has finished answering it (or was cut off).
            assert out.wait_for("Latency:", REPLY_TIMEOUT_S), out.text()
            time.sleep(settle_s)
            process.send_signal(signal.SIGINT)
            returncode = process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            log.close()
        heard_pcm = heard.stop()
        microphone_pcm = microphone.stop()
        requests = llm.user_texts()
    with sqlite3.connect(data / "conversations.sqlite3") as db:
        stored = db.execute(
            "SELECT role, content, interrupted FROM messages ORDER BY id"
        ).fetchall()
    return {
        "returncode": returncode,
        "out": out.text(),
        "log": (tmp_path / "nabu.log").read_text(errors="replace"),
        "requests": requests,
        "stored": stored,
        "heard": write_wav(tmp_path / "heard.wav", heard_pcm),
        "microphone": write_wav(tmp_path / "microphone.wav", microphone_pcm),
    }


@pytest.mark.slow
@needs_virtual_sound
def test_a_question_through_the_microphone_is_answered_through_the_speaker(tmp_path, whisper_tiny):
    """The echo case: Nabu's voice reaches its microphone and must not cut it off."""
    run = _converse(tmp_path, echo_cancellation=True, settle_s=4.0)
    heard_back = transcribe(whisper_tiny, run["heard"]).lower()
    in_microphone = transcribe(whisper_tiny, run["microphone"]).lower()
    print(
        f"\n--- nabu mic printed:\n{run['out']}\n--- heard back off the speaker (Whisper): "
        f"{heard_back!r}\n--- the microphone heard (Whisper): {in_microphone!r}\n"
        f"--- LLM asked: {run['requests']}; stored: {run['stored']}"
    )
    assert run["returncode"] == 0, run["log"][-3000:]
    assert "Turn 1" in run["out"]
    assert "forward" in run["out"].split("You said:")[1].splitlines()[0].lower()
    # The local OpenAI-protocol server's reply, whole, heard through the speaker.
    assert f"Nabu said: {DEFAULT_REPLY}" in run["out"]
    # Words tiny.en hears reliably in Piper's voice ("kettle" often comes back "cattle"),
    # from each sentence: the last one heard means the reply was not cut short.
    for words in ("minutes to boil", "cool for a moment", "set a reminder"):
        assert words in heard_back, heard_back
    # Nabu's own voice did reach its microphone...
    assert "boil" in in_microphone and "reminder" in in_microphone, in_microphone
    # ...and did not interrupt it: one question, one answer, not cut short.
    assert "Turn 2" not in run["out"], run["out"]
    assert len(run["requests"]) == 1, run["requests"]
    assert run["stored"] == [
        ("user", run["requests"][0], 0),
        ("assistant", DEFAULT_REPLY, 0),
    ], run["stored"]
    assert "Stopped. Conversation mic-" in run["out"]
    assert "kept (2 messages" in run["out"]
    assert "Traceback" not in run["log"]


@pytest.mark.slow
@needs_virtual_sound
def test_without_echo_cancellation_nabu_hears_itself(tmp_path):
    """The control: the same room with the canceller off; the echo is loud enough to matter."""
    run = _converse(tmp_path, echo_cancellation=False, settle_s=10.0)
    print(f"\n--- nabu mic printed (echo cancellation off):\n{run['out']}\nLLM: {run['requests']}")
    assert run["returncode"] == 0, run["log"][-3000:]
    cut_off = any(role == "assistant" and interrupted for role, _, interrupted in run["stored"])
    assert len(run["requests"]) > 1 or cut_off, (run["requests"], run["stored"])
