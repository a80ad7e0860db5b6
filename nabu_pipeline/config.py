"""Nabu's configuration: YAML in, typed, validated, frozen objects out.

Every user mistake (unknown provider, bad value, missing file) becomes one
`ConfigError` that names the key and what is allowed; the CLI prints it without
a stack trace.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_LLM_APOLOGY = (
    "Sorry, I can't reach my assistant right now. I can still tell you the time or the date."
)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration the user can fix; the message says how."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class OpenAIEndpoint(_Frozen):
    """An OpenAI-protocol endpoint (OpenAI, or any compatible server)."""

    base_url: str = OPENAI_DEFAULT_BASE_URL
    """Root of the API, e.g. http://localhost:11434/v1 for Ollama."""
    api_key: str = ""
    """Secret; from the environment (`${OPENAI_API_KEY}`), never written to logs."""
    model: str = ""
    """Model name on that endpoint; empty means the provider's default."""
    timeout_s: float = Field(default=20.0, gt=0)
    """Whole-request timeout."""

    @property
    def is_openai_cloud(self) -> bool:
        return self.base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL

    def __repr__(self) -> str:  # never print the key
        return f"OpenAIEndpoint(base_url={self.base_url!r}, model={self.model!r})"

    __str__ = __repr__


class STTConfig(_Frozen):
    """Speech to text."""

    provider: Literal["local_whisper", "openai"] = "local_whisper"
    """local_whisper: faster-whisper in-process; openai: the Whisper API (or compatible)."""
    fallback: Literal["none", "openai"] = "none"
    """openai: when local Whisper fails, the `openai` endpoint below transcribes (the failed
    segment included) until retry_local_after_s has passed; none: Nabu asks him to say it again."""
    retry_local_after_s: float = Field(default=60.0, gt=0)
    """After a switch to the fallback, local Whisper is tried again this long later."""
    model: str = "base"
    """base or tiny.en (offline, from PyPI packages), any faster-whisper name, or a directory.
    base is the default: 4.6 % WER against tiny.en's 6.6 % on the shipped clips, and its extra
    ~0.2 s of decoding mostly hides inside the release hold (`nabu bench`)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when ctranslate2 sees a GPU and its CUDA 12 libraries load."""
    compute_type: str = "auto"
    """auto: int8 on CPU, float16 (or float32 on old GPUs) on CUDA."""
    beam_size: int = Field(default=5, ge=1, le=10)
    """5: with other voices in the room, greedy decoding (1) fell into loops (base, his
    channel: 98.5 % WER against 21.3 % with two speakers at 10 dB); clean speech scores the
    same. Beam 5 costs 0.13-0.14 s of voice-to-voice on the 2-core CPU; 1 is the fastest."""
    cpu_threads: int = Field(default=0, ge=0)
    """0 lets CTranslate2 choose."""
    language: str = "en"
    """Language Warren speaks (a Whisper code); English-only models such as tiny.en need en."""
    vocabulary: tuple[str, ...] = ()
    """Names, places and devices Warren uses, given to Whisper as its initial prompt. Words he
    corrected Nabu to, the names in facts he keeps and his home's device names, aliases and
    areas join them without being typed here (nabu_pipeline/known_words.py, bounded)."""
    ttfs_p99_s: float = Field(default=1.2, gt=0)
    """How long after the end of speech a transcript may still arrive (turn-end safety net)."""
    openai: OpenAIEndpoint = OpenAIEndpoint(model="whisper-1")
    """The OpenAI-protocol transcription endpoint for provider or fallback openai."""


