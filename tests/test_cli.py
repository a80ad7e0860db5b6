"""The `nabu` command's first minute: mistakes are one sentence and exit 2, found before any
model loads; `--help` describes every flag and is not preceded by pipecat's banner."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from .conftest import ROOT

DEMO = ROOT / "nabu_pipeline" / "demo" / "what_time_is_it.wav"


def nabu(*args: str, env: dict | None = None, code: str | None = None, timeout: float = 120):
    """Run the real command line in a fresh interpreter, as a user would."""
    import os

    full_env = {**os.environ, **(env or {})}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "nabu_pipeline.cli"]
    started = time.monotonic()
    proc = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )
    proc.elapsed_s = time.monotonic() - started
    return proc


def one_sentence(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Pipecat 1.14" not in proc.stderr  # no banner, no model loaded
    return proc.stderr


@pytest.mark.parametrize("command", [[], ["talk"], ["serve"], ["mic"], ["bench"]])
def test_help_without_the_banner(command):
    proc = nabu(*command, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: nabu")
    assert "Pipecat 1." not in proc.stdout + proc.stderr and not proc.stderr


def test_every_flag_has_a_description():
    import argparse

    from nabu_pipeline.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("nabu", parser), *subparsers.choices.items()]:
        assert sub.description or name == "nabu"
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help.split()) >= 3, (name, action.dest)


def test_talk_help_says_input_repeats_and_what_speed_does():
    out = nabu("talk", "--help").stdout
    assert "repeat --input" in out
    assert "faster than real time" in out


def test_output_without_wav_extension_is_refused_first(tmp_path):
    err = one_sentence(nabu("talk", "--input", str(DEMO), "--output", str(tmp_path / "reply")))
    assert "must end in .wav" in err and "reply.wav" in err


def test_output_that_cannot_be_written_is_refused_first(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    err = one_sentence(nabu("talk", "--input", str(DEMO), "--output", str(blocker / "r.wav")))
    assert "cannot be written" in err and "is a file, not a folder" in err
    err = one_sentence(nabu("talk", "--input", str(DEMO), "--output", str(tmp_path)))
    assert "is a directory" in err
    assert not list(tmp_path.glob("*.wav"))


def test_bad_log_level_on_the_command_line_and_in_the_environment(tmp_path):
    out = str(tmp_path / "o.wav")
    err = one_sentence(nabu("--log-level", "LOUD", "talk", "--input", str(DEMO), "--output", out))
    assert "'LOUD' is not a log level" in err and "WARNING" in err
    proc = nabu("talk", "--input", str(DEMO), "--output", out, env={"NABU_LOG_LEVEL": "chatty"})
    assert "NABU_LOG_LEVEL 'chatty' is not a log level" in one_sentence(proc)


def test_config_key_named_like_an_internal_argument(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("source: mine\nstt:\n  modle: base\n")
    proc = nabu(
        "talk", "--input", str(DEMO), "--output", str(tmp_path / "o.wav"), "--config", str(config)
    )
    err = one_sentence(proc)
    assert "source: unknown key; allowed: stt, guard, llm" in err
    assert "multiple values" not in err


@pytest.mark.parametrize(("port", "says"), [("99999", "from 1 to 65535"), ("0", "from 1 to 65535")])
def test_serve_refuses_a_port_out_of_range(port, says):
    proc = nabu("serve", "--port", port)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


def test_serve_reports_a_port_in_use_before_loading_models():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = nabu("serve", "--port", str(port))
    err = one_sentence(proc)
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "Whisper" not in err  # refused before the models load


def test_mic_without_pyaudio_gives_one_message_with_the_right_command():
    """PyAudio absent (as on a fresh install): one line, the checkout's extra, not the
    unrelated `nabu` project on the package index, and no second fix from pipecat."""
    code = (
        "import sys; sys.modules['pyaudio'] = None\n"  # what a missing package looks like
        "from nabu_pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    err = one_sentence(nabu("mic", code=code))
    assert "pip install -e '.[mic]'" in err and "portaudio19-dev" in err
    assert "uv add" not in err and "'nabu[mic]'" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


@pytest.mark.slow
async def test_a_failed_final_write_keeps_the_printed_conversation(tmp_path, config_for):
    """If the output cannot be written at the end (a full disk, a vanished folder; here a name
    soundfile cannot write), the conversation that ran is still printed."""
    from nabu_pipeline.talk import format_result, talk

    result = await talk(config_for(None), [DEMO], tmp_path / "reply")
    text = format_result(result)
    assert "You said:  What time is it?" in text, text
    assert "Nabu said: It's" in text, text
    assert f"Could not write Nabu's speech to {tmp_path / 'reply'}" in text
    assert "Wrote" not in text
