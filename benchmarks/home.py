"""`nabu bench --suite home`: spoken home requests against a real Home Assistant.

Each request is spoken by Piper into the whole pipeline (`nabu talk`'s driver), in a
real Home Assistant core started for the run (tests/home_assistant, its own venv).
Per turn it records the path taken (local: no LLM request during the turn; LLM: the
local OpenAI-protocol model called a tool), the device's state before and after (read
from Home Assistant), what Nabu said, and voice-to-voice; the report gives p50/p95 for
the local path and the LLM path separately, and the confirmation transcript.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from loguru import logger

from nabu_pipeline.config import NabuConfig, TTSConfig
from nabu_pipeline.home_tools import ACT, READ
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer, ToolCall


@dataclass(frozen=True)
class Turn:
    say: str
    watch: str
    """The entity whose state is shown before and after."""
    pause_after_words: int = 0
    """Warren stops for `pause_s` after this many words (0: he says it in one go)."""
    pause_s: float = 1.0

    @property
    def shown(self) -> str:
        """What he said, with his pause marked."""
        if not self.pause_after_words:
            return self.say
        words = self.say.split()
        k = self.pause_after_words
        return " ".join(words[:k]) + f" ({self.pause_s:g} s) " + " ".join(words[k:])


@dataclass(frozen=True)
class Conversation:
    name: str
    turns: tuple[Turn, ...]
    setup: tuple[tuple[str, bool], ...] = ()
    """input_boolean helpers set before it starts (the "hardware")."""
    stop_home_after: int | None = None
    """Stop Home Assistant after this turn's reply (the home going down mid-conversation)."""


CONVERSATIONS = (
    Conversation("light on", (Turn("Turn on the kitchen light.", "light.kitchen_light"),)),
    Conversation(
        "light off",
        (Turn("Turn off the bedroom light.", "light.bedroom_light"),),
        setup=(("bedroom_light_power", True),),
    ),
    Conversation("lock question", (Turn("Is the front door locked?", "lock.front_door"),)),
    Conversation(
        "temperature question",
        (Turn("What's the temperature in the living room?", "sensor.living_room_temperature"),),
    ),
    Conversation(
        "garage close",
        (Turn("Close the garage door.", "cover.garage_door"),),
        setup=(("garage_door_up", True),),
    ),
    Conversation(
        "unlock, confirmed",
        (
            Turn("Please unlock the front door.", "lock.front_door"),
            Turn("Yes.", "lock.front_door"),
        ),
    ),
    Conversation(
        "garage open, refused",
        (Turn("Open the garage door.", "cover.garage_door"), Turn("No.", "cover.garage_door")),
    ),
    Conversation(
        "two fit",
        (
            Turn("Turn on the kitchen.", "switch.kitchen_speaker"),
            Turn("The speaker.", "switch.kitchen_speaker"),
        ),
    ),
    Conversation("LLM: cold", (Turn("I'm a bit cold.", "climate.heating"),)),
    Conversation(
        "LLM: everything off",
        (Turn("Turn off everything downstairs.", "light.living_room_lamp"),),
        setup=(("living_room_lamp_power", True), ("kitchen_light_power", True)),
    ),
    Conversation(
        "LLM: unlock, confirmed",
        (
            Turn("Could you let my daughter in?", "lock.front_door"),
            Turn("Yes.", "lock.front_door"),
        ),
    ),
    Conversation(
        "home down mid-conversation",
        (
            Turn("Turn on the bedroom light.", "light.bedroom_light"),
            Turn("Turn off the bedroom light.", "light.bedroom_light"),
        ),
        stop_home_after=0,
    ),
    # He stops mid-command, where what he has said so far could already be a command
    # ("Turn on the kitchen") or a question: a complete command's shorter hold
    # (turn.complete_command_hold_s) must not answer the half before he finishes.
    Conversation(
        "paused: light on",
        (Turn("Turn on the kitchen light.", "light.kitchen_light", pause_after_words=4),),
    ),
    Conversation(
        "paused: light off",
        (Turn("Turn off the bedroom light.", "light.bedroom_light", pause_after_words=3),),
        setup=(("bedroom_light_power", True),),
    ),
    Conversation(
        "paused: lock question",
        (Turn("Is the front door locked?", "lock.front_door", pause_after_words=4),),
    ),
    Conversation(
        "paused: garage close",
        (Turn("Close the garage door.", "cover.garage_door", pause_after_words=3),),
        setup=(("garage_door_up", True),),
    ),
    Conversation(
        "paused: unlock, confirmed",
        (
            Turn("Please unlock the front door.", "lock.front_door", pause_after_words=2),
            Turn("Yes.", "lock.front_door"),
        ),
    ),
)
# Silence after his last word in every clip (`_speak`).
TRAILING_PAD_S = 0.3