class GuardConfig(_Frozen):
    """Transcript guard: what is too doubtful to send to the LLM."""

    no_speech_prob_max: float = Field(default=0.6, ge=0, le=1)
    """A segment more likely silence than this, with low confidence, is dropped."""
    avg_logprob_min: float = Field(default=-0.75, le=0)
    """Below this average log-probability the words are doubtful: Nabu asks him to repeat.
    On the shipped clips (tiny.en) clear speech scored -0.18 to -0.66 and the same speech
    played backwards -0.84 to -1.43."""
    language_prob_min: float = Field(default=0.5, ge=0, le=1)
    """Below this probability that the audio is in his language (Whisper's language
    identification) the words are doubtful. Whisper decodes unintelligible sound into
    fluent English with a respectable log-probability; base on the shipped clips gave
    English 0.78-1.00 for clear speech, 0.59-0.99 for the degraded copy, and under 0.5 for
    16 of 23 clips played backwards. Models that cannot tell (tiny.en) skip this check."""
    confirm_logprob_min: float = Field(default=-1.0, le=0)
    """Doubtful transcripts scoring at least this (and heard as his language) are read back,
    "Did you say ...?", rather than dismissed; below it Nabu asks him to repeat."""
    confirm_max_words: int = Field(default=14, ge=2)
    """Longer doubtful transcripts are not read back (too long to follow); he is asked to
    repeat instead."""
    confirm_timeout_s: float = Field(default=30.0, gt=0)
    """A yes or no (or the word asked about) later than this no longer answers the question."""
    word_probability_min: float = Field(default=0.35, ge=0, le=1)
    """A word Whisper scores below this is doubtful. When one word (or two together) of a
    sentence heard otherwise is doubtful, Nabu asks about that part: "Turn on the kitchen
    what?", and puts his answer in its place. 0 turns this off."""
    ask_part_min_words: int = Field(default=4, ge=3)
    """Shorter sentences are read back or said again whole rather than asked about in part."""
    yes_phrases: tuple[str, ...] = (
        "yes",
        "yeah",
        "yep",
        "yes please",
        "yes i did",
        "that's right",
        "right",
        "correct",
        "that's it",
        "uh huh",
        "sure",
        "[yes] (go ahead|do it)",
    )
    """Whole utterances (templates, as for stop phrases) that confirm a read-back transcript."""
    no_phrases: tuple[str, ...] = (
        "no",
        "nope",
        "no i didn't",
        "that's wrong",
        "wrong",
        "no no",
        "[no] (don't|do not) [do it]",
    )
    """Whole utterances that reject it: Nabu asks him to say it again."""
    compression_ratio_max: float = Field(default=2.4, gt=0)
    """Above this the decoder was looping (a hallucination)."""
    phantom_phrases: tuple[str, ...] = (
        "thank you for watching",
        "thanks for watching",
        "please subscribe",
        "subtitles by the amara.org community",
        "thank you",
        "you",
        "bye",
    )
    """Whole-transcript phrases Whisper invents from noise; dropped when alone."""


class LLMConfig(_Frozen):
    """The language model: any OpenAI-protocol endpoint."""

    provider: Literal["openai", "offline"] = "openai"
    """openai: any OpenAI-protocol server; offline: local answers only."""
    base_url: str = OPENAI_DEFAULT_BASE_URL
    """Root of the API, e.g. http://localhost:11434/v1 for Ollama (NABU_LLM_BASE_URL overrides)."""
    api_key: str = ""
    """Secret; from the environment (`${OPENAI_API_KEY}`), never written to logs."""
    model: str = "gpt-4o-mini"
    """Model name on that endpoint (NABU_LLM_MODEL overrides)."""
    temperature: float = Field(default=0.5, ge=0, le=2)
    """Lower than a chat app's 0.7: answers read aloud should be plain and predictable."""
    max_tokens: int = Field(default=160, ge=16, le=4096)
    """About 120 spoken words (~40 s) at most; the prompt asks for one to three sentences."""
    timeout_s: float = Field(default=20.0, gt=0)
    """Whole-request limit of the HTTP client (the deadlines below act much sooner)."""
    system_prompt: str = ""
    """Empty means Nabu's own prompt for Warren (nabu_pipeline/prompts.py)."""
    fallbacks: tuple[OpenAIEndpoint, ...] = ()
    """Further endpoints ({base_url, api_key, model}), tried in order when the one before fails."""
    first_token_timeout_s: float = Field(default=4.0, gt=0, le=30)
    """Longest wait for an endpoint's first word before giving up on it and trying the next."""
    stall_timeout_s: float = Field(default=5.0, gt=0, le=60)
    """Longest silence inside a streaming reply before it counts as broken off."""
    answer_deadline_s: float = Field(default=6.0, gt=0, le=60)
    """From the request to the apology at the latest, retries and fallbacks included: with STT
    (~0.8 s) and the apology's TTS (~0.3 s) Warren hears something within 8 s of his last word."""
    retry_attempts: int = Field(default=2, ge=1, le=5)
    """Tries per endpoint on 429, 5xx and connection errors (1: no retry). The only retries:
    the openai client's own are off."""
    retry_base_delay_s: float = Field(default=0.25, ge=0, le=5)
    """Backoff before the first retry, doubled for each further one, half of it random (jitter)."""
    retry_max_delay_s: float = Field(default=2.0, ge=0, le=30)
    """Longest backoff or Retry-After Nabu waits; a longer Retry-After skips that endpoint until
    the time it named."""
    failed_endpoint_rest_s: float = Field(default=60.0, ge=0)
    """An endpoint that failed a turn is asked after the others for this long."""
    apology: str = Field(default=NO_LLM_APOLOGY, min_length=1)
    """Said when no endpoint gives an answer; never recorded as Nabu's answer."""
    broken_off_apology: str = Field(
        default="Sorry, I lost my train of thought there.", min_length=1
    )
    """Said after the words already spoken when a reply breaks off; never recorded either."""

    @property
    def endpoint(self) -> OpenAIEndpoint:
        return OpenAIEndpoint(
            base_url=self.base_url, api_key=self.api_key, model=self.model, timeout_s=self.timeout_s
        )

    @property
    def endpoints(self) -> tuple[OpenAIEndpoint, ...]:
        """The endpoints to ask, in order: the main one, then the fallbacks (those usable)."""
        if self.provider == "offline":
            return ()
        candidates = (
            self.endpoint,
            *(f if f.model else f.model_copy(update={"model": self.model}) for f in self.fallbacks),
        )
        return tuple(e for e in candidates if not (e.is_openai_cloud and not e.api_key))

    @property
    def is_configured(self) -> bool:
        """False when nothing could answer: offline, or only the OpenAI cloud without a key."""
        return bool(self.endpoints)

    def __repr__(self) -> str:
        return (
            f"LLMConfig(provider={self.provider!r}, base_url={self.base_url!r}, "
            f"model={self.model!r})"
        )

    __str__ = __repr__


