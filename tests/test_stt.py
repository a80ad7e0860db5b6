"""Real Whisper weights on real speech: tiny.en and base, located offline."""

import numpy as np
import pytest
import soundfile as sf
from jiwer import wer
from whisper_normalizer.english import EnglishTextNormalizer

from nabu_pipeline.models import ModelError, choose_device, whisper_model_path
from transports.audio_file import read_pcm16

from .conftest import CLIPS, manifest, transcribe

NORMALISE = EnglishTextNormalizer()
CLEAR_CLIPS = [
    "goforward.wav",
    "jfk.wav",
    "sb_spk1_snt1.wav",
    "sb_spk1_snt5.wav",
    "sb_spk2_snt4.wav",
    "librivox_sas01_0880.wav",
    "something.wav",
]


def test_tiny_en_transcribes_real_speech(whisper_tiny):
    rows = {r["file"]: r["transcript"] for r in manifest()}
    refs, hyps = [], []
    for name in CLEAR_CLIPS:
        hyp = transcribe(whisper_tiny, CLIPS / name)
        refs.append(NORMALISE(rows[name]))
        hyps.append(NORMALISE(hyp))
    assert hyps[0] == "go forward 10 meters"
    assert "ask not what your country can do for you" in hyps[1]
    assert wer(refs, hyps) < 0.12, list(zip(refs, hyps, strict=True))


@pytest.mark.slow
def test_base_is_assembled_from_its_two_packages_and_transcribes(tmp_path, monkeypatch):
    monkeypatch.setenv("NABU_CACHE_DIR", str(tmp_path))
    from faster_whisper import WhisperModel

    path = whisper_model_path("base")
    assert (tmp_path / "whisper-base" / "model.bin").stat().st_size == 72608766 * 2
    assert whisper_model_path("base") == path  # second call reuses the assembled copy
    model = WhisperModel(path, device="cpu", compute_type="int8")
    text = transcribe(model, CLIPS / "sb_spk1_snt3.wav")
    assert NORMALISE(text) == "at that high level the air is pure"


@pytest.mark.slow
def test_base_scores_whether_it_heard_english_at_no_extra_encoder_pass():
    """Clear speech scores as English; the same speech played backwards does not."""
    from nabu_pipeline import engines
    from nabu_pipeline.config import STTConfig

    model = engines.whisper(STTConfig(model="base")).model
    scores = {}
    for name in ("jfk.wav", "something.wav", "librivox_sas01_0930.wav"):
        samples = read_pcm16(CLIPS / name).astype(np.float32) / 32768
        for label, audio in (("clear", samples), ("reversed", samples[::-1].copy())):
            segments, _ = model.transcribe(audio, language="en", beam_size=1, temperature=0.0)
            assert list(segments)
            scores[(name, label)] = model.language_probabilities()["en"]
    clear = [v for (_, label), v in scores.items() if label == "clear"]
    reversed_ = [v for (_, label), v in scores.items() if label == "reversed"]
    assert min(clear) > 0.9 and max(reversed_) < 0.5, scores


@pytest.mark.parametrize("model_name", ["base", "tiny.en"])
def test_each_decoded_word_has_its_probability_without_a_second_window(model_name):
    """The words line up with the transcript, punctuation attached, and a clear recording
    is mostly sure; faster-whisper's own word_timestamps would decode the trailing silence
    again and add invented words ("you") that the transcript does not have."""
    from nabu_pipeline import engines
    from nabu_pipeline.config import STTConfig
    from processors.text_normalise import normalise
    from processors.whisper_stt import decode

    model = engines.whisper(STTConfig(model=model_name)).model
    samples = read_pcm16(CLIPS / "jfk.wav").astype(np.float32) / 32768
    segments, _, words = decode(model, samples, language="en", beam_size=1, prompt=None)
    text = " ".join(s.text.strip() for s in segments)
    assert normalise(" ".join(w for w, _ in words)) == normalise(text), (words, text)
    assert all(0 <= p <= 1 for _, p in words)
    assert sum(p >= 0.5 for _, p in words) >= 0.8 * len(words), words
    assert not any(w[:1] in ".,?!" for w, _ in words)  # attached to the word before


def test_unknown_model_is_a_clear_error_naming_the_fix(tmp_path):
    with pytest.raises(ModelError, match="does not download"):
        whisper_model_path("large-v3")
    with pytest.raises(ModelError, match="neither"):
        whisper_model_path("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"model\.bin"):
        whisper_model_path(str(tmp_path / "empty"))


def test_model_directory_is_accepted():
    path = whisper_model_path("tiny.en")
    assert whisper_model_path(path) == path


def test_device_is_cpu_int8_without_a_gpu():
    device = choose_device("auto", "auto")
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        assert (device.device, device.compute_type) == ("cpu", "int8")
    else:
        assert device.device == "cuda"


def test_silence_gives_no_words(whisper_tiny, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(16000 * 2, dtype=np.int16), 16000)
    assert NORMALISE(transcribe(whisper_tiny, path)) in ("", "you")


def test_cuda_that_cannot_run_falls_back_to_cpu_with_one_warning():
    """As on a GPU machine with only CUDA 13 (ctranslate2 4.8 needs libcublas.so.12): on the
    lent H200 the model loaded on CUDA and the first decode raised 'Library libcublas.so.12 is
    not found'. Here CUDA is absent altogether; the same fallback must catch it."""
    import ctranslate2
    from loguru import logger

    from nabu_pipeline import engines
    from nabu_pipeline.config import STTConfig

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("a working GPU is present")
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        loaded = engines.whisper(STTConfig(model="tiny.en", device="cuda", compute_type="float16"))
    finally:
        logger.remove(sink)
    assert (loaded.device.device, loaded.device.compute_type) == ("cpu", "int8")
    warnings = [line for line in lines if "CUDA unusable" in line]
    assert len(warnings) == 1 and "nvidia-cublas-cu12" in warnings[0]
    segments, _ = loaded.model.transcribe(
        read_pcm16(CLIPS / "goforward.wav").astype("float32") / 32768, beam_size=1
    )
    assert "forward" in " ".join(s.text for s in segments).lower()
