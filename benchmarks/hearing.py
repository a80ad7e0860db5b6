"""Hearing Warren right: the paused-speech, no-speech and vocabulary suites.

- paused: does a sentence with 0.5-1.2 s pauses stay one turn? Turn-taking and recognition
  are scored apart: a false cut-off is a reply that starts before he has finished, or a reply
  to a request sent before Whisper had his last words (the first stretches reached the LLM
  alone); a stretch Whisper misheard in the whole sentence's request is a recognition miss.
- nospeech: noise, hum, music, breathing, clicks and backwards speech must put no words in
  front of the LLM (with and without the vocabulary prompt).
- vocabulary: names, places and devices he uses, spoken by several voices and slowed down;
  word error rate and term hits with and without `stt.vocabulary` (Whisper's initial prompt).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
from tqdm import tqdm

from benchmarks.accuracy import normalise, transcribe
from benchmarks.clips import SAMPLE_RATE, Clip, load_manifest
from benchmarks.designs import build_nabu, build_pipecat_default
from benchmarks.latency import THREE_SENTENCES, TurnMeasure, run_conversation, summarise
from benchmarks.suites import PausedClip, nospeech_suite, pause_after_word, paused_suite
from nabu_pipeline import engines
from nabu_pipeline.config import NabuConfig
from nabu_pipeline.home_assistant import Entity
from nabu_pipeline.known_words import KnownWords
from nabu_pipeline.memory_store import MemoryStore
from nabu_pipeline.scripted_llm import Recorded, Script, ScriptedLLMServer
from transports.audio_file import read_pcm16

# Each stretch of the sentence between pauses must be at least this present in the
# answered request: the measure is "did the LLM get every part", not Whisper's spelling.
PART_PRESENT = 0.5

# Warren's own words (a made-up but typical household): names, places, devices, medicines.
VOCABULARY = (
    "Siobhan",
    "Okonkwo",
    "Lisinopril",
    "Metoprolol",
    "Sonos",
    "Philips Hue",
    "Roomba",
    "Ecobee",
    "Schenectady",
    "Poughkeepsie",
    "WQXR",
    "Marguerite",
)
VOCAB_SENTENCES = (
    ("Call my daughter Siobhan.", ("siobhan",)),
    ("Is Doctor Okonkwo in on Tuesday?", ("okonkwo",)),
    ("Remind me to take my Lisinopril at eight.", ("lisinopril",)),
    ("Did I take the Metoprolol this morning?", ("metoprolol",)),
    ("Play the radio on the Sonos.", ("sonos",)),
    ("Turn off the Philips Hue lamp in the den.", ("philips", "hue")),
    ("Start the Roomba in the kitchen.", ("roomba",)),
    ("Set the Ecobee to seventy degrees.", ("ecobee",)),
    ("What is the weather in Schenectady?", ("schenectady",)),
    ("How far is Poughkeepsie from here?", ("poughkeepsie",)),
    ("Put on WQXR please.", ("wqxr",)),
    ("When is Marguerite coming over?", ("marguerite",)),
)
ESPEAK_VOICES = ("en-us", "en-us+m3", "en-us+f2", "en+m7")
# The same household as Nabu knows it without anyone typing a vocabulary: facts Warren kept
# and his home's devices and areas (nabu_pipeline/known_words.py builds the prompt from them).
HOUSEHOLD_FACTS = (
    "my daughter Siobhan visits on Sundays",
    "Doctor Okonkwo is in on Tuesday",
    "I take Lisinopril at eight",
    "I take Metoprolol in the morning",
    "Marguerite from next door comes over on Fridays",
    "my sister lives in Schenectady",
    "my son lives in Poughkeepsie",
    "I listen to WQXR in the morning",
)
HOUSEHOLD_DEVICES = (
    ("light.kitchen_light", "Kitchen Light", (), "Kitchen"),
    ("switch.kitchen_speaker", "Kitchen Speaker", ("Sonos",), "Kitchen"),
    ("light.den_lamp", "Philips Hue Lamp", (), "Den"),
    ("vacuum.roomba", "Roomba", (), "Kitchen"),
    ("climate.ecobee", "Ecobee", ("Heating",), "Hallway"),
    ("lock.front_door", "Front Door", (), "Hallway"),
    ("cover.garage_door", "Garage Door", ("Garage",), "Garage"),
    ("light.bedroom_light", "Bedroom Light", (), "Bedroom"),
    ("light.living_room_lamp", "Living Room Lamp", (), "Living Room"),
)


@dataclass
class _ListedHome:
    """The household's devices as Home Assistant lists them (what KnownWords reads)."""

    devices: tuple

    def entities(self) -> list[Entity]:
        return [Entity(*d) for d in self.devices]

    @property
    def areas(self) -> tuple[str, ...]:
        return tuple(sorted({d[3] for d in self.devices}))