class TTSConfig(_Frozen):
    """Text to speech."""

    provider: Literal["piper", "openai"] = "piper"
    """piper: the Piper voice in-process; openai: the OpenAI-protocol speech endpoint below."""
    fallback: Literal["none", "openai"] = "none"
    """openai: when Piper fails, the `openai` endpoint below speaks (the failed sentence
    included) until retry_local_after_s has passed; none: a sentence Piper cannot say is skipped."""
    retry_local_after_s: float = Field(default=60.0, gt=0)
    """After a switch to the fallback, Piper is tried again this long later."""
    voice: str = "en_US-joe-medium"
    """A Piper voice: the bundled en_US-joe-medium, or a name found in voice_dir."""
    voice_dir: str = ""
    """Directory holding <voice>.onnx and .onnx.json; empty means the bundled package."""
    length_scale: float = Field(default=1.1, ge=0.5, le=2.5)
    """Speaking rate as Piper's length scale: 1.0 is the voice's own pace, 1.1 a little slower."""
    slower_step: float = Field(default=0.2, gt=0, le=1)
    """How much "slower, please" adds to length_scale each time."""
    length_scale_max: float = Field(default=1.8, ge=0.5, le=2.5)
    """The slowest "slower, please" can make him: its length scale stops here."""
    volume: float = Field(default=1.0, gt=0, le=4)
    """Loudness multiplier (Piper's volume)."""
    noise_scale: float | None = Field(default=None, ge=0, le=2)
    """Piper's voice variation (its noise_scale); empty keeps the voice's own. At 0 a
    sentence sounds exactly the same every time it is said (the tests use that)."""
    noise_w_scale: float | None = Field(default=None, ge=0, le=2)
    """Piper's rhythm variation (its noise_w_scale); empty keeps the voice's own."""
    use_cuda: bool = False
    """Run Piper on CUDA (needs onnxruntime-gpu); the CPU is fast enough for one voice."""
    openai: OpenAIEndpoint = OpenAIEndpoint(model="tts-1")
    """The OpenAI-protocol speech endpoint for provider or fallback openai."""
    openai_voice: str = "alloy"
    """The voice that endpoint speaks in."""


