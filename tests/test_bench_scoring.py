"""How the benchmark suites score, checked on made-up measurements (no models, no server)."""

from __future__ import annotations

import numpy as np

from benchmarks.accuracy import ModelResult, mean_over_seeds
from benchmarks.clips import load_manifest
from benchmarks.degrade import VARIANTS, degrade, degraded_sets, variant_sets
from benchmarks.hearing import judge_paused, summarise_paused
from benchmarks.latency import TurnMeasure
from nabu_pipeline.scripted_llm import Recorded

from .conftest import CLIPS

SENTENCE = "the birch canoe slid on the smooth planks"
PAUSES_AFTER = (3, 6)  # "the birch canoe | slid on the | smooth planks"
FED_AT, SPEECH_END = 100.0, 104.0
LAST_WORDS_AT = SPEECH_END + 0.8  # Whisper's transcript holding "smooth planks"


def measure(early_replies: int = 0, last_transcript_at: float = LAST_WORDS_AT) -> TurnMeasure:
    return TurnMeasure(
        "nabu",
        "clip",
        0,
        0,
        voice_to_voice_s=1.5,
        early_replies=early_replies,
        fed_at=FED_AT,
        speech_end_at=SPEECH_END,
        first_audio_at=SPEECH_END + 3.0,
        last_transcript_at=last_transcript_at,
    )


def request(*asked: str, at: float) -> Recorded:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Good morning."},
        {"role": "assistant", "content": "Good morning, Warren."},
        *({"role": "user", "content": text} for text in asked),
    ]
    return Recorded(messages=messages, body={}, at=at)


def test_misheard_first_words_of_a_stretch_are_not_a_cut():
    # One request after Whisper had his last words; it got "slid on the" wrong.
    heard = request("the birch canoe slipped under smooth planks", at=LAST_WORDS_AT + 0.1)
    verdict = judge_paused(SENTENCE, PAUSES_AFTER, measure(), heard)
    assert not verdict["cut_off"] and verdict["answered"]
    assert not verdict["all_parts_heard"]  # a recognition miss, scored apart


def test_a_stretch_that_reached_the_llm_alone_is_a_cut_whatever_whisper_heard():
    # Sent before the speech ended: it cannot hold the last stretch.
    early = request("the birch canoe slid on the", at=FED_AT + 2.5)
    verdict = judge_paused(SENTENCE, PAUSES_AFTER, measure(), early)
    assert verdict["cut_off"] and not verdict["all_parts_heard"]
    # Under load Whisper is late: the first stretches' request goes after the speech ended,
    # but still before the transcript of his last words. Still a cut.
    late = request("the birch canoe slid on the", at=SPEECH_END + 0.5)
    assert judge_paused(SENTENCE, PAUSES_AFTER, measure(), late)["cut_off"]
    # A reply that started before he finished is a cut even when its request was whole.
    whole = request(SENTENCE, at=LAST_WORDS_AT + 0.1)
    assert judge_paused(SENTENCE, PAUSES_AFTER, measure(early_replies=1), whole)["cut_off"]


def test_the_whole_sentence_heard_whole_is_clean():
    verdict = judge_paused(
        SENTENCE, PAUSES_AFTER, measure(), request(SENTENCE, at=LAST_WORDS_AT + 0.1)
    )
    assert not verdict["cut_off"] and verdict["all_parts_heard"] and verdict["coverage"] == 1.0


def test_the_question_is_every_user_message_since_the_last_answer():
    # pipecat's own aggregator leaves the stretches as separate user messages.
    split = request("the birch canoe", "slid on the", "smooth planks", at=LAST_WORDS_AT + 0.1)
    verdict = judge_paused(SENTENCE, PAUSES_AFTER, measure(), split)
    assert verdict["answered_request"] == "the birch canoe slid on the smooth planks"
    assert verdict["all_parts_heard"] and "morning" not in verdict["answered_request"]


def test_a_design_summary_counts_cuts_misses_and_silence_apart():
    rows = [
        {**judge_paused(SENTENCE, PAUSES_AFTER, measure(), req), "voice_to_voice_s": 1.5}
        for req in (
            request(SENTENCE, at=LAST_WORDS_AT + 0.1),  # clean
            request("the birch canoe slid on the", at=FED_AT + 2.5),  # cut
            request("the birch canoe slipped under smooth planks", at=LAST_WORDS_AT + 0.1),
            None,  # no answer at all
        )
    ]
    summary = summarise_paused(rows)
    assert summary["false_cutoffs"] == 1 and summary["false_cutoff_rate"] == 0.25
    assert summary["misheard_parts"] == 1 and summary["unanswered"] == 1