def household_terms() -> tuple[str, ...]:
    """Whisper's prompt terms for the household, as Nabu gathers them (real SQLite store)."""
    with tempfile.TemporaryDirectory(prefix="nabu-household-") as tmp:
        store = MemoryStore(Path(tmp)).open()
        try:
            for fact in HOUSEHOLD_FACTS:
                store.save(fact, source="family")
            return KnownWords((), _ListedHome(HOUSEHOLD_DEVICES), store).terms()
        finally:
            store.close()


def _answered_request(server: ScriptedLLMServer, m: TurnMeasure) -> Recorded | None:
    """The request whose answer Warren heard first (the last one before that answer began)."""
    if m.first_audio_at is None:
        return None
    asked = [r for r in server.requests if m.fed_at <= r.at < m.first_audio_at]
    return asked[-1] if asked else None


def _question(request: Recorded | None) -> str | None:
    """What the request asks: its user messages after the last answer, joined."""
    if request is None:
        return None
    asking: list[str] = []
    for message in request.messages:
        if message.get("role") == "user":
            asking.append(str(message.get("content", "")))
        elif message.get("role") == "assistant":
            asking = []
    return " ".join(asking) if asking else None


def judge_paused(
    transcript: str, pause_after_words: tuple[int, ...], m: TurnMeasure, answered: Recorded | None
) -> dict:
    """Turn-taking and recognition of one paused sentence, scored apart.

    Cut off (turn-taking): a reply began before the speech ended, or the reply he heard
    answers a request sent before Whisper's last transcript of the clip. Segments are
    transcribed in order, so that last transcript is the one holding his last words
    (misheard or not): a request sent before it cannot hold them, and the first stretches
    reached the LLM alone. All parts heard (recognition): each stretch between pauses is
    at least half present, by the reference words, in what the answered request asks.
    """
    question = _question(answered)
    before_last_words = m.last_transcript_at is not None and (
        answered is not None and answered.at < m.last_transcript_at
    )
    return {
        "cut_off": m.early_replies > 0 or before_last_words,
        "answered": answered is not None,
        "all_parts_heard": _parts_present(transcript, pause_after_words, question),
        "coverage": round(_coverage(transcript, question), 2),
        "answered_request": question,
        "whisper_heard": m.heard_transcripts,
    }


def _windows(measures: list[TurnMeasure]) -> list[tuple[float, float]]:
    """[fed_at, next clip's fed_at) for each clip: the requests it caused."""
    starts = [m.fed_at for m in measures]
    return list(zip(starts, [*starts[1:], float("inf")], strict=True))


def _coverage(reference: str, text: str | None) -> float:
    ref = normalise(reference).split()
    got = set(normalise(text or "").split())
    return sum(w in got for w in ref) / len(ref) if ref else 1.0