# The scripted model's tool calls for the requests the phrases leave to it.
LLM_CALLS = {
    "cold": [ToolCall(ACT, {"names": ["Heating"], "action": "set_temperature", "temperature": 72})],
    "downstairs": [
        ToolCall(
            ACT,
            {
                "names": ["Kitchen Light", "Living Room Lamp", "Kitchen Speaker"],
                "action": "turn_off",
            },
        )
    ],
    "daughter": [ToolCall(ACT, {"names": ["front door"], "action": "unlock"})],
}


def scripted_model(messages: list[dict]):
    """Calls a tool for the LLM-path requests, then says exactly what the tool returned."""
    last = messages[-1]
    if last.get("role") == "tool":
        return json.loads(last["content"]).get("say", "Sorry.")
    users = [m for m in messages if m.get("role") == "user"]
    text = str(users[-1].get("content", "")).lower() if users else ""
    for key, calls in LLM_CALLS.items():
        if key in text:
            return calls
    return [ToolCall(READ, {"names": []})]


def _speak(turn: Turn, path: Path) -> Path:
    from benchmarks.suites import pause_after_word
    from nabu_pipeline import engines

    voice = engines.piper(TTSConfig())
    pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(turn.say))
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    samples = soxr.resample(samples, voice.config.sample_rate, 16000)
    if turn.pause_after_words:
        pcm16 = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        pcm16 = pause_after_word(pcm16, turn.pause_after_words, turn.pause_s)
        samples = pcm16.astype(np.float32) / 32768
    pad = np.zeros(int(0.5 * 16000), dtype=np.float32)
    tail = pad[: int(TRAILING_PAD_S * 16000)]
    sf.write(str(path), np.concatenate([pad, samples, tail]), 16000, subtype="PCM_16")
    return path


