"""Shared fixtures: real models, a real OpenAI-protocol server, real speech."""

from __future__ import annotations

import asyncio
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from piper import SynthesisConfig

from nabu_pipeline.config import LocaleConfig, NabuConfig, TTSConfig, load_config
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT / "benchmarks" / "clips"
# Piper without its random variation: Warren's test sentences and Nabu's replies sound the
# same in every run, so what Whisper hears back does not change from run to run.
SAME_VOICE = {"noise_scale": 0.0, "noise_w_scale": 0.0}


def manifest() -> list[dict]:
    with (CLIPS / "manifest.tsv").open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """Tests never see the developer's keys, endpoints or data directory."""
    for var in (
        "OPENAI_API_KEY",
        "NABU_LLM_BASE_URL",
        "NABU_LLM_MODEL",
        "NABU_CONFIG",
        "NABU_AUTH_TOKEN",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NABU_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(autouse=True)
def _no_leaked_tasks():
    """Fail a test that leaves asyncio tasks running on its loop (livekit's convention)."""
    yield
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if loop.is_closed() or loop.is_running():
        return
    leaked = [t for t in asyncio.all_tasks(loop) if not t.done()]
    assert not leaked, f"leaked asyncio tasks: {leaked}"


@pytest.fixture
def llm_server():
    with ScriptedLLMServer(Script(ttft_s=0.05, tokens_per_s=200)) as server:
        yield server


@pytest.fixture(scope="session")
def whisper_tiny():
    from faster_whisper import WhisperModel

    from nabu_pipeline.models import whisper_model_path

    return WhisperModel(whisper_model_path("tiny.en"), device="cpu", compute_type="int8")


def transcribe(model, path: Path) -> str:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != 16000:
        mono = soxr.resample(mono, rate, 16000)
    if len(mono) == 0:
        return ""
    segments, _ = model.transcribe(mono, beam_size=1, language="en")
    return " ".join(s.text.strip() for s in segments).strip()


@pytest.fixture(scope="session")
def piper_voice():
    from nabu_pipeline import engines

    return engines.piper(TTSConfig())


@pytest.fixture(scope="session")
def synth(piper_voice, tmp_path_factory):
    """Speak `text` with Piper into a 16 kHz WAV (with lead-in and trailing silence)."""
    out_dir = tmp_path_factory.mktemp("speech")

    def _synth(text: str, name: str, lead_s: float = 0.5, tail_s: float = 0.3) -> Path:
        same = SynthesisConfig(**SAME_VOICE)
        pcm = b"".join(c.audio_int16_bytes for c in piper_voice.synthesize(text, syn_config=same))
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
        samples = soxr.resample(samples, piper_voice.config.sample_rate, 16000)
        samples = np.concatenate(
            [np.zeros(int(lead_s * 16000)), samples, np.zeros(int(tail_s * 16000))]
        )
        path = out_dir / f"{name}.wav"
        sf.write(str(path), samples.astype(np.float32), 16000, subtype="PCM_16")
        return path

    return _synth


def concat_wavs(paths_and_gaps: list, out: Path) -> Path:
    """Join WAVs (16 kHz mono) and silences (floats, seconds) into one file."""
    parts = []
    for item in paths_and_gaps:
        if isinstance(item, (int, float)):
            parts.append(np.zeros(int(item * 16000), dtype=np.float32))
        else:
            audio, rate = sf.read(str(item), dtype="float32")
            assert rate == 16000
            parts.append(audio if audio.ndim == 1 else audio.mean(axis=1))
    sf.write(str(out), np.concatenate(parts), 16000, subtype="PCM_16")
    return out


@pytest.fixture
def config_for(tmp_path):
    """A config pointing the LLM at `url` (or offline defaults)."""

    def _config(url: str | None = None, **sections) -> NabuConfig:
        env = dict(os.environ)
        if url:
            env["NABU_LLM_BASE_URL"] = url
        return load_config(env=env).with_changes(tts=SAME_VOICE).with_changes(**sections)

    return _config


__all__ = ["CLIPS", "LocaleConfig", "concat_wavs", "manifest", "transcribe"]


@pytest.fixture(scope="module")
def ha_core(tmp_path_factory):
    """A real Home Assistant core with the test home, one per test module (tests/home_assistant)."""
    from .home_assistant.core import HomeAssistantCore

    core = HomeAssistantCore(tmp_path_factory.mktemp("home")).start()
    yield core
    core.destroy()


@pytest.fixture
def ha(ha_core):
    """That core, running, with the test home's states reset."""
    if ha_core.proc is None:
        ha_core.start()
    ha_core.reset()
    return ha_core