def _parts_present(reference: str, cut_after_words: tuple[int, ...], text: str | None) -> bool:
    """Every stretch between pauses is in the request (half its words, at least)."""
    words = reference.split()
    bounds = [0, *cut_after_words, len(words)]
    return all(
        _coverage(" ".join(words[a:b]), text) >= PART_PRESENT
        for a, b in itertools.pairwise(bounds)
        if b > a
    )


# Questions as Warren asks them, said slowly by Piper: whole (does a finished question wait
# less?), and with a pause after words that can pass for a question of their own ("What
# time? (1 s) is my doctor's appointment"): is he left to finish? (word count, pause)
QUESTIONS: tuple[tuple[str, tuple[int, float] | None], ...] = (
    ("What is the weather like today?", None),
    ("Who wrote the book Moby Dick?", None),
    ("How far away is the moon?", None),
    ("When does the pharmacy open tomorrow?", None),
    ("Is it going to rain this afternoon?", None),
    ("What day is it today?", None),
    ("What time is my doctor's appointment?", (2, 1.0)),
    ("Who is the president of France?", (2, 0.8)),
    ("What's the weather in Boston tomorrow?", (2, 1.2)),
    ("How long do I boil an egg?", (2, 0.8)),
    ("Can you tell me the score of the game?", (4, 1.0)),
    ("Where did I put my glasses?", (3, 1.2)),
)
QUESTION_LENGTH_SCALE = 1.35
"""Piper slowed, as in the vocabulary suite: an older man's pace."""


def question_suite(config: NabuConfig) -> list[PausedClip]:
    """QUESTIONS spoken by Piper, pauses inserted at Whisper's word boundaries."""
    items = []
    for n, (text, pause) in enumerate(QUESTIONS):
        samples = _piper(text, config, QUESTION_LENGTH_SCALE)
        if pause is not None:
            samples = pause_after_word(samples, *pause)
        clip = Clip.measured(Path(f"question_{n:02d}.wav"), text, samples)
        items.append(
            PausedClip(
                clip=clip,
                source=clip.name,
                pauses_s=(pause[1],) if pause else (),
                pause_after_words=(pause[0],) if pause else (),
            )
        )
    return items


def run_paused(args, config: NabuConfig) -> dict:
    clips = load_manifest(args.manifest)
    groups = {"sentences": paused_suite(clips), "questions": question_suite(config)}
    labelled = [(g, i) for g, group in groups.items() for i in group]
    items = [i for _, i in labelled]
    designs = [
        ("nabu", build_nabu, config),
        # Nabu's default holds a whole question (Whisper's "?", smart-turn >= 0.5, asked only
        # when the reply is ready within the hold) 0.6 s; this is the whole hold for all.
        # (Reports of 2026-12-02 before session 11: "nabu" was the whole hold, the question
        # rule "nabu_question_hold", smart-turn asked on every question.)
        (
            "nabu_whole_hold",
            build_nabu,
            config.with_changes(turn={"complete_question_probability": 0}),
        ),
        # Any turn that sounds finished (smart-turn >= 0.8 and words that end) waits 0.6 s.
        (
            "nabu_complete_turn",
            build_nabu,
            config.with_changes(
                turn={"complete_turn_probability": 0.8, "complete_turn_hold_s": 0.6}
            ),
        ),
        ("pipecat_default", build_pipecat_default, config),
    ]
    progress = tqdm(total=len(items) * len(designs), desc="paused", unit="clip")
    results: dict = {"suite": "paused", "items": len(items), "designs": {}}
    try:
        for name, build, cfg in designs:
            with ScriptedLLMServer(
                Script(reply=THREE_SENTENCES, ttft_s=0.35, tokens_per_s=60)
            ) as s:
                cfg = cfg.with_changes(llm={"base_url": s.url, "provider": "openai"})
                measures = asyncio.run(
                    run_conversation(name, build, cfg, [i.clip for i in items], 0, progress)
                )
                rows = []
                for (group, item), m, (lo, hi) in zip(
                    labelled, measures, _windows(measures), strict=True
                ):
                    verdict = judge_paused(
                        item.clip.transcript, item.pause_after_words, m, _answered_request(s, m)
                    )
                    rows.append(
                        {
                            "clip": item.source,
                            "group": group,
                            "pauses_s": list(item.pauses_s),
                            **verdict,
                            "early_replies": m.early_replies,
                            "voice_to_voice_s": m.voice_to_voice_s,
                            "llm_requests": sum(lo <= r.at < hi for r in s.requests),
                        }
                    )
                results["designs"][name] = {
                    **summarise_paused(rows),
                    "groups": {g: _group_figures(rows, g) for g in groups},
                }
    finally:
        progress.close()
    results["pauses"] = sum(len(i.pauses_s) for i in items)
    results["groups"] = {g: len(group) for g, group in groups.items()}
    return results