class TurnConfig(_Frozen):
    """When Warren has finished speaking."""

    strategy: Literal["patient", "smart_turn", "speech_timeout"] = "patient"
    """patient: end the turn on each transcript, answer speculatively, and speak only after
    pause_tolerance_s of silence; smart_turn: pipecat's smart-turn v3; speech_timeout: a
    fixed silence."""
    pause_tolerance_s: float = Field(default=1.5, ge=0, le=5)
    """Silence after Warren's last word before Nabu may start a reply. His mid-sentence pauses
    are 0.5-1.2 s, and resumed speech is noticed ~0.2 s after it starts (vad_start_s): on the
    paused suite 1.3 s still cut 12 of 20 sentences, 1.6 s 5 (mostly Whisper, not timing).
    The reply is prepared meanwhile; 0 disables the hold."""
    complete_command_hold_s: float = Field(default=0.3, ge=0, le=5)
    """The hold for a reply to an utterance that is already complete (a home command naming
    one device by its whole name, a yes or no to Nabu's question): it need not wait out
    pause_tolerance_s. Less sure home commands ("close the garage", "turn on the kitchen")
    wait for his pause to end and are never acted on if he goes on."""
    complete_turn_probability: float = Field(default=0.0, ge=0, le=1)
    """smart-turn v3's probability that Warren has finished at which, if his words also end
    where a sentence can, his reply waits only complete_turn_hold_s instead of
    pause_tolerance_s (processors/turn_completion.py). 0 (the default) turns this off: on
    the paused suite 0.8 with a 0.6 s hold cut 3 of 20 sentences against 2 with the whole
    hold ("Go forward. (0.8 s) Ten meters." sounds finished) for 0.12 s off the p50."""
    complete_question_probability: float = Field(default=0.5, ge=0, le=1)
    """smart-turn v3's probability at which a question (Whisper wrote a question mark, and it
    ends where a sentence can) waits only complete_turn_hold_s instead of pause_tolerance_s.
    smart-turn is asked only when the reply is ready before the whole hold ends (the release
    gate asks), so it costs nothing where the reply comes later, as most LLM replies do on a
    2-core CPU; it pays for quick answers (the time, the date, a fast LLM). On the paused
    suite 0.5 cut none of 12 questions, paused or whole (docs/RESULTS.md). 0 turns it off."""
    complete_turn_hold_s: float = Field(default=0.6, ge=0, le=5)
    """The hold for a turn smart-turn and his words both say is finished: longer than for a
    whole command (a sentence that sounds finished may still go on), shorter than a pause."""
    vad_stop_s: float = Field(default=0.2, gt=0, le=2)
    """Silence that ends a VAD segment (smart-turn expects 0.2)."""
    vad_start_s: float = Field(default=0.2, gt=0, le=1)
    """Speech that counts as the start of a VAD segment (and can interrupt Nabu)."""
    vad_start_over_echo_s: float = Field(default=0.4, gt=0, le=1)
    """The same in the first 1.5 s of each reply, unless no echo was measured: what AEC3 leaves
    of Nabu's voice there comes in short stretches and cut Nabu off 0.7-1.1 s into replies on
    a busy CPU. (For whole replies it lost a short "Help me!": so only their start.)"""
    vad_confidence: float = Field(default=0.5, gt=0, le=1)
    """Silero speech probability that counts as voice (pipecat's default is 0.7)."""
    vad_min_volume: float = Field(default=0.1, ge=0, le=1)
    """Loudness gate on top of Silero (pipecat's default 0.6). Measured: with 0.6 a soft
    "Wait, stop please" was detected 0.7 s after it began, 0.24 s with 0.1; over Nabu's
    echo-cancelled voice only 0.1 with confidence 0.5 caught it within 0.3 s."""
    smart_turn_max_pause_s: float = Field(default=3.0, gt=0, le=10)
    """With smart-turn, the longest pause allowed inside an unfinished sentence."""
    speech_timeout_s: float = Field(default=0.8, gt=0, le=5)
    """With speech_timeout, the silence that ends his turn."""
    stop_timeout_s: float = Field(default=15.0, gt=0, le=60)
    """Safety net: a turn whose transcript never comes closes this long after speech stops.
    Whisper always answers (an empty result closes the turn at once), so this only has to
    outlast the slowest transcript: 5 s did not on a busy CI machine, and the late
    transcript then began a turn of its own."""


