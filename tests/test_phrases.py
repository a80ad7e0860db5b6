"""Stop and repeat phrases match whole utterances only; local answers are narrow."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from nabu_pipeline.config import GuardConfig, LocaleConfig, NabuConfig
from nabu_pipeline.pipeline import build_matcher
from processors.history_window import trim_to_turns
from processors.local_answers import NO_LLM, date_answer, local_answer, time_answer
from processors.phrases import Command
from processors.stop_phrases import StopPhraseFilter
from processors.transcript_guard import judge
from processors.whisper_stt import TranscriptEvidence

MATCHER = build_matcher(NabuConfig())

# How Warren might say each command: fillers, his name or Nabu's, the punctuation
# Whisper adds, a word said twice. Every row must be recognised as that command.
SAID = {
    Command.STOP: [
        "Stop.",
        "stop!",
        " Stop talking.",
        "Never mind.",
        "Be quiet!",
        "Okay, stop please.",
        "Nabu, stop.",
        "Stop, Nabu.",
        "Um, never mind.",
        "Um, stop.",
        "Okay, stop.",
        "Stop stop.",
        "Stop, stop, stop!",
        "Uh, stop it.",
        "Hey Nabu, be quiet.",
        "STOP.",
        "Please stop.",
        "Hmm... that's enough.",
        "Oh, shut up.",
    ],
    Command.REPEAT: [
        "Say that again.",
        "Say that again, please.",
        "Pardon?",
        "What?",
        "Sorry?",
        "Um, could you say that again?",
        "Nabu, repeat that.",
        "Come again?",
        "What did you say?",
        "Repeat, repeat.",
    ],
    Command.SLOWER: [
        "Slower.",
        "Slower, please.",
        "Slow down.",
        "Nabu, slow down please.",
        "Speak slower.",
        "Um, more slowly.",
        "Can you say that slower?",
    ],
    Command.YES: [
        "Yes.",
        "Yes!",
        "Yes, Nabu.",
        "Okay, yes.",
        "Yeah.",
        "Yep.",
        "Yes yes.",
        "Uh huh.",
        "That's right.",
        "Yes please.",
        "Um, yes.",
        "Correct.",
    ],
    Command.NO: [
        "No.",
        "No!",
        "No, Nabu.",
        "No no.",
        "Nope.",
        "Um, no.",
        "That's wrong.",
        "No, I didn't.",
    ],
    Command.TIME: [
        "What time is it?",
        "What's the time?",
        "Nabu, what time is it?",
        "Um, what time is it now?",
        "Can you tell me the time, please?",
        "Do you know the time?",
        "Tell me the time.",
    ],
    Command.DATE: [
        "What's the date today?",
        "What day is it?",
        "What's today's date?",
        "Nabu, what day is it today?",
        "Tell me the date.",
        "What is the date?",
    ],
}

# Near-misses: a command word inside a longer sentence is a question or another request.
NOT_COMMANDS = [
    "Don't stop.",
    "How do I stop the heater?",
    "Stop the music in the kitchen.",
    "Never mind the weather, what time is it?",
    "The bus stop is far.",
    "Yes, and turn on the light.",
    "No, I want the kitchen light.",
    "What time does the pharmacy open?",
    "What is the weather?",
    "I said yes to my daughter.",
    "Slower than yesterday.",
    "Thank you.",
    "",
    "...",
]


@pytest.mark.parametrize(("command", "text"), [(c, t) for c, texts in SAID.items() for t in texts])
def test_each_way_warren_says_a_command_is_that_command(command, text):
    match = MATCHER.match(text)
    assert match is not None and match.command == command, (text, match)
    assert match.trusted


@pytest.mark.parametrize("text", NOT_COMMANDS)
def test_near_misses_are_not_commands(text):
    assert MATCHER.match(text) is None, text


def test_templates_with_a_slot_capture_what_was_said_and_are_not_trusted():
    matcher = MATCHER.extended({"remember": ["remember [that] {fact}"]})
    match = matcher.match("Nabu, remember that my pills are in the kitchen drawer.")
    assert match.command == "remember" and not match.trusted
    assert match.slots == {"fact": "my pills are in the kitchen drawer"}
    assert matcher.match("Stop.").command == Command.STOP  # the table is still whole


async def test_every_stage_agrees_on_a_command():
    """The stop filter, the guard's bypass and the read-back's yes use the same matcher."""
    from pipecat.frames.frames import TranscriptionFrame, TTSSpeakFrame
    from pipecat.tests.utils import run_test

    from processors.transcript_guard import TranscriptGuard

    stop = StopPhraseFilter(MATCHER)
    for text in SAID[Command.STOP]:
        assert stop.is_stop_phrase(text), text
    unsure = _evidence(avg_logprob=-0.85)
    guard = TranscriptGuard(GuardConfig(), MATCHER)
    frames = [
        TranscriptionFrame("Okay, stop.", "", "", result=unsure),
        TranscriptionFrame("Um, stop.", "", "", result=unsure),
        TranscriptionFrame("Turn the kitchen light on.", "", "", result=unsure),
        TranscriptionFrame("Okay, yes.", "", "", result=unsure),
    ]
    down, _ = await run_test(guard, frames_to_send=frames, expected_down_frames=None)
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert texts == ["Okay, stop.", "Um, stop.", " ", "Turn the kitchen light on"]
    assert spoken == ["Did you say: Turn the kitchen light on?"]


def test_time_and_date_answers_follow_locale():
    now = datetime(2026, 3, 5, 15, 7, tzinfo=ZoneInfo("America/Chicago"))
    assert time_answer(LocaleConfig(clock="12h"), now) == "It's 3:07 in the afternoon."
    assert time_answer(LocaleConfig(), now.replace(hour=21, minute=0)) == "It's 9 o'clock at night."
    assert time_answer(LocaleConfig(clock="24h"), now) == "It's 15:07."
    assert date_answer(LocaleConfig(), now) == "Today is Thursday, March fifth, 2026."


def test_local_answers_are_narrow():
    locale = LocaleConfig()

    def answer(text, llm_available=True):
        return local_answer(text, locale, MATCHER, llm_available=llm_available)

    assert answer("What time is it?").startswith("It's")
    assert answer("What's the date today?").startswith("Today")
    assert answer("Tell me about the moon. What time is it?").startswith("It's")
    assert answer("What time does the pharmacy open?") is None
    assert answer("Tell me about the moon.") is None
    assert answer("What can you do?") is None  # the LLM can say more
    assert answer("Tell me about the moon.", llm_available=False) == NO_LLM
    assert "Nabu" in answer("What can you do?", llm_available=False)


def _evidence(**kw):
    base = dict(
        no_speech_prob=0.05,
        avg_logprob=-0.3,
        compression_ratio=1.2,
        audio_s=2.0,
        rms_dbfs=-25.0,
        stt_s=0.4,
    )
    base.update(kw)
    return TranscriptEvidence(**base)


def test_guard_verdicts():
    g = GuardConfig()
    assert judge("Turn on the kitchen light.", _evidence(), g).action == "ok"
    assert judge("Thanks for watching!", _evidence(), g).action == "drop"
    assert judge("you", _evidence(), g).action == "drop"
    assert judge("...", _evidence(), g).action == "drop"
    assert judge("Hello there.", _evidence(rms_dbfs=-70), g).action == "drop"
    assert judge("la la la la la", _evidence(compression_ratio=3.1), g).action == "drop"
    assert judge("mumble", _evidence(no_speech_prob=0.8, avg_logprob=-1.4), g).action == "drop"
    assert judge("Turn of the kitten lie", _evidence(avg_logprob=-1.3), g).action == "doubtful"
    # Fluent words from sound Whisper doubts is English at all (speech played backwards).
    assert judge("Here's not all your food.", _evidence(language_prob=0.25), g).action == "doubtful"
    assert judge("Turn on the kitchen light.", _evidence(language_prob=0.9), g).action == "ok"
    assert judge("Turn on the kitchen light.", _evidence(language_prob=None), g).action == "ok"


def test_history_window_keeps_last_turns():
    msgs = [{"role": "system", "content": "s"}]
    for i in range(5):
        msgs += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    msgs.append({"role": "user", "content": "now"})
    trimmed = trim_to_turns(msgs, 2)
    assert [m["content"] for m in trimmed] == ["s", "q3", "a3", "q4", "a4", "now"]
    assert trim_to_turns(msgs, 10) == msgs
    assert [m["content"] for m in trim_to_turns(msgs, 0)] == ["s", "now"]


def test_guard_strips_phantom_sentences_and_prompt_echo():
    from processors.transcript_guard import regurgitated_vocabulary, strip_phantom_sentences

    g = GuardConfig()
    assert strip_phantom_sentences("What joy there is in living. Thank you for watching.", g) == (
        "What joy there is in living."
    )
    assert strip_phantom_sentences("Thanks for watching!", g) == ""
    vocab = ("Siobhan", "Okonkwo", "Schenectady", "Poughkeepsie", "WQXR")
    assert regurgitated_vocabulary("Siobhan Okonkwo Schenectady Poughkeepsie WQXR", vocab)
    assert regurgitated_vocabulary("Names and things Warren mentions.", vocab)
    assert not regurgitated_vocabulary("Call my daughter Siobhan.", vocab)
    assert judge("Siobhan, Okonkwo, Poughkeepsie", _evidence(), g, vocab).action == "drop"
    assert judge("Turn the kitchen light on.", _evidence(avg_logprob=-0.8), g).action == "doubtful"


def test_superseded_partials_are_dropped_before_the_llm():
    from processors.history_window import drop_superseded

    answered = [{"role": "user", "content": "Tear a thin"}, {"role": "assistant", "content": "Ok."}]
    msgs = [
        *answered,
        {"role": "user", "content": "Tear a thin sheet"},
        {"role": "user", "content": "Tear a thin sheet from the yellow pad."},
    ]
    out = drop_superseded(msgs, {"Tear a thin sheet", "Tear a thin"})
    assert out == [*answered, {"role": "user", "content": "Tear a thin sheet from the yellow pad."}]
    same_turn = [{"role": "user", "content": "Go somewhere. Go somewhere and do something."}]
    assert drop_superseded(same_turn, {"Go somewhere."})[-1]["content"] == (
        "Go somewhere and do something."
    )
    unrelated = [{"role": "user", "content": "What time is it?"}, {"role": "user", "content": "Hi"}]
    assert drop_superseded(unrelated, {"Go somewhere."}) == unrelated


def test_guard_drops_decoder_loops_below_the_compression_limit():
    loop = (
        "Here's not all your food, Nick. Your foot is not close, you'll see. Your foot is not "
        "close, you'll see. Here's not all your food, no tea. Your foot is not close, you'll see."
    )
    verdict = judge(loop, _evidence(compression_ratio=1.66, avg_logprob=-0.56), GuardConfig())
    assert str(verdict) == "drop: repetitive (decoder loop)"
    assert (
        judge("Go forward, go forward, go forward ten meters.", _evidence(), GuardConfig()).action
        == "ok"
    )


def test_read_back_only_for_short_nearly_sure_transcripts_and_answers_expire():
    from processors.confirmation import Confirmation

    g = GuardConfig()

    def read_back(text, **evidence) -> bool:
        verdict = judge(text, _evidence(**evidence), g)
        assert verdict.action == "doubtful", verdict
        return verdict.read_back

    assert read_back("Turn on the kitchen light.", avg_logprob=-0.85)
    assert not read_back("Turn on the light.", avg_logprob=-1.4)  # too unsure
    assert not read_back("Here's not all your food.", avg_logprob=-0.8, language_prob=0.2)
    long = "I would like you to tell me about the big parade that went down our street today"
    assert not read_back(long, avg_logprob=-0.8)  # too long to follow
    assert not read_back("Light.", avg_logprob=-0.8)  # one word: ask again

    now = [0.0]
    c = Confirmation(MATCHER, g.confirm_timeout_s, clock=lambda: now[0])
    assert c.offer("Turn on the kitchen light.") == "Did you say: Turn on the kitchen light?"
    assert c.answer("Yeah.") == ("yes", "Turn on the kitchen light")
    assert c.answer("Yes.") == ("", None)  # nothing pending any more
    c.offer("Call my daughter.")
    assert c.answer("No.") == ("no", None)
    c.offer("Call my daughter.")
    assert c.answer("Okay, yes, Nabu.") == ("yes", "Call my daughter")
    c.offer("Call my daughter.")
    assert c.answer("What's the weather like?") == ("", None)  # a new sentence, not an answer
    c.offer("Call my daughter.")
    now[0] = 60.0
    assert c.answer("Yes.") == ("", None)  # too late to be an answer


def test_an_utterance_stays_open_while_its_first_words_are_still_being_transcribed():
    """On a busy CPU Whisper can take longer than Warren's pause: he is still continuing."""
    from processors.utterance_state import UtteranceState

    u = UtteranceState()
    assert u.start_speech() is False  # the first words of a new utterance
    u.awaiting += 1  # his pause: the words so far go to Whisper
    assert u.start_speech() is True  # he carries on before the transcript is back
    u.awaiting -= 1
    u.transcribed("Go forward")
    assert u.start_speech() is True
    u.pause_expired = True  # silence reached the release hold: the utterance is over
    assert u.start_speech() is False and u.transcripts == [] and u.awaiting == 0


