"""His own words in Whisper's prompt, from what Nabu knows: the family's list, the names in the
facts he keeps (real SQLite), his home's names (a real Home Assistant: tests/test_home_voice.py),
and a name from a kept fact heard through the whole pipeline (real Piper, real Whisper)."""

from __future__ import annotations

import pytest

from nabu_pipeline.known_words import MEMORY_REREAD_S, KnownWords, names_in
from nabu_pipeline.memory_store import MemoryStore
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.talk import talk
from processors.whisper_stt import vocabulary_prompt


@pytest.mark.parametrize(
    ("words", "names"),
    [
        ("my daughter Siobhan visits on Sundays", ["Siobhan"]),
        ("Siobhan is my daughter", ["Siobhan"]),
        ("Doctor Okonkwo is in on Tuesday", ["Okonkwo"]),
        ("I take Lisinopril at eight", ["Lisinopril"]),
        ("my son lives in New Rochelle", ["New Rochelle"]),
        ("My pills are in the drawer", []),
        ("the spare key's under Marguerite's mat", ["Marguerite"]),
    ],
)
def test_names_in_what_he_keeps(words, names):
    assert names_in(words) == names


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_family_words_first_then_his_facts_newest_first_and_bounded(tmp_path):
    store = MemoryStore(tmp_path).open()
    try:
        store.save("my daughter Siobhan visits on Sundays", source="family")
        store.save("I take Lisinopril at eight", source="family")
        clock = Clock()
        known = KnownWords(("WQXR",), memory=store, clock=clock)
        assert known.terms() == ("WQXR", "Lisinopril", "Siobhan")
        assert vocabulary_prompt(known) == (
            "Names and things Warren mentions: WQXR, Lisinopril, Siobhan."
        )
        # A fact kept later (by him, or by the family in the app) joins within a while.
        store.save("Doctor Okonkwo is in on Tuesday", source="family")
        assert "Okonkwo" not in known.terms()
        clock.now += MEMORY_REREAD_S
        assert known.terms()[:2] == ("WQXR", "Okonkwo")
        # Bounded: a long list keeps its first terms whole.
        many = tuple(f"Name{i:02d}" for i in range(100))
        short = KnownWords(many, max_terms=40, max_chars=400).terms()
        assert short == many[: len(short)] and len(short) <= 40
        assert len(", ".join(short)) <= 400
    finally:
        store.close()


@pytest.mark.slow
async def test_a_name_from_a_kept_fact_is_heard(tmp_path, synth, config_for):
    """tiny.en hears Piper's "Siobhan" as "Shubon" with no prompt (the vocabulary suite);
    kept in a fact, the name reaches the LLM as he said it."""
    data = tmp_path / "data"
    store = MemoryStore(data).open()
    store.save("my daughter Siobhan visits on Sundays", source="family")
    store.close()
    clip = synth("When is Siobhan coming over?", "siobhan")
    with ScriptedLLMServer(Script(reply="On Sunday.")) as server:
        config = config_for(server.url, stt={"model": "tiny.en"}, server={"data_dir": str(data)})
        await talk(config, [clip], tmp_path / "out.wav")
    asked = " ".join(server.user_texts())
    assert "Siobhan" in asked, asked


async def test_a_correction_teaches_the_word_for_every_later_decode(tmp_path):
    from pipecat.frames.frames import TranscriptionFrame
    from pipecat.tests.utils import run_test

    from nabu_pipeline.config import NabuConfig
    from nabu_pipeline.pipeline import build_matcher
    from processors.corrections import LearnCorrections

    matcher = build_matcher(NabuConfig())
    known = KnownWords(("WQXR",), data_dir=tmp_path)
    said = [
        "No, I said the porch light.",
        "No, I want the kitchen light.",  # not a correction: nothing learned
        "I said Siobhan, not Shubon.",
    ]
    down, _ = await run_test(
        LearnCorrections(matcher, known),
        frames_to_send=[TranscriptionFrame(t, "warren", "") for t in said],
        expected_down_frames=None,
    )
    # The sentences go on to be answered, unchanged.
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == said
    assert known.terms() == ("WQXR", "Siobhan", "porch light")
    # Kept in the data directory: the next session (or a restart) still knows them.
    assert KnownWords((), data_dir=tmp_path).terms() == ("Siobhan", "porch light")