def _group_figures(rows: list[dict], group: str) -> dict:
    """A design's figures on one group of items (sentences or questions), without its rows."""
    figures = summarise_paused([r for r in rows if r["group"] == group])
    figures.pop("rows")
    return figures


def summarise_paused(rows: list[dict]) -> dict:
    """A design's figures: cut-offs (turn-taking) apart from misheard parts (recognition)."""
    cut_offs = sum(r["cut_off"] for r in rows)
    misheard = sum(r["answered"] and not r["cut_off"] and not r["all_parts_heard"] for r in rows)
    return {
        "false_cutoff_rate": round(cut_offs / len(rows), 3) if rows else None,
        "false_cutoffs": cut_offs,
        "misheard_parts": misheard,
        "unanswered": sum(not r["answered"] for r in rows),
        "voice_to_voice_s": summarise([r["voice_to_voice_s"] for r in rows]),
        "rows": rows,
    }


def run_nospeech(args, config: NabuConfig) -> dict:
    clips = load_manifest(args.manifest)
    sounds = nospeech_suite(clips)
    variants = [
        ("no_vocabulary", config),
        ("with_vocabulary", config.with_changes(stt={"vocabulary": list(VOCABULARY)})),
        # The larger prompt Nabu builds from what it knows (facts, devices, areas).
        ("known_words", config.with_changes(stt={"vocabulary": list(household_terms())})),
    ]
    progress = tqdm(total=len(sounds) * len(variants), desc="nospeech", unit="sound")
    results: dict = {"suite": "nospeech", "sounds": len(sounds), "variants": {}}
    try:
        for name, cfg in variants:
            with ScriptedLLMServer(Script(reply="I heard something.", ttft_s=0.1)) as s:
                cfg = cfg.with_changes(llm={"base_url": s.url, "provider": "openai"})
                measures = asyncio.run(run_conversation(name, build_nabu, cfg, sounds, 0, progress))
                rows = []
                for clip, m, (lo, hi) in zip(sounds, measures, _windows(measures), strict=True):
                    asked = [r for r in s.requests if lo <= r.at < hi]
                    llm_words = sum(
                        len(normalise(str(r.messages[-1].get("content", ""))).split())
                        for r in asked
                        if r.messages and r.messages[-1].get("role") == "user"
                    )
                    rows.append(
                        {
                            "sound": clip.name,
                            "whisper_raw": " ".join(t.strip() for t in m.heard_transcripts).strip(),
                            "llm_requests": len(asked),
                            "words_to_llm": llm_words,
                            "nabu_spoke_s": m.spoken_s,
                            "nabu_said": m.reply.strip(),
                        }
                    )
                results["variants"][name] = {
                    "words_to_llm": sum(r["words_to_llm"] for r in rows),
                    "llm_requests": sum(r["llm_requests"] for r in rows),
                    "raw_whisper_words": sum(len(r["whisper_raw"].split()) for r in rows),
                    "asked_to_repeat": sum(r["nabu_spoke_s"] > 0 for r in rows),
                    "read_back": sum(r["nabu_said"].startswith("Did you say") for r in rows),
                    "rows": rows,
                }
    finally:
        progress.close()
    return results