async def test_a_doubtful_stop_still_stops():
    """Whisper is rarely sure of a lone "Stop"; the guard lets a doubtful command through."""
    from pipecat.frames.frames import TranscriptionFrame, TTSSpeakFrame
    from pipecat.tests.utils import run_test

    from processors.transcript_guard import TranscriptGuard

    guard = TranscriptGuard(GuardConfig(), MATCHER)
    unsure = _evidence(avg_logprob=-0.81)
    frames = [
        TranscriptionFrame("Stop.", "", "", result=unsure),
        TranscriptionFrame("Turn the kitchen light on.", "", "", result=unsure),
    ]
    down, _ = await run_test(guard, frames_to_send=frames, expected_down_frames=None)
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert texts[0] == "Stop."  # passed on to the stop-phrase filter
    assert texts[1] == " "  # the doubtful sentence is not sent on...
    assert spoken and spoken[0].startswith("Did you say")  # ...it is read back


async def test_the_hold_waits_for_speech_still_with_whisper():
    """On a busy CPU Whisper can take longer than the hold: the reply to his first words
    must not go out while the rest of what he said is still being transcribed."""
    from pipecat.frames.frames import (
        MetricsFrame,
        TTSAudioRawFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.tests.utils import SleepFrame, run_test

    from processors.speech_release_gate import SpeechReleaseGate
    from processors.utterance_state import UtteranceState

    async def order(awaiting: int) -> list[str]:
        utterance = UtteranceState(pause_expired=False, awaiting=awaiting)
        gate = SpeechReleaseGate(0.05, utterance)
        frames = [
            VADUserStartedSpeakingFrame(),
            VADUserStoppedSpeakingFrame(stop_secs=0.0),
            TTSAudioRawFrame(b"\0\0" * 160, 16000, 1),
            SleepFrame(sleep=1.0),
            MetricsFrame(data=[]),  # a system frame: passes the gate at once
        ]
        down, _ = await run_test(gate, frames_to_send=frames, expected_down_frames=None)
        return [type(f).__name__ for f in down if isinstance(f, (TTSAudioRawFrame, MetricsFrame))]

    assert await order(awaiting=0) == ["TTSAudioRawFrame", "MetricsFrame"]
    assert await order(awaiting=1) == ["MetricsFrame", "TTSAudioRawFrame"]


async def test_a_blank_transcript_never_opens_a_turn():
    """A consumed transcript arriving after its turn closed must not open (and interrupt) one."""
    from pipecat.frames.frames import TranscriptionFrame
    from pipecat.turns.types import ProcessFrameResult

    from processors.consumed_transcript import WordsStartATurn

    started = []
    strategy = WordsStartATurn()

    async def on_started(*_args, **_kwargs):
        started.append(True)

    strategy.trigger_user_turn_started = on_started
    blank = await strategy.process_frame(TranscriptionFrame(" ", "", "", finalized=True))
    assert blank == ProcessFrameResult.CONTINUE and not started
    words = await strategy.process_frame(TranscriptionFrame("Stop.", "", ""))
    assert words == ProcessFrameResult.STOP and started