def _state_words(state: dict | None) -> str:
    if state is None:
        return "(unreachable)"
    attrs = state.get("attributes", {})
    if state["entity_id"].startswith("climate."):
        return f"{state['state']}, set {attrs.get('temperature')} C"
    if state["entity_id"].startswith("sensor."):
        return f"{state['state']} {attrs.get('unit_of_measurement', '')}"
    return state["state"]


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _ha_fixture():
    """The tests' Home Assistant fixture (tests/home_assistant/core.py) of this checkout."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "tests" / "home_assistant" / "core.py"
    if not path.is_file():
        raise SystemExit(f"nabu bench --suite home needs the repository checkout ({path})")
    spec = importlib.util.spec_from_file_location("nabu_test_home_assistant", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_home(args, config: NabuConfig) -> dict:
    core_module = _ha_fixture()
    HA_VERSION, HomeAssistantCore = core_module.HA_VERSION, core_module.HomeAssistantCore
    from nabu_pipeline.talk import talk

    work = Path(tempfile.mkdtemp(prefix="nabu-home-bench-"))
    core = HomeAssistantCore(work).start()
    rows: list[dict] = []
    repeat = max(1, args.repeat)
    try:
        with ScriptedLLMServer(Script(reply=scripted_model, ttft_s=0.35)) as server:
            data = config.model_dump(exclude={"source"})
            data["llm"].update(base_url=server.url, provider="openai")
            data["home_assistant"].update(url=core.url, token=core.token)
            clips: dict[str, Path] = {}
            for n in range(repeat):
                for conv in CONVERSATIONS:
                    if core.proc is None:
                        core.start()
                    core.reset()
                    for helper, on in conv.setup:
                        core.set_switch(f"input_boolean.{helper}", on)
                    time.sleep(0.3)
                    rows += asyncio.run(
                        _conversation(conv, core, server, data, clips, work, talk, n)
                    )
    finally:
        core.destroy()
    # The paths' latency from requests said in one go; the paused ones are reported apart.
    whole = [r for r in rows if not r["pause_s"]]
    local = [r["voice_to_voice_s"] for r in whole if r["path"] == "local" and r["voice_to_voice_s"]]
    llm = [r["voice_to_voice_s"] for r in whole if r["path"] == "LLM" and r["voice_to_voice_s"]]
    paused = [r for r in rows if r["pause_s"]]
    stt = [r["stt_s"] for r in rows if r.get("stt_s")]
    return {
        "suite": "home",
        "home_assistant_version": HA_VERSION,
        "repeat": repeat,
        "turns": rows,
        "local_voice_to_voice_s": {"p50": _pct(local, 50), "p95": _pct(local, 95), "n": len(local)},
        "llm_voice_to_voice_s": {"p50": _pct(llm, 50), "p95": _pct(llm, 95), "n": len(llm)},
        "stt_model": config.stt.model,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "stt_s": {"p50": _pct(stt, 50), "p95": _pct(stt, 95), "n": len(stt)},
        "pause_tolerance_s": config.turn.pause_tolerance_s,
        "complete_command_hold_s": config.turn.complete_command_hold_s,
        "paused_cut": sum(bool(r["spoke_before_he_finished"]) for r in paused),
        "paused_n": len(paused),
    }


async def _conversation(conv, core, server, data, clips, work, talk, n) -> list[dict]:
    inputs = []
    for turn in conv.turns:
        if turn.shown not in clips:
            clips[turn.shown] = _speak(turn, work / f"clip{len(clips)}.wav")
        inputs.append(clips[turn.shown])

    def read(entity_id: str):
        try:
            return core.state(entity_id)
        except OSError:
            return None

    before = [await asyncio.to_thread(read, conv.turns[0].watch)]
    after: list = []
    requests_at = [len(server.requests)]

    async def after_reply(i: int) -> None:
        after.append(await asyncio.to_thread(read, conv.turns[i].watch))
        requests_at.append(len(server.requests))
        if conv.stop_home_after == i:
            await asyncio.to_thread(core.stop)
        if i + 1 < len(conv.turns):
            before.append(await asyncio.to_thread(read, conv.turns[i + 1].watch))

    config = NabuConfig(**data)
    result = await talk(config, inputs, work / f"{conv.name}-{n}.wav", after_reply=after_reply)
    # On a loaded machine a late transcript can land in its own turn record, after the
    # record its reply went to: pair what was heard and what was said by order instead.
    heard = [t for t in result.turns if (t.get("transcript") or "").strip()]
    said = [t for t in result.turns if (t.get("reply") or "").strip()]
    rows = []
    for i, turn in enumerate(conv.turns):
        record = said[i] if i < len(said) else {}
        llm_calls = requests_at[i + 1] - requests_at[i] if i + 1 < len(requests_at) else 0
        # Nabu spoke while he was still saying it (in his pause): the half was answered.
        early = []
        if i < len(result.input_end_times):
            began = result.input_start_times[i]
            ended = result.input_end_times[i] - TRAILING_PAD_S
            early = [t for t in result.write_times if began <= t < ended]
        row = {
            "conversation": conv.name,
            "said": turn.shown,
            "pause_s": turn.pause_s if turn.pause_after_words else 0.0,
            "spoke_before_he_finished": bool(early),
            "heard": heard[i]["transcript"].strip() if i < len(heard) else "",
            # A pause may make two transcripts and two replies: show them all.
            "heard_all": [t["transcript"].strip() for t in heard],
            "said_all": [t["reply"].strip() for t in said],
            "path": "LLM" if llm_calls else "local",
            "entity": turn.watch,
            "before": _state_words(before[i] if i < len(before) else None),
            "after": _state_words(after[i] if i < len(after) else None),
            "nabu_said": (record.get("reply") or "").strip(),
            "voice_to_voice_s": record.get("voice_to_voice_s"),
            "stt_s": record.get("stt_s"),
            "tts_first_audio_s": record.get("tts_first_audio_s"),
        }
        logger.info(f"home bench: {row}")
        rows.append(row)
    return rows


def markdown(r: dict) -> str:
    out = [
        "# Nabu home benchmark",
        "",
        f"Home Assistant {r['home_assistant_version']} (a real core, its own venv, the test "
        f"home of tests/home_assistant); Whisper {r['stt_model']}; pause hold "
        f"{r['pause_tolerance_s']} s; LLM: the local OpenAI-protocol server issuing real tool "
        f"calls (first token 0.35 s); {r['repeat']} repeat(s). A complete command's reply is "
        f"held {r.get('complete_command_hold_s', 0.3)} s after his speech "
        "(turn.complete_command_hold_s), others the full pause hold.",
        "",
        f"Machine load average at the end {r['load_average']} on {os.cpu_count()} cores, "
        "Home Assistant's core among them: Whisper took p50 "
        f"{r['stt_s']['p50']} s per utterance (end of speech to transcript), most of every "
        "voice-to-voice below.",
        "",
        "| path | voice-to-voice p50 (s) | p95 (s) | n |",
        "|---|---|---|---|",
    ]
    for name, key in (("local", "local_voice_to_voice_s"), ("LLM", "llm_voice_to_voice_s")):
        v = r[key]
        out.append(f"| {name} | {v['p50']} | {v['p95']} | {v['n']} |")
    out += [
        "",
        "| Warren said | Whisper heard | path | device | before | after | Nabu said | v2v (s) "
        "| STT (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r["turns"]:
        v, stt = t["voice_to_voice_s"], t.get("stt_s")
        out.append(
            f"| {t['said']} | {t['heard']} | {t['path']} | {t['entity']} | {t['before']} | "
            f"{t['after']} | {t['nabu_said']} | {_s(v)} | {_s(stt)} |"
        )
    paused = [t for t in r["turns"] if t.get("pause_s")]
    if paused:
        out += [
            "",
            "## Paused mid-command",
            "",
            f"Requests with a pause where the words so far could already be a command; "
            f"complete-command hold {r['complete_command_hold_s']} s. Nabu spoke before he "
            f"finished in {r['paused_cut']} of {r['paused_n']}.",
            "",
            "| Warren said | Whisper heard (all) | before | after | Nabu said (all) "
            "| spoke before he finished |",
            "|---|---|---|---|---|---|",
        ]
        for t in paused:
            cut = "**yes**" if t["spoke_before_he_finished"] else "no"
            out.append(
                f"| {t['said']} | {' / '.join(t['heard_all'])} | {t['before']} | {t['after']} "
                f"| {' / '.join(t['said_all'])} | {cut} |"
            )
    return "\n".join(out) + "\n"


def _s(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def summary_table(r: dict) -> str:
    lines = []
    for t in r["turns"]:
        v = t["voice_to_voice_s"]
        lines.append(
            f"{t['path']:5} {t['said'][:34]:34} {t['before']:>14} -> {t['after']:14} "
            f"{'' if v is None else f'{v:.2f}s'}  {t['nabu_said'][:60]}"
        )
    lv, mv = r["local_voice_to_voice_s"], r["llm_voice_to_voice_s"]
    lines.append(
        f"local v2v p50 {lv['p50']} s (n={lv['n']}); LLM v2v p50 {mv['p50']} s (n={mv['n']})"
    )
    return "\n".join(lines)