class ConversationConfig(_Frozen):
    """The conversation's own rules."""

    history_turns: int = Field(default=10, ge=0, le=200)
    """User turns (with their answers) kept in the LLM's context."""
    stop_phrases: tuple[str, ...] = (
        "stop",
        "stop it",
        "stop talking",
        "stop please",
        "please stop",
        "never mind",
        "nevermind",
        "be quiet",
        "quiet",
        "shut up",
        "cancel",
        "that's enough",
        "enough",
        "hush",
    )
    """Whole utterances that stop Nabu. Each is a sentence template (`[optional]`, `(a|b)`);
    fillers, "please", Nabu's name, punctuation and a repeated word around it don't matter."""
    stop_acknowledgement: str = "Okay."
    """What Nabu says after a stop phrase; empty to stay silent."""
    repeat_phrases: tuple[str, ...] = (
        "say that again",
        "say it again",
        "repeat that",
        "repeat",
        "please repeat",
        "repeat please",
        "what did you say",
        "come again",
        "pardon",
        "sorry",
        "what",
        "again",
        "can you say that again",
        "could you say that again",
        "could you repeat that",
        "can you repeat that",
    )
    """Whole utterances that repeat the last answer without asking the LLM."""
    slower_phrases: tuple[str, ...] = (
        "slower",
        "slower please",
        "slow down",
        "slow down please",
        "please slow down",
        "please speak slower",
        "speak slower",
        "speak slower please",
        "say that slower",
        "say it slower",
        "say that again slower",
        "can you say that slower",
        "more slowly",
        "more slowly please",
    )
    """Whole utterances that slow Nabu down and repeat the last answer."""
    nothing_to_repeat: str = "I haven't said anything yet. What can I do for you?"
    """Said when he asks to repeat before Nabu has said anything."""


