"""STT and TTS failover, service by service: the local engine's failure is simulated, the
fallback is real (pipecat's OpenAI STT and the openai client against the scripted server).

Quick: no Whisper model is loaded (the local one fails at once); Piper is real.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import soundfile as sf
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from benchmarks.phone_client import load_pcm
from nabu_pipeline.config import OpenAIEndpoint, TTSConfig
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from processors.openai_endpoint import NO_KEY
from processors.stt_failover import (
    STT_FAILED,
    FailoverWhisperSTTService,
    NabuOpenAISTTService,
    STTFailoverSwitcher,
    _RecentIds,
)
from processors.tts_fallback import FallbackSpeech, PiperWithFallbackTTSService

from .conftest import CLIPS

REPLY = "The front door is locked. The porch light is on. The kettle is warm."


class BrokenWhisper:
    """A faster-whisper model whose engine fails (as CTranslate2 does on a bad GPU or OOM)."""

    def __init__(self):
        self.calls = 0

    def transcribe(self, *args, **kwargs):
        self.calls += 1
        raise RuntimeError("simulated CTranslate2 failure: out of memory")


class FailingVoice:
    """The real Piper voice, failing on sentences that contain `word` (or on every one)."""

    def __init__(self, voice, word: str | None = None):
        self._voice = voice
        self._word = word
        self.config = voice.config
        self.spoken: list[str] = []

    def synthesize(self, text, syn_config=None):
        if self._word is None or self._word in text:
            raise RuntimeError("simulated onnxruntime failure")
        self.spoken.append(text)
        return self._voice.synthesize(text, syn_config=syn_config)


def wav_seconds(wav: bytes) -> float:
    info = sf.info(io.BytesIO(wav))
    return info.frames / info.samplerate


def speech_frames(pcm: bytes) -> list:
    step = 640  # 20 ms at 16 kHz
    audio = [InputAudioRawFrame(pcm[i : i + step], 16000, 1) for i in range(0, len(pcm), step)]
    return [VADUserStartedSpeakingFrame(), *audio, VADUserStoppedSpeakingFrame(stop_secs=0.2)]


def local_whisper(model, has_fallback: bool) -> FailoverWhisperSTTService:
    return FailoverWhisperSTTService(has_fallback=has_fallback, model=model, model_name="tiny.en")


def openai_stt(url: str) -> NabuOpenAISTTService:
    return NabuOpenAISTTService(
        api_key=NO_KEY,
        base_url=url,
        settings=NabuOpenAISTTService.Settings(model="whisper-1"),
    )


async def test_local_whisper_failure_hands_its_segment_to_the_fallback():
    first, second = load_pcm(CLIPS / "goforward.wav"), load_pcm(CLIPS / "sb_spk1_snt1.wav")
    script = Script(transcript=lambda wav: f"I heard {wav_seconds(wav):.1f} seconds.")
    with ScriptedLLMServer(script) as srv:
        broken = BrokenWhisper()
        local, fallback = local_whisper(broken, has_fallback=True), openai_stt(srv.url)
        switcher = STTFailoverSwitcher([local, fallback])
        down, up = await run_test(
            switcher,
            frames_to_send=[
                *speech_frames(first),
                SleepFrame(1.0),
                *speech_frames(second),
                SleepFrame(1.0),
            ],
        )
    transcripts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    seconds = [float(re.findall(r"[\d.]+", t)[0]) for t in transcripts]
    # The failed segment was transcribed by the fallback, then the next one went straight there.
    assert len(transcripts) == 2, transcripts
    # Each segment is the clip plus the 0.5 s of silence pipecat appends for the decoder.
    assert abs(seconds[0] - (len(first) / 32000 + 0.5)) < 0.15, (seconds, len(first) / 32000)
    assert abs(seconds[1] - (len(second) / 32000 + 0.5)) < 0.15
    assert broken.calls == 1
    assert [r.endpoint for r in srv.audio_requests] == ["transcriptions"] * 2
    assert srv.audio_requests[0].fields["model"] == "whisper-1"
    assert not local.is_usable and switcher.strategy.active_service is fallback
    assert switcher.is_usable
    assert not [f for f in up if isinstance(f, ErrorFrame)]  # the switcher recovered
    assert all(f.result is None for f in down if isinstance(f, TranscriptionFrame))


async def test_without_fallback_a_failed_segment_asks_warren_to_repeat():
    local = local_whisper(BrokenWhisper(), has_fallback=False)
    down, _ = await run_test(
        local,
        frames_to_send=[*speech_frames(load_pcm(CLIPS / "goforward.wav")), SleepFrame(0.5)],
    )
    speak = [f for f in down if isinstance(f, TTSSpeakFrame)]
    assert [f.text for f in speak] == [STT_FAILED] and not speak[0].append_to_context
    assert local.is_usable  # it may work again on the next segment


async def test_fallback_stt_failing_asks_warren_to_repeat():
    with ScriptedLLMServer(Script(audio_fault="500")) as srv:
        down, _ = await run_test(
            openai_stt(srv.url),
            frames_to_send=[*speech_frames(load_pcm(CLIPS / "goforward.wav")), SleepFrame(0.5)],
        )
    assert [f.text for f in down if isinstance(f, TTSSpeakFrame)] == [STT_FAILED]
    assert not [f for f in down if isinstance(f, TranscriptionFrame)]


def reply_frames() -> list:
    return [LLMFullResponseStartFrame(), LLMTextFrame(REPLY), LLMFullResponseEndFrame()]


def piper_service(voice, fallback: FallbackSpeech | None, **kwargs) -> PiperWithFallbackTTSService:
    return PiperWithFallbackTTSService(
        fallback=fallback, voice=voice, voice_name="en_US-joe-medium", length_scale=1.0, **kwargs
    )


async def say_reply(service) -> tuple[list[str], float, list]:
    """The three-sentence reply through `service`: the sentences said, seconds of audio (24 kHz),
    and the frames that went upstream."""
    down, up = await run_test(
        service,
        frames_to_send=reply_frames(),
        pipeline_params=PipelineParams(audio_out_sample_rate=24000),
    )
    texts = [f.text for f in down if isinstance(f, TTSTextFrame)]
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    return texts, len(np.frombuffer(audio, dtype=np.int16)) / 24000, up


async def test_piper_failing_on_one_sentence_skips_it_and_goes_on(piper_voice):
    voice = FailingVoice(piper_voice, word="porch")
    texts, seconds, up = await say_reply(piper_service(voice, None))
    assert texts == ["The front door is locked.", "The kettle is warm."], texts
    assert voice.spoken == ["The front door is locked.", "The kettle is warm."]
    assert seconds > 1.5
    assert not [f for f in up if isinstance(f, ErrorFrame)]


async def test_piper_failing_switches_to_the_fallback_voice(piper_voice):
    voice = FailingVoice(piper_voice, word="porch")
    with ScriptedLLMServer(Script()) as srv:
        fallback = FallbackSpeech(
            OpenAIEndpoint(base_url=srv.url, model="tts-1", api_key="sk-x"), "alloy"
        )
        service = piper_service(voice, fallback)
        texts, seconds, _ = await say_reply(service)
    assert texts == ["The front door is locked.", "The porch light is on.", "The kettle is warm."]
    # Piper said the first sentence; the fallback the failed one and everything after it.
    assert voice.spoken == ["The front door is locked."]
    said = [r.fields["input"] for r in srv.audio_requests]
    assert said == ["The porch light is on.", "The kettle is warm."], said
    assert srv.audio_requests[0].fields["response_format"] == "pcm"
    assert service.on_fallback and seconds > 2.0


async def test_fallback_tts_failing_skips_the_sentence(piper_voice):
    with ScriptedLLMServer(Script(audio_fault="500")) as srv:
        fallback = FallbackSpeech(OpenAIEndpoint(base_url=srv.url), "alloy")
        service = piper_service(FailingVoice(piper_voice, word="porch"), fallback)
        texts, _, _ = await say_reply(service)
    assert texts == ["The front door is locked."], texts


def test_recent_ids_stay_bounded():
    ids = _RecentIds(size=100)
    for i in range(10_000):
        ids.add(i)
    assert len(ids) == 100 and 9_999 in ids and 0 not in ids


def test_piper_voice_config_is_untouched():
    assert TTSConfig().fallback == "none"


class Ticking:
    """A clock that moves on `step_s` each time it is read (an injectable monotonic clock)."""

    def __init__(self, step_s: float):
        self.step_s = step_s
        self.now = -step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


class FlakyWhisper:
    """A real faster-whisper model whose first `failures` decodes fail (a passing fault)."""

    def __init__(self, model, failures: int = 1):
        self._model = model
        self.failures = failures
        self.calls = 0

    def transcribe(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("simulated CTranslate2 failure: out of memory")
        return self._model.transcribe(*args, **kwargs)


async def test_stt_returns_to_local_whisper_after_its_rest(whisper_tiny):
    clip = load_pcm(CLIPS / "goforward.wav")
    with ScriptedLLMServer(Script(transcript="I heard the fallback.")) as srv:
        flaky = FlakyWhisper(whisper_tiny)
        local, fallback = local_whisper(flaky, has_fallback=True), openai_stt(srv.url)
        # Read at the failure (0 s), then after each segment the fallback takes: 30 s, 60 s.
        switcher = STTFailoverSwitcher([local, fallback], retry_local_after_s=60, clock=Ticking(30))
        frames = []
        for _ in range(4):
            frames += [*speech_frames(clip), SleepFrame(1.5)]
        down, _ = await run_test(switcher, frames_to_send=frames)
    transcripts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    # 1: local failed, fallback took it; 2: still resting; 3: fallback, local back after it;
    # 4: local Whisper again.
    assert transcripts[:3] == ["I heard the fallback."] * 3, transcripts
    assert len(transcripts) == 4 and "forward" in transcripts[3].lower(), transcripts
    assert len(srv.audio_requests) == 3 and flaky.calls == 2
    assert local.is_usable and switcher.strategy.active_service is local


class FlakyVoice(FailingVoice):
    """The real Piper voice, failing on its first `failures` sentences only."""

    def __init__(self, voice, failures: int = 1):
        super().__init__(voice)
        self.failures = failures
        self.calls = 0

    def synthesize(self, text, syn_config=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("simulated onnxruntime failure")
        self.spoken.append(text)
        return self._voice.synthesize(text, syn_config=syn_config)


async def test_tts_returns_to_piper_after_its_rest(piper_voice):
    voice = FlakyVoice(piper_voice)
    with ScriptedLLMServer(Script()) as srv:
        fallback = FallbackSpeech(OpenAIEndpoint(base_url=srv.url, model="tts-1"), "alloy")
        # The clock is read at the failure (0 s), then before each sentence on the fallback.
        service = piper_service(voice, fallback, retry_local_after_s=60, clock=Ticking(40))
        texts, seconds, _ = await say_reply(service)
    assert texts == ["The front door is locked.", "The porch light is on.", "The kettle is warm."]
    said = [r.fields["input"] for r in srv.audio_requests]
    assert said == ["The front door is locked.", "The porch light is on."], said
    assert voice.spoken == ["The kettle is warm."]
    assert not service.on_fallback and seconds > 2.0


def test_a_piper_voice_that_will_not_load_means_the_fallback_speaks(tmp_path, config_for):
    from pipecat.services.openai.tts import OpenAITTSService

    from nabu_pipeline.models import ModelError
    from nabu_pipeline.pipeline import build_tts

    missing = {"voice": "en_US-nobody-medium", "voice_dir": str(tmp_path)}
    with pytest.raises(ModelError):
        build_tts(config_for(tts=missing))
    with_fallback = {**missing, "fallback": "openai", "openai": {"base_url": "http://127.0.0.1:9"}}
    tts = build_tts(config_for(tts=with_fallback))
    assert isinstance(tts, OpenAITTSService)
