"""Models loaded once per process and shared by every session.

pipecat services load their models in `__init__`, once per instance; a server
with many sessions would load Whisper and Piper for each. Nabu loads them here
once and injects them into its service subclasses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from loguru import logger

from nabu_pipeline.config import STTConfig, TTSConfig
from nabu_pipeline.models import Device, choose_device, piper_voice_dir, whisper_model_path

C = TypeVar("C", STTConfig, TTSConfig)
T = TypeVar("T")

_lock = threading.Lock()
_whisper: dict[tuple, tuple] = {}
_piper: dict[tuple, object] = {}
_smart_turn: list = []


@dataclass(frozen=True)
class LoadedWhisper:
    model: object
    path: str
    device: Device


def _load_whisper_model(path: str, device: Device, cpu_threads: int):
    from nabu_pipeline.whisper_model import ScoringWhisperModel

    return ScoringWhisperModel(
        path, device=device.device, compute_type=device.compute_type, cpu_threads=cpu_threads
    )


def _warm_up_whisper(model) -> None:
    """Run one tiny decode so the first real turn does not pay for lazy init (or CUDA libs)."""
    import numpy as np

    segments, _ = model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=1, language="en")
    list(segments)


def whisper(config: STTConfig) -> LoadedWhisper:
    """The shared faster-whisper model for this config, loaded on first use.

    On a GPU machine whose CUDA 12 libraries are missing (libcublas.so.12,
    cuDNN 9), CTranslate2 fails at load or first decode; Nabu then falls back
    to the CPU with one warning instead of crashing.
    """
    key = (config.model, config.device, config.compute_type, config.cpu_threads)
    with _lock:
        if key in _whisper:
            return _whisper[key]
        path = whisper_model_path(config.model)
        device = choose_device(config.device, config.compute_type)
        start = time.perf_counter()
        try:
            model = _load_whisper_model(path, device, config.cpu_threads)
            _warm_up_whisper(model)
        except Exception as e:
            if device.device != "cuda":
                raise
            logger.warning(
                f"Whisper: CUDA unusable ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                "falling back to CPU int8. Install nvidia-cublas-cu12 and nvidia-cudnn-cu12 "
                "for GPU inference."
            )
            device = Device("cpu", "int8", "CUDA libraries failed to load")
            model = _load_whisper_model(path, device, config.cpu_threads)
            _warm_up_whisper(model)
        logger.info(
            f"Whisper {config.model} loaded on {device.device}/{device.compute_type} "
            f"({device.reason}) in {time.perf_counter() - start:.2f}s"
        )
        loaded = LoadedWhisper(model=model, path=path, device=device)
        _whisper[key] = loaded
        return loaded


def piper(config: TTSConfig):
    """The shared PiperVoice for this config, loaded and warmed on first use."""
    key = (config.voice, config.voice_dir, config.use_cuda)
    with _lock:
        if key in _piper:
            return _piper[key]
        from piper import PiperVoice

        directory = piper_voice_dir(config.voice, config.voice_dir)
        start = time.perf_counter()
        model = directory / f"{config.voice}.onnx"
        if config.use_cuda:
            voice = PiperVoice.load(model, use_cuda=True)
        else:
            voice = _piper_on_cpu(model)
        for _ in voice.synthesize("Hello."):
            pass
        logger.info(f"Piper {config.voice} loaded in {time.perf_counter() - start:.2f}s")
        _piper[key] = voice
        return voice


def _piper_on_cpu(model):
    """Piper as `PiperVoice.load` makes it, but ONNX Runtime's threads sleep between ops.

    By default they spin-wait, which pays on an idle machine and costs on a loaded one: a
    spinning thread keeps other work off its core and a preempted one holds the other up at
    each op. First audio of `nabu bench`'s first sentence, 2 cores: alone 0.128 -> 0.137 s,
    one core 15% busy 0.154 -> 0.149 s, half busy 0.152 -> 0.136 s; inside one quiet
    conversation no difference (medians 0.162 / 0.169 s, means 0.167 / 0.164 s). Kept for a
    server shared by conversations or with Home Assistant (docs/RESULTS.md, issue 18)."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with open(f"{model}.json", encoding="utf-8") as f:
        voice_config = PiperConfig.from_dict(json.load(f))
    session = onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=voice_config)


def smart_turn():
    """pipecat's bundled smart-turn v3 (ONNX, CPU), loaded once: `predict(float32 16 kHz
    audio) -> probability that the speaker has finished`. ~35 ms per call here, one thread."""
    with _lock:
        if not _smart_turn:
            from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

            start = time.perf_counter()
            analyzer = LocalSmartTurnAnalyzerV3()
            analyzer.set_sample_rate(16000)
            logger.info(f"smart-turn v3 loaded in {time.perf_counter() - start:.2f}s")
            _smart_turn.append(analyzer)
        analyzer = _smart_turn[0]

    def predict(audio) -> float:
        # pipecat's analyzer keeps per-stream state in its public methods; the model call
        # itself is stateless and shared (ONNX Runtime sessions run concurrently).
        return float(analyzer._predict_endpoint(audio)["probability"])

    return predict


def local_or_none(load: Callable[[C], T], config: C) -> T | None:
    """The shared local model (`whisper` or `piper`), or None when the fallback is to be used.

    The one place that decides what a local model that will not load means: with
    `fallback: openai` configured the caller uses the fallback (one warning says
    so); without one the error goes on to the caller. Each call tries to load
    again, so a session started after the cause is mended gets the local model.
    """
    try:
        return load(config)
    except Exception as e:
        if config.fallback != "openai":
            raise
        logger.warning(
            f"{load.__name__}: local model failed to load ({type(e).__name__}: "
            f"{str(e)[:160]}); the fallback at {config.openai.base_url} is used instead"
        )
        return None