class LocaleConfig(_Frozen):
    """How Nabu tells time and temperature."""

    time_zone: str = "local"
    """An IANA zone such as America/Chicago, or local for the machine's zone."""
    clock: Literal["12h", "24h"] = "12h"
    """How Nabu tells the time, and the clock its prompt asks the LLM to use."""
    temperature_unit: Literal["F", "C"] = "F"
    """Fahrenheit or Celsius, in answers and the LLM's prompt."""
    user_name: str = "Warren"
    """What Nabu calls the person it talks to (in its prompt)."""

    @field_validator("time_zone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        if value != "local":
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(
                    f"unknown time zone {value!r}; use an IANA name like America/Chicago or 'local'"
                ) from e
        return value

    @property
    def tzinfo(self):
        if self.time_zone == "local":
            from datetime import datetime

            return datetime.now().astimezone().tzinfo
        return ZoneInfo(self.time_zone)


class AudioConfig(_Frozen):
    """Sample rates inside the pipeline."""

    in_sample_rate_hz: Literal[16000] = 16000
    """Whisper and Silero want 16 kHz; everything else is resampled to it."""
    out_sample_rate_hz: int = Field(default=24000, ge=8000, le=48000)
    """24 kHz is what the Pipecat web client plays; `nabu talk` writes this rate too."""
    echo_cancellation: bool = True
    """Remove Nabu's own voice from the microphone (WebRTC AEC3) so it cannot interrupt itself."""
    echo_delay_hint_ms: int = Field(default=0, ge=0, le=1000)
    """Expected speaker-to-microphone delay; 0 lets AEC3 estimate it."""


class BudgetConfig(_Frozen):
    """Latency goals `nabu bench` checks (pass/fail in its report), on the 2-core CPU."""

    voice_to_voice_p50_s: float = Field(default=1.2, gt=0)
    """Median end of speech -> first reply audio."""
    voice_to_voice_p95_s: float = Field(default=1.6, gt=0)
    """95th percentile of the same."""
    speedup_vs_sequential_min: float = Field(default=2.0, gt=0)
    """Sequential (predecessor) p50 divided by Nabu's p50, at least."""
    ratio_vs_pipecat_default_max: float = Field(default=0.8, gt=0)
    """Nabu's p50 divided by a stock pipecat pipeline's p50, at most."""
    cold_start_s: float = Field(default=5.0, gt=0)
    """Process start -> ready to listen."""


class ServerConfig(_Frozen):
    """`nabu serve`: the WebSocket server the phone app and the browser page talk to."""

    allowed_origins: tuple[str, ...] = ()
    """Other browser origins allowed to open /ws (e.g. https://nabu.example.org); the server's
    own pages always may."""
    max_sessions: int = Field(default=4, ge=1, le=64)
    """Conversations served at once (each runs VAD, Whisper and Piper); one more is refused."""
    max_message_bytes: int = Field(default=65536, ge=4096, le=16 * 1024 * 1024)
    """Largest WebSocket message a client may send; a larger one closes its connection (1009)."""
    max_bad_messages: int = Field(default=50, ge=1)
    """Undecodable, unknown or refused client messages tolerated per session before it is closed."""
    session_idle_timeout_s: float = Field(default=300.0, gt=0)
    """A session in which nobody has spoken for this long is closed (the client may resume it)."""
    history_retention_days: float = Field(default=30.0, ge=0)
    """Stored conversation turns older than this are deleted; 0 keeps them forever."""
    data_dir: str = ""
    """Conversation store directory; empty means NABU_DATA_DIR, else ~/.local/share/nabu."""
    tls_certfile: str = ""
    """PEM certificate chain for HTTPS/WSS (phones give the microphone to secure pages only)."""
    tls_keyfile: str = ""
    """PEM private key of `tls_certfile`; both or neither."""
    public_url: str = ""
    """Address phones use (e.g. https://nabu.example.org behind a proxy); empty derives it."""

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("server.tls_certfile and server.tls_keyfile go together: set both")
        if self.public_url and not re.match(r"^https?://[^/\s]+/?$", self.public_url):
            raise ValueError(
                f"server.public_url must be like https://host[:port], got {self.public_url!r}"
            )
        return self

    @property
    def data_path(self) -> Path:
        """Where the conversation store lives (created on first use)."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        if os.environ.get("NABU_DATA_DIR"):
            return Path(os.environ["NABU_DATA_DIR"]).expanduser()
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(xdg) / "nabu"


class MemoryConfig(_Frozen):
    """Warren's memory: facts and preferences he asks Nabu to keep (in the data directory)."""

    enabled: bool = True
    """Remember/forget commands, his preferences, and what he asked to keep in the LLM's
    instructions every turn; off: nothing is kept and the commands go to the LLM."""
    llm_proposals: bool = True
    """The LLM may offer to keep a fact he mentions in passing (its remember_fact tool; kept
    only after his yes). Turn off for a local model that cannot call tools."""


class MicConfig(_Frozen):
    """`nabu mic`: which of this machine's sound devices Nabu listens and speaks on."""

    input_device: int | str = ""
    """Microphone: a number or (part of) a name from `nabu mic --list-devices`; "" = default."""
    output_device: int | str = ""
    """Speaker: a number or (part of) a name from `nabu mic --list-devices`; "" = default."""


class SafetyConfig(_Frozen):
    """Calls for help and reminders: who is told, and how."""

    contact_name: str = "your family"
    """Who hears about a call for help, as Nabu names them to Warren (e.g. Mary)."""
    contact_relation: str = ""
    """How that person is related to him (e.g. daughter): "Mary, your daughter"."""
    help_phrases: tuple[str, ...] = (
        "help [me] [help [me]]",
        "[please] help me [please]",
        "i need [some|your] help",
        # "i fallen": Whisper drops the 've of a slurred "I've fallen" (base with his home's
        # names in the prompt heard Piper's "I've fallen." as "I Fallen.").
        "[help [me]] (i've|i have|i) fallen [down|over] [and i can't get up] [help [me]]",
        "[help [me]] (i've|i have) had a fall [help [me]]",
        "[help [me]] i fell [down|over] [help [me]]",
        "[help [me]] i (can't|cannot|can not) get up [help [me]]",
        "[help [me]] [it's|this is] [an] emergency [help [me]]",
        "call (for help|someone|somebody|an ambulance)",
        "get (help|someone|somebody)",
    )
    """Whole utterances (templates) that alert the family at once, even while Nabu speaks;
    "call <contact_name>" and "call my <contact_relation>" are added to them."""
    help_words: tuple[str, ...] = ("help", "fallen", "fell", "fall", "emergency", "hurt", "get up")
    """Words that, in a doubtful transcript, make Nabu ask "Do you need help?"."""
    alert_webhooks: tuple[str, ...] = ()
    """URLs that receive each alert as JSON (POST); NABU_ALERT_WEBHOOK_URL adds one."""
    home_assistant_notify: str = ""
    """Home Assistant notify service for alerts (e.g. mobile_app_marys_phone), with NABU_HA_URL
    and NABU_HA_TOKEN set; empty: no Home Assistant alert."""
    delivery_deadline_s: float = Field(default=60.0, gt=0)
    """If no channel has acknowledged an alert by then, Nabu tells Warren plainly."""
    retry_base_delay_s: float = Field(default=1.0, gt=0, le=60)
    """Backoff before the first re-delivery of an alert, doubled each time (with jitter)."""
    retry_max_delay_s: float = Field(default=30.0, gt=0, le=600)
    """Longest wait between deliveries; a channel is retried until it acknowledges (2xx)."""
    retry_for_s: float = Field(default=3600.0, gt=0)
    """A channel that has not acknowledged after this long is given up on (logged)."""
    request_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """One delivery attempt's limit."""
    confirm_timeout_s: float = Field(default=20.0, gt=0, le=120)
    """After "Do you need help?", silence this long counts as yes."""
    reminder_repeat_after_s: float = Field(default=60.0, gt=0)
    """A due reminder not acknowledged ("okay", "done") is said once more after this long."""
    reminder_escalate_min: float = Field(default=10.0, gt=0)
    """A due reminder still not acknowledged this many minutes after it was due alerts the
    family (as does one due while no phone is connected)."""

    @property
    def contact(self) -> str:
        """How Nabu names the contact to Warren: "Mary, your daughter", or "your daughter"."""
        name, relation = self.contact_name.strip(), self.contact_relation.strip()
        if relation and name and name != "your family":
            return f"{name}, your {relation}"
        if relation:
            return f"your {relation}"
        return name or "your family"

    @property
    def contact_short(self) -> str:
        """The contact in a short sentence: "Mary", or "your daughter"."""
        name = self.contact_name.strip()
        if name and name != "your family":
            return name
        return f"your {self.contact_relation.strip()}" if self.contact_relation else "your family"

    def webhooks(self, environ: dict | os._Environ = os.environ) -> tuple[str, ...]:
        """The configured webhooks, plus NABU_ALERT_WEBHOOK_URL when set."""
        extra = (environ.get("NABU_ALERT_WEBHOOK_URL") or "").strip()
        return (
            (*self.alert_webhooks, extra)
            if extra and extra not in self.alert_webhooks
            else (self.alert_webhooks)
        )


class HomeAssistantConfig(_Frozen):
    """Warren's Home Assistant (optional: without it Nabu talks but does not act)."""

    url: str = ""
    """Base URL, e.g. http://homeassistant.local:8123; empty means no home (NABU_HA_URL)."""
    token: str = ""
    """Long-lived access token (NABU_HA_TOKEN); a secret, never written to logs."""
    timeout_s: float = Field(default=3.0, gt=0, le=30)
    """Longest wait for one Home Assistant request before Warren hears it is not answering."""
    confirm_timeout_s: float = Field(default=30.0, gt=0, le=300)
    """A risky action waits this long for his "yes"; then it is cancelled and he is told."""
    done_timeout_s: float = Field(default=5.0, gt=0, le=120)
    """How long Nabu waits for the home to show an action done before saying it did not happen."""
    setpoint_min_c: float = Field(default=16.0, ge=5, le=35)
    """Heating set points below this are read back and need a yes."""
    setpoint_max_c: float = Field(default=26.0, ge=5, le=35)
    """Heating set points above this are read back and need a yes."""

    @property
    def is_configured(self) -> bool:
        return bool(self.url and self.token)

    def __repr__(self) -> str:  # never print the token
        return f"HomeAssistantConfig(url={self.url!r})"

    __str__ = __repr__


class NabuConfig(_Frozen):
    """The whole configuration."""

    stt: STTConfig = STTConfig()
    guard: GuardConfig = GuardConfig()
    llm: LLMConfig = LLMConfig()
    tts: TTSConfig = TTSConfig()
    turn: TurnConfig = TurnConfig()
    conversation: ConversationConfig = ConversationConfig()
    locale: LocaleConfig = LocaleConfig()
    audio: AudioConfig = AudioConfig()
    budgets: BudgetConfig = BudgetConfig()
    server: ServerConfig = ServerConfig()
    memory: MemoryConfig = MemoryConfig()
    mic: MicConfig = MicConfig()
    safety: SafetyConfig = SafetyConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    source: Annotated[str, Field(exclude=True)] = ""
    """Where this config came from (for messages)."""

    def with_changes(self, **sections: dict) -> NabuConfig:
        """A copy with some fields of some sections replaced, validated like a loaded file.

        `model_copy(update=...)` would skip validation and leave nested sections as dicts.
        """
        data = self.model_dump(exclude={"source"})
        for section, values in sections.items():
            data[section].update(values)
        return NabuConfig(**data, source=self.source)


SECTIONS = tuple(name for name in NabuConfig.model_fields if name != "source")
"""The top-level keys a config file may hold (`source` is set by the loader)."""


def expand_env(value: object, env: dict[str, str] | os._Environ) -> object:
    """Expand `${VAR}` and `${VAR:-default}` in every string of a YAML tree.

    `${VAR}` with VAR unset becomes an empty string, so an optional secret can
    be left out without the config failing to load.
    """
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config class that holds the key at `loc` (list indices skipped), if any."""
    model: type[BaseModel] = NabuConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        kinds = (field.annotation, *get_args(field.annotation))
        sub = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def _unknown_key(key: str, allowed: list[str]) -> str:
    """The words after "unknown key": the nearest allowed key, or all of them."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean `{close[0]}`?"
    return f"unknown key; allowed: {', '.join(allowed)}"


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    if model is NabuConfig:
        return list(SECTIONS)
    return list(model.model_fields)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration in {source}:"]
    for e in err.errors():
        loc = e["loc"]
        key = ".".join(str(p) for p in loc)
        msg = e["msg"]
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(str(loc[-1]), _allowed_keys(_model_at(loc[:-1])))
        elif e["type"] == "literal_error":
            allowed = e.get("ctx", {}).get("expected", "")
            msg = f"got {got!r}; allowed: {allowed}"
        elif e["type"] in ("tuple_type", "list_type"):
            msg = f"should be a list, e.g. [a, b] or one '- item' per line (got {got!r})"
        elif e["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"should be a section of keys (key: value lines indented below it), got {got!r}"
        elif "input" in e and not isinstance(got, dict):
            msg = f"{msg} (got {got!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_dotenv_file(path: Path | None = None) -> None:
    """Read `.env` (current directory) into the environment without overriding it."""
    from dotenv import load_dotenv

    load_dotenv(path or Path.cwd() / ".env", override=False)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(
            f"Config file not found: {path}. Pass an existing YAML file "
            f"(see configs/ for examples) or leave it out to use the defaults."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not a text file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections (stt:, llm:, ...)")
    unknown = [
        f"  {key}: {_unknown_key(str(key), list(SECTIONS))}" for key in raw if key not in SECTIONS
    ]
    if unknown:
        raise ConfigError("\n".join([f"Invalid configuration in {path}:", *unknown]))
    return raw


def layer(base: dict, over: dict) -> dict:
    """`over` laid on `base`: sections and sub-sections merge key by key; any other value
    (a number, a string, a list) replaces the one below it."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and value is None:
            continue  # `stt:` with nothing under it (all commented out) changes nothing
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = layer(below, value)
        else:
            merged[key] = value
    return merged


_ENDPOINTS = (("llm",), ("stt", "openai"), ("tts", "openai"))


def _keep_keys_with_their_endpoints(merged: dict, own: dict) -> None:
    """An endpoint the user's file moves elsewhere does not take default.yaml's key along.

    default.yaml's `${OPENAI_API_KEY}` is meant for OpenAI's own endpoint; a file that
    points `llm.base_url` at another server without naming a key must not send that
    secret there (it can name one: `api_key: ${OPENAI_API_KEY}`).
    """
    for section in _ENDPOINTS:
        mine, theirs = own, merged
        for key in section:
            mine = mine.get(key) if isinstance(mine, dict) else None
            theirs = theirs.get(key) if isinstance(theirs, dict) else None
        if isinstance(mine, dict) and isinstance(theirs, dict):
            if "base_url" in mine and "api_key" not in mine:
                theirs["api_key"] = ""


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> NabuConfig:
    """Load the defaults (configs/default.yaml, embedded as nabu_pipeline/default.yaml), lay a
    config file (`path`, else NABU_CONFIG) over them, then the environment's overrides.

    The file only says what differs: a key it leaves out keeps default.yaml's value, so
    `${OPENAI_API_KEY}` there still reaches a config that never mentions the key.
    `NABU_LLM_BASE_URL` and `NABU_LLM_MODEL` override whatever the files say, so one
    command can point any config at another endpoint.
    """
    environ = os.environ if env is None else env
    if path is None:
        path = environ.get("NABU_CONFIG") or DEFAULT_CONFIG_PATH
    path = Path(path)
    raw = _read_yaml(DEFAULT_CONFIG_PATH)
    if path.resolve() != DEFAULT_CONFIG_PATH.resolve():
        own = _read_yaml(path)
        raw = layer(raw, own)
        _keep_keys_with_their_endpoints(raw, own)
    raw = expand_env(raw, environ)
    llm = raw.get("llm")
    if isinstance(llm, dict):
        if environ.get("NABU_LLM_BASE_URL"):
            llm["base_url"] = environ["NABU_LLM_BASE_URL"]
        if environ.get("NABU_LLM_MODEL"):
            llm["model"] = environ["NABU_LLM_MODEL"]
    home = raw.get("home_assistant", {})
    if isinstance(home, dict):
        for var, key in (("NABU_HA_URL", "url"), ("NABU_HA_TOKEN", "token")):
            if environ.get(var):
                raw["home_assistant"] = home = {**home, key: environ[var]}
    try:
        return NabuConfig.model_validate({**raw, "source": str(path)})
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, str(path))) from None
