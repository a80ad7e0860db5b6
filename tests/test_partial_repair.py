"""One word masked by noise: Nabu asks about that word, not the whole sentence (issue 19).

Real speech (Piper) with one word covered by white noise, real Whisper through `talk()`,
and the scripted OpenAI-protocol server recording what the LLM received: Nabu's question
is heard back with Whisper from its own audio, and his one-word answer is joined to the
rest of his sentence before anything reaches the LLM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nabu_pipeline import engines
from nabu_pipeline.config import STTConfig
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.talk import talk
from processors.partial_repair import PartialRepair, doubtful_part, joined, question
from processors.phrases import PhraseMatcher

from .conftest import transcribe

MASK_SNR_DB = -10.0


def mask_word(path: Path, word: str, out: Path, seed: int = 0) -> Path:
    """`path` with white noise over `word` (found by Whisper's word timestamps on the
    clean audio) at MASK_SNR_DB against that word's own power."""
    audio, rate = sf.read(str(path), dtype="float32")
    model = engines.whisper(STTConfig(model="base")).model
    segments, _ = model.transcribe(audio, language="en", word_timestamps=True)
    (span,) = [w for s in segments for w in s.words if w.word.strip(" .,?!").lower() == word]
    a, b = int(span.start * rate), int(span.end * rate)
    power = float(np.mean(audio[a:b] ** 2))
    noise = np.random.default_rng(seed).standard_normal(b - a).astype(np.float32)
    audio[a:b] += noise * np.sqrt(power / 10 ** (MASK_SNR_DB / 10))
    sf.write(str(out), np.clip(audio, -1, 1), rate, subtype="PCM_16")
    return out


@pytest.mark.slow
async def test_a_word_masked_by_noise_is_asked_about_and_his_answer_joined(
    synth, config_for, whisper_tiny, tmp_path
):
    # Masked, base hears "...about the well?" and doubts "well" (0.22-0.28 over two noise
    # seeds at -10 and -15 dB) among words scored 0.70-1.00.
    sentence = synth("Who wrote the book about the whale?", "whale", lead_s=0.3)
    masked = mask_word(sentence, "whale", tmp_path / "whale_masked.wav")
    answer = synth("The whale.", "the_whale", lead_s=0.3)
    with ScriptedLLMServer(Script(reply="Herman Melville wrote it.")) as llm:
        result = await talk(config_for(llm.url), [masked, answer], tmp_path / "out.wav")
    print(f"Turns: {[(t['transcript'], t['reply']) for t in result.turns]}")
    print(f"The LLM received: {llm.user_texts()}")
    asked = transcribe(whisper_tiny, tmp_path / "out.wav").lower()
    print(f"Nabu said (tiny.en): {asked!r}")
    # One request, the sentence whole again with his word in it.
    (received,) = llm.user_texts()
    assert "whale" in received.lower() and "who wrote the book" in received.lower(), received
    # The question named the part missed and the words around it.
    assert "about the what" in asked, asked
    assert "say it again" not in asked and "did you say" not in asked, asked


def _words(text: str, doubted: str) -> tuple[tuple[str, float], ...]:
    return tuple((w, 0.2 if w.strip(".?") == doubted else 0.9) for w in text.split())


def test_only_one_doubted_part_not_the_first_word_is_asked_about():
    assert doubtful_part(_words("Turn on the kitchen lamp.", "lamp"), 0.35, 4) == (4, 5)
    assert doubtful_part(_words("Turn on the kitchen lamp.", "Turn"), 0.35, 4) is None
    assert doubtful_part(_words("Turn on the lamp.", "xx"), 0.35, 4) is None  # none doubted
    assert doubtful_part(_words("Lamp on.", "Lamp"), 0.35, 4) is None  # too short
    two_apart = (("Take", 0.9), ("my", 0.2), ("pills", 0.9), ("at", 0.2), ("nine", 0.9))
    assert doubtful_part(two_apart, 0.35, 4) is None  # two parts: the whole is doubtful
    assert doubtful_part(_words("Turn on the kitchen lamp.", "lamp"), 0.0, 4) is None  # off
    assert doubtful_part(_words("Tell me about a horse.", "a"), 0.35, 4) is None  # small word


def test_the_question_and_the_joined_sentence():
    words = "Please remind me to take my clothes at 9.".split()
    assert question(words, 6, 7) == "Please remind me to take my what at 9?"
    assert joined(words, 6, 7, "Pills.") == "Please remind me to take my pills at 9."
    assert joined(words, 6, 7, "My pills.") == "Please remind me to take my pills at 9."
    assert joined(words, 6, 7, "I said my pills.") == "Please remind me to take my pills at 9."
    lamp = "Turn on the kitchen lamb.".split()
    assert question(lamp, 4, 5) == "Turn on the kitchen what?"
    assert joined(lamp, 4, 5, "The kitchen light.") == "Turn on the kitchen light."
    assert joined(lamp, 4, 5, "Kitchen.") is None  # nothing left once the repeat is taken off


def test_an_answer_is_only_an_answer_while_the_question_stands():
    now = [0.0]
    matcher = PhraseMatcher({"stop": ("stop",), "no": ("no",)})
    repair = PartialRepair(matcher, timeout_s=30, clock=lambda: now[0])
    words = "Turn on the kitchen lamb.".split()
    assert repair.offer(words, 4, 5) == "Turn on the kitchen what?"
    assert repair.answer("Stop.") is None  # a command, and the question is over
    assert repair.answer("Light.") is None
    repair.offer(words, 4, 5)
    assert repair.answer("Turn on the kitchen light please.") is None  # said whole again
    repair.offer(words, 4, 5)
    assert repair.answer("What's the weather?") is None  # a question of his own
    repair.offer(words, 4, 5)
    now[0] = 31.0
    assert repair.answer("Light.") is None  # too late
    repair.offer(words, 4, 5)
    assert repair.answer("Light.") == "Turn on the kitchen light."
