"""Nabu's own words heard back are taken out of a transcript; Warren's own words stay."""

from __future__ import annotations

import pytest

from processors.echo_words import SpokenWords, opening_echo, without_echo

LIBRARY = (
    "The library on Elm Street opens at nine in the morning. It has large print books near "
    "the front desk. The staff can help you carry them to the car."
)


def runs_of(*sentences: str) -> set[tuple[str, str]]:
    spoken = SpokenWords()
    for s in sentences:
        spoken.said(s)
    return spoken.runs()


@pytest.mark.parametrize(
    ("heard", "kept"),
    [
        # Transcripts Whisper made over Nabu's reply in the help-over-reply test.
        ("at nine in the morning. Help me.", "Help me."),
        (
            "It's open tonight. Help me more. I've fallen.",
            "It's open tonight. Help me more. I've fallen.",
        ),
        ("that night. Help me. I've fallen.", "that night. Help me. I've fallen."),
        ("It has large", ""),
        # Misheard echo: every word Nabu's, or one like it (CI, with one core kept busy).
        ("The library one, Elm.", ""),
        ("The library on Elm Street opens at 9 in the...", ""),
        ("books near the front desk", ""),
        ("the front desk, stop.", "stop."),
        # His words that Nabu also said, one at a time, stay.
        ("Help!", "Help!"),
        ("the car, help me", "the car, help me"),
        ("Can you help me?", "Can you help me?"),
        ("Yes, the car.", "Yes, the car."),
        ("What time does it open?", "What time does it open?"),
        ("Is the library open?", "Is the library open?"),
    ],
)
def test_runs_of_nabus_words_leave_and_his_stay(heard, kept):
    assert without_echo(heard, runs_of(LIBRARY)) == kept


def test_nothing_said_takes_nothing_out():
    assert without_echo("at nine in the morning", set()) == "at nine in the morning"


def test_only_what_nabu_said_lately_counts():
    now = [0.0]
    spoken = SpokenWords(clock=lambda: now[0])
    spoken.said("The kitchen light is on.")
    now[0] = 100.0
    spoken.said("Okay.")
    assert without_echo("is the kitchen light on", spoken.runs()) == "is the kitchen light on"


def test_a_replys_opening_words_are_known_until_the_next_reply():
    spoken = SpokenWords()
    spoken.said("The library on Elm Street opens at nine in the morning.")
    spoken.said("It has large print books near the front desk.")
    opening = spoken.opening()
    assert opening[:4] == ["the", "library", "on", "elm"] and len(opening) == 12
    # Transcripts Whisper made of a reply's first moments (CI, one core kept busy).
    assert opening_echo("the library.", opening)
    assert opening_echo("Library", opening)
    assert not opening_echo("library the", opening)  # not in Nabu's order
    assert not opening_echo("the car", opening)
    assert not opening_echo("the library on Elm", opening)  # three or more: without_echo's
    spoken.reply_ended()
    spoken.said("Okay.")
    assert spoken.opening() == ["okay"]
    assert not opening_echo("the library.", spoken.opening())
