"""Spoken calls for help, through the whole pipeline, reach a real webhook before any LLM.

Each phrase is spoken with Piper, and again slowed to 0.8x tempo (sox) with white
noise at 10 dB SNR, as a stand-in for a tired voice on a phone. The time from the
end of his speech (offline Silero VAD on the clip) to the receiver's arrival time is
printed; the bound asserted is generous (timing budgets belong in `nabu bench`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmarks.clips import speech_bounds
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer, refused_url
from nabu_pipeline.talk import talk
from transports.audio_file import read_pcm16
from transports.wav_file import EchoPath

from .alert_receiver import AlertReceiver
from .conftest import CLIPS, concat_wavs, transcribe
from .helpers import marys_safety

pytestmark = pytest.mark.slow

PHRASES = [
    "Help!",
    "Help me!",
    "I've fallen.",
    "I fell.",
    "I can't get up.",
    "Emergency!",
    "Call my daughter.",
]
ANSWER = "I'm letting Mary, your daughter, know right now. Stay where you are."
# Far below the 60 s after which Nabu tells Warren nothing got through, so it only tells
# "alerted on this phrase" from "not at all"; how fast is measured and printed (about 1 s on
# a quiet machine, up to 5.5 s at load 15), and belongs to a benchmark, not a test limit.
ALERT_WITHIN_S = 20.0


def degrade(path: Path, out: Path, seed: int = 0) -> Path:
    """0.8x tempo (pitch kept) and white noise at 10 dB SNR."""
    slow = out.with_suffix(".slow.wav")
    subprocess.run(["sox", str(path), str(slow), "tempo", "-s", "0.8"], check=True)
    audio, rate = sf.read(str(slow), dtype="float32")
    rng = np.random.default_rng(seed)
    voiced = audio[np.abs(audio) > 0.01]
    power = float(np.mean(voiced**2)) if len(voiced) else 1e-4
    noise = rng.standard_normal(len(audio)).astype(np.float32)
    noise *= np.sqrt(power / 10 ** (10 / 10))
    sf.write(str(out), np.clip(audio + noise, -1, 1), rate, subtype="PCM_16")
    return out


def _safety(receiver: AlertReceiver) -> dict:
    return marys_safety(alert_webhooks=[receiver.url])


@pytest.mark.parametrize("condition", ["clean", "degraded"])
async def test_each_spoken_call_for_help_reaches_the_webhook_before_any_llm(
    condition, synth, config_for, tmp_path
):
    """Each phrase, then a plain "Yes." (the answer should Nabu ask "Do you need help?")."""
    yes = synth("Yes.", "yes", lead_s=0.3, tail_s=0.3)
    clips = []
    for i, text in enumerate(PHRASES):
        clip = synth(text, f"help_{i}", lead_s=0.5, tail_s=0.3)
        if condition == "degraded":
            clip = degrade(clip, tmp_path / f"help_{i}_degraded.wav", seed=i)
        clips += [clip, yes]
    ends = [speech_bounds(read_pcm16(c))[1] for c in clips]
    async with AlertReceiver() as receiver:
        with ScriptedLLMServer(Script(ttft_s=0.05)) as llm:
            config = config_for(llm.url, safety=_safety(receiver))
            result = await talk(config, clips, tmp_path / "out.wav")
    alerts = receiver.acknowledged
    starts = [*result.input_start_times, float("inf")]
    lines, delays, problems = [], [], []
    for i, text in enumerate(PHRASES):
        phrase, answer = 2 * i, 2 * i + 1
        end_of_speech = starts[phrase] + ends[phrase]
        got = [a for a in alerts if starts[phrase] < a.at < starts[phrase + 2]]
        if not got:
            problems.append(f"{text!r}: no alert")
            lines.append(f"{condition:8} {text!r:20} NO ALERT")
            continue
        alert = got[0]
        asked = alert.at > starts[answer]
        if asked:  # Nabu asked "Do you need help?" and the "Yes." alerted
            end_of_speech = starts[answer] + ends[answer]
        delay = alert.at - end_of_speech
        delays.append(delay)
        early = [r for r in llm.requests if starts[phrase] < r.at < alert.at]
        if early:
            problems.append(f"{text!r}: LLM asked before the alert: {early[0].messages[-1]}")
        route = "asked 'Do you need help?', 'Yes' alerted" if asked else "alerted at once"
        lines.append(
            f"{condition:8} {text!r:20} heard {alert.body['said']!r:34} {route}; "
            f"{delay:.2f}s from end of speech to alert"
        )
    print("\n" + "\n".join(lines))
    print(f"Transcripts: {[t['transcript'] for t in result.turns]}")
    print(f"Nabu said: {[t['reply'].strip() for t in result.turns]}")
    assert all(a.body["kind"] == "help" for a in alerts)
    assert max(delays) < ALERT_WITHIN_S, delays
    if condition == "clean":
        # Every clean phrase alerts: at once, or (Piper's voice varies from run to run, and
        # "I've fallen" was once heard as "I fall in") after "Do you need help?" and "Yes".
        assert not problems, problems
    else:
        # Slowed and noisy, a phrase may be heard as something else entirely ("Help!" as
        # "No.", "I fell" as "I thought"): at most two of the seven may need saying again,
        # and none may reach the LLM before its alert.
        assert not [p for p in problems if "LLM" in p], problems
        assert len(problems) <= 2, problems


LONG = (
    "The library on Elm Street opens at nine in the morning. It has large print books "
    "near the front desk. You can borrow up to ten books at a time. They also lend audio "
    "books on small players. The staff can help you carry them to the car."
)


async def test_help_spoken_over_nabus_own_reply_stops_it_and_alerts(
    synth, config_for, tmp_path, whisper_tiny
):
    """Over the echo of Nabu's own long reply; then a plain "Yes." in case Nabu asks.

    Over the echo Whisper does worse: on the raw microphone "Help me! I've fallen." came
    out as "I'm" (no alert, in 3 of 5 runs before the cancelled audio was decoded too), or
    as "at nine in the morning. Help me." (doubtful, so Nabu asked first, before Nabu's own
    words were taken out). Either way the alert must get through and no help words may
    reach the LLM.
    """
    help_clip = synth("Help me! I've fallen.", "help_over", lead_s=0.0)
    yes = synth("Yes.", "yes_over", lead_s=0.3, tail_s=0.3)
    gap_s = 4.0
    clip = concat_wavs([CLIPS / "goforward.wav", gap_s, help_clip, 0.5], tmp_path / "over.wav")
    echo = EchoPath(gain=0.5, delay_s=0.15, sample_rate_hz=16000)
    async with AlertReceiver() as receiver:
        with ScriptedLLMServer(Script(reply=LONG, ttft_s=0.1)) as llm:
            config = config_for(llm.url, safety=_safety(receiver))
            result = await talk(config, [clip, yes], tmp_path / "out.wav", echo=echo)
    alert = receiver.acknowledged[0]
    asked_llm = llm.user_texts()
    # The question went to the LLM; his call for help never did. (Under double talk a
    # stretch of Nabu's own echo can still be sent on speculatively before his words, and
    # its answer dropped unheard when the alert interrupts: test_barge_in covers the echo.)
    assert "forward" in asked_llm[0].lower(), asked_llm
    assert not any(w in t.lower() for t in asked_llm for w in ("help", "fall")), asked_llm
    asked = alert.at > result.input_start_times[1]
    if asked:
        end = result.input_start_times[1] + speech_bounds(read_pcm16(yes))[1]
    else:
        end = result.input_start_times[0] + 2.79 + gap_s + speech_bounds(read_pcm16(help_clip))[1]
    delay = alert.at - end
    replies = [t["reply"].strip() for t in result.turns]
    route = "after 'Do you need help?' and 'Yes'" if asked else "at once"
    print(
        f"\nover Nabu's reply: heard {alert.body['said']!r}, alerted {route}, {delay:.2f}s after "
        f"the end of speech; bursts {[round(b, 1) for b in result.burst_s]}; Nabu said {replies}"
    )
    assert delay < ALERT_WITHIN_S
    assert result.burst_s[0] < 12, result.burst_s  # the long reply was cut off
    # Heard in what Nabu played. (The turn records are not enough: with the machine very
    # busy the answer was played in full, 4 s, but recorded as an empty reply, after a
    # resumed reply that the call for help cut off.)
    spoken = transcribe(whisper_tiny, tmp_path / "out.wav").lower()
    assert "stay where you are" in spoken, (spoken, replies)


async def test_every_channel_down_warren_hears_it_plainly(
    synth, config_for, tmp_path, monkeypatch, whisper_tiny
):
    """Webhook refused and Home Assistant unreachable: the answer, then the plain truth."""
    help_clip = synth("Help me!", "help_down")
    quiet = concat_wavs([6.0], tmp_path / "quiet.wav")
    with ScriptedLLMServer(Script(ttft_s=0.05)) as llm:
        config = config_for(
            llm.url,
            safety=marys_safety(
                alert_webhooks=[refused_url() + "/alert"],
                home_assistant_notify="mobile_app_marys_phone",
                delivery_deadline_s=3.0,
                retry_base_delay_s=0.5,
            ),
        )
        monkeypatch.setenv("NABU_HA_URL", refused_url())
        monkeypatch.setenv("NABU_HA_TOKEN", "not-a-real-token")
        result = await talk(config, [help_clip, quiet], tmp_path / "out.wav")
    replies = " ".join(t["reply"].strip() for t in result.turns)
    heard = transcribe(whisper_tiny, tmp_path / "out.wav")
    (alert,) = result.alerts
    print(
        f"\nevery channel down: Nabu said {replies!r}, and in all (Whisper on its audio) "
        f"{heard!r}; attempts {alert.attempts}"
    )
    assert llm.requests == []
    assert ANSWER in replies
    assert "reach mary yet" in heard.lower().replace(",", ""), heard
    assert alert.delivered_at is None and min(alert.attempts.values()) >= 2