def test_the_paused_report_counts_sentences_and_questions_apart():
    from benchmarks.hearing import _group_figures
    from benchmarks.report import summary_table

    def row(group: str, cut: bool) -> dict:
        heard = request("the birch canoe slid on the", at=FED_AT + 2.5) if cut else None
        heard = heard or request(SENTENCE, at=LAST_WORDS_AT + 0.1)
        verdict = judge_paused(SENTENCE, PAUSES_AFTER, measure(), heard)
        return {**verdict, "group": group, "voice_to_voice_s": 1.5}

    rows = [row("sentences", True), row("sentences", False), row("questions", False)]
    groups = {"sentences": 2, "questions": 1}
    results = {
        "suite": "paused",
        "items": 3,
        "pauses": 6,
        "groups": groups,
        "designs": {
            "nabu": {
                **summarise_paused(rows),
                "groups": {g: _group_figures(rows, g) for g in groups},
            }
        },
    }
    table = summary_table(results)
    assert "| nabu, sentences | 1/2 | 50 % |" in table, table
    assert "| nabu, questions | 0/1 | 0 % |" in table, table
    assert "(2 sentences, 1 questions)" in table


def result(wer: float, rtf: float = 0.1) -> ModelResult:
    return ModelResult("base", wer, rtf, [])


def test_degraded_wer_is_the_mean_over_noise_seeds():
    figures = mean_over_seeds([result(0.30), result(0.36), result(0.33, rtf=0.2)])
    assert figures["wer"] == 0.33 and figures["wer_per_seed"] == [0.30, 0.36, 0.33]
    assert figures["wer_spread"] == 0.06 and abs(figures["rtf"] - 0.1333) < 1e-4


def test_each_noise_seed_is_a_different_realisation(tmp_path):
    manifest = tmp_path / "two.tsv"
    manifest.write_text(
        "file\tduration_s\ttranscript\n"
        f"{CLIPS / 'goforward.wav'}\t2.79\tgo forward ten meters\n"
        f"{CLIPS / 'sb_spk2_snt2.wav'}\t1.76\tWhat joy there is in living.\n"
    )
    clips = load_manifest(manifest)
    sets = degraded_sets(clips, seeds=3)
    assert [len(s) for s in sets] == [2, 2, 2]
    # Set 0 is the suite's old single realisation; the others differ from it and each other.
    assert np.array_equal(sets[0][1].samples, degrade(clips[1], seed=1).samples)
    first_clip = [s[0].samples for s in sets]
    assert len({a.tobytes() for a in first_clip}) == 3
    assert all(s[0].transcript == clips[0].transcript for s in sets)


def test_his_degraded_suite_varies_one_factor_at_a_time_and_repeats_exactly(tmp_path):
    manifest = tmp_path / "three.tsv"
    manifest.write_text(
        "file\tduration_s\ttranscript\n"
        f"{CLIPS / 'goforward.wav'}\t2.79\tgo forward ten meters\n"
        f"{CLIPS / 'sb_spk2_snt2.wav'}\t1.76\tWhat joy there is in living.\n"
        f"{CLIPS / 'something.wav'}\t3.0\tgo somewhere and do something\n"
    )
    clips = load_manifest(manifest)
    sets = variant_sets(clips, seeds=2)
    assert list(sets) == list(VARIANTS)
    clean = clips[0].samples
    slow = sets["slow 0.75x"][0][0].samples
    assert abs(len(slow) / len(clean) - 1 / 0.75) < 0.05
    # Talk under his voice: wideband, same length, a different mix for each seed.
    talk = [s[0].samples for s in sets["talk 5 dB"]]
    assert all(len(t) == len(clean) for t in talk) and not np.array_equal(*talk)
    # The same seeds give the same audio on every run.
    again = variant_sets(clips, seeds=2)
    for name in VARIANTS:
        assert np.array_equal(sets[name][1][2].samples, again[name][1][2].samples), name
    assert all(c.transcript == clips[i].transcript for i, c in enumerate(sets["his room"][0]))