def _espeak(text: str, voice: str, out: Path) -> Path:
    """espeak-ng at 130 words/min (a slow speaker), then 16 kHz."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "130", "-w", str(out), text],
        check=True,
        capture_output=True,
    )
    return out


def _piper(
    text: str, config: NabuConfig, length_scale: float, *, random: bool = True
) -> np.ndarray:
    """`text` in Piper's voice at 16 kHz; `random=False` leaves out Piper's sampling noise, so
    the same text gives the same audio every time (for a test's fixed input)."""
    import soxr
    from piper import SynthesisConfig

    voice = engines.piper(config.tts)
    still = {} if random else {"noise_scale": 0.0, "noise_w_scale": 0.0}
    speaking = SynthesisConfig(length_scale=length_scale, **still)
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=speaking))
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    audio = soxr.resample(audio, voice.config.sample_rate, SAMPLE_RATE)
    return (audio * 32767).astype(np.int16)


def vocabulary_clips(config: NabuConfig) -> list[Clip]:
    """Each sentence by several espeak-ng voices (if installed) and by Piper, slowed."""
    clips = []
    tmp = Path(tempfile.mkdtemp(prefix="nabu-vocab-"))
    have_espeak = shutil.which("espeak-ng") is not None
    for n, (text, _terms) in enumerate(VOCAB_SENTENCES):
        sources = [("piper_slow", _piper(text, config, 1.35))]
        if have_espeak:
            voice = ESPEAK_VOICES[n % len(ESPEAK_VOICES)]
            sources.append((f"espeak_{voice}", read_pcm16(_espeak(text, voice, tmp / f"{n}.wav"))))
        for label, samples in sources:
            clips.append(
                Clip(
                    path=tmp / f"{n}_{label}.wav",
                    transcript=text,
                    duration_s=len(samples) / SAMPLE_RATE,
                    samples=samples,
                    speech_start_s=0.0,
                    speech_end_s=len(samples) / SAMPLE_RATE,
                )
            )
    return clips


def run_vocabulary(args, config: NabuConfig) -> dict:
    clips = vocabulary_clips(config)
    terms = {text: t for text, t in VOCAB_SENTENCES}
    real = load_manifest(args.manifest)
    known = household_terms()  # one temporary store, not one per model
    out: dict = {
        "suite": "vocabulary",
        "sentences": len(VOCAB_SENTENCES),
        "clips": len(clips),
        "vocabulary": list(VOCABULARY),
        "known_words": list(known),
        "models": {},
    }
    for model in dict.fromkeys((config.stt.model, "tiny.en", "base")):
        for label, vocab in (("without", ()), ("with", VOCABULARY), ("known", known)):
            stt = config.stt.model_copy(update={"model": model, "vocabulary": vocab})
            whisper = engines.whisper(stt).model
            hyps = [transcribe(whisper, c.samples, stt) for c in clips]
            hits = sum(
                all(
                    t in normalise(h).split() or t in normalise(h).replace(" ", "")
                    for t in terms[c.transcript]
                )
                for c, h in zip(clips, hyps, strict=True)
            )
            real_hyps = [transcribe(whisper, c.samples, stt) for c in real]
            out["models"].setdefault(model, {})[label] = {
                "term_hit_rate": round(hits / len(clips), 3),
                "wer": round(
                    jiwer.wer(
                        [normalise(c.transcript) for c in clips], [normalise(h) for h in hyps]
                    ),
                    4,
                ),
                "real_clips_wer": round(
                    jiwer.wer(
                        [normalise(c.transcript) for c in real], [normalise(h) for h in real_hyps]
                    ),
                    4,
                ),
                "examples": [
                    {"said": c.transcript, "heard": h, "voice": c.path.stem}
                    for c, h in zip(clips, hyps, strict=True)
                ],
            }
    return out
