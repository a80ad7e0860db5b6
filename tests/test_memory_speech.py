"""Warren's memory end to end: real speech (Piper), real Whisper, `nabu talk` as separate
processes sharing one data directory, and a real OpenAI-protocol server that records what the
LLM received.

    process 1  "Remember that my pills are in the kitchen drawer."   read back, no LLM call
    process 2  "Where are my pills?"                                  the request carries the fact
               "Remember that my pills are in the bathroom cabinet now."   replaces it
               "Where are my pills?"                                  only the new fact is sent
    process 3  (no LLM at all) "What do you remember?"                 spoken from the store
               "Forget about my pills."
    process 4  "Where are my pills?"                           the fact is gone from the request

Also: the LLM's remember_fact tool (kept only after "yes", never a health detail), "slower"
kept for the next session until a spoken "forget everything" + "yes", and `nabu serve`
(one phone session tells, the next one and the family API know).

Set NABU_MEMORY_TRANSCRIPT=FILE to write the conversation (what Warren said, what Nabu said,
what the LLM received) to FILE.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from nabu_pipeline.memory_store import MemoryStore
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

from .conftest import ROOT, transcribe

pytestmark = pytest.mark.slow
NORMALISE = EnglishTextNormalizer()


def system_text(messages: list[dict]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")


def answer_from_memory(messages: list[dict]) -> str:
    """The scripted LLM answers only from what its request carries (the system message)."""
    system = system_text(messages)
    if "bathroom cabinet" in system:
        return "Your pills are in the bathroom cabinet."
    if "kitchen drawer" in system:
        return "Your pills are in the kitchen drawer."
    return "I'm sorry, I don't know where your pills are."


def nabu_talk(inputs: list[Path], out: Path, data_dir: Path, llm_url: str | None) -> str:
    """One `nabu talk` process; its printout."""
    env = {**os.environ, "NABU_DATA_DIR": str(data_dir)}
    env.pop("NABU_LLM_BASE_URL", None)
    if llm_url:
        env["NABU_LLM_BASE_URL"] = llm_url
    args = [sys.executable, "-m", "nabu_pipeline.cli", "talk", "--output", str(out)]
    for path in inputs:
        args += ["--input", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def said_by_nabu(printout: str) -> list[str]:
    """Nabu's replies in order. (On a busy CPU the printout may split one turn in two, the
    reply under the first half and the transcript under the second.)"""
    lines = printout.splitlines()
    said = [line.split("Nabu said:", 1)[1].strip() for line in lines if "Nabu said:" in line]
    return [s for s in said if s != "(nothing)"]


def test_remember_restart_recall_forget(tmp_path, synth, whisper_tiny):
    remember = synth("Remember that my pills are in the kitchen drawer.", "remember")
    where = synth("Where are my pills?", "where")
    moved = synth("Remember that my pills are in the bathroom cabinet now.", "moved")
    recall = synth("What do you remember?", "recall")
    forget = synth("Forget about my pills.", "forget")
    data = tmp_path / "data"
    log: list[dict] = []

    with ScriptedLLMServer(Script(reply=answer_from_memory, ttft_s=0.1)) as llm:
        # Process 1: remember. The command is answered without the LLM.
        out1 = nabu_talk([remember], tmp_path / "1.wav", data, llm.url)
        assert llm.requests == []
        assert said_by_nabu(out1) == [
            "Okay. I'll remember that your pills are in the kitchen drawer."
        ], out1
        heard = NORMALISE(transcribe(whisper_tiny, tmp_path / "1.wav"))
        assert "remember" in heard and "kitchen drawer" in heard, heard
        log.append({"process": 1, "printout": out1, "llm_requests": []})

        # Process 2, a new process: the question's request carries the fact; then the fact moves.
        out2 = nabu_talk([where, moved, where], tmp_path / "2.wav", data, llm.url)
        assert len(llm.requests) == 2, llm.user_texts()
        first, second = (system_text(r.messages) for r in llm.requests)
        assert "my pills are in the kitchen drawer" in first
        assert "bathroom cabinet" in second and "kitchen drawer" not in second
        replies = said_by_nabu(out2)
        assert replies[0] == "Your pills are in the kitchen drawer.", out2
        assert replies[1].startswith("Okay. I've changed that: I'll remember that your pills"), out2
        assert replies[2] == "Your pills are in the bathroom cabinet.", out2
        heard = NORMALISE(transcribe(whisper_tiny, tmp_path / "2.wav"))
        assert "kitchen drawer" in heard and "bathroom cabinet" in heard, heard
        log.append({"process": 2, "printout": out2, "llm_requests": llm.requests[:]})

        # Process 3, with no LLM at all: "what do you remember" and "forget" still work.
        out3 = nabu_talk([recall, forget], tmp_path / "3.wav", data, None)
        replies = said_by_nabu(out3)
        assert replies == [
            "You asked me to remember that your pills are in the bathroom cabinet now.",
            "Okay. I've forgotten that your pills are in the bathroom cabinet now.",
        ], out3
        heard = NORMALISE(transcribe(whisper_tiny, tmp_path / "3.wav"))
        assert "you asked me to remember" in heard and "forgotten" in heard, heard
        log.append({"process": 3, "printout": out3, "llm_requests": []})

        # Process 4: the forgotten fact is in no request any more.
        before = len(llm.requests)
        out4 = nabu_talk([where], tmp_path / "4.wav", data, llm.url)
        assert len(llm.requests) == before + 1
        assert "pills" not in system_text(llm.requests[-1].messages)
        assert said_by_nabu(out4) == ["I'm sorry, I don't know where your pills are."], out4
        log.append({"process": 4, "printout": out4, "llm_requests": llm.requests[before:]})

    store = MemoryStore(data).open()
    assert store.live() == []
    store.close()
    if os.environ.get("NABU_MEMORY_TRANSCRIPT"):
        write_transcript(Path(os.environ["NABU_MEMORY_TRANSCRIPT"]), log)


def write_transcript(path: Path, log: list[dict]) -> None:
    lines = []
    for entry in log:
        lines.append(f"=== nabu talk, process {entry['process']} ===")
        lines.append(entry["printout"].strip())
        for r in entry["llm_requests"]:
            tools = [t["function"]["name"] for t in r.body.get("tools", [])]
            lines.append(f"--- the LLM received (tools: {', '.join(tools) or 'none'}) ---")
            for m in r.messages:
                lines.append(f"[{m.get('role')}] {m.get('content')}")
    path.write_text("\n".join(lines) + "\n")


def offer_to_remember(messages: list[dict]) -> tuple[str, dict] | None:
    """The scripted LLM calls remember_fact when Warren mentions a lasting fact in passing."""
    if not messages or messages[-1].get("role") != "user":
        return None  # after the tool's result: answer in words
    said = NORMALISE(str(messages[-1].get("content", "")))
    if "spare key" in said:
        return "remember_fact", {"fact": "my spare key is under the blue pot"}
    if "blood pressure" in said:
        return "remember_fact", {"fact": "my blood pressure pills are the blue ones"}
    return None


def after_tool(messages: list[dict]) -> str:
    return "All right." if messages[-1].get("role") == "tool" else "Hello Warren."


async def test_llm_offers_a_fact_kept_only_after_yes_never_health(
    tmp_path, synth, whisper_tiny, config_for
):
    from nabu_pipeline.talk import talk

    key = synth("I keep my spare key under the blue pot.", "key")
    yes = synth("Yes.", "yes")
    health = synth("My blood pressure pills are the blue ones.", "health")
    script = Script(reply=after_tool, tool_call=offer_to_remember, ttft_s=0.1)
    with ScriptedLLMServer(script) as llm:
        config = config_for(llm.url)
        await talk(config, [key, yes, health], tmp_path / "out.wav")
    tools = [t["function"]["name"] for t in llm.requests[0].body.get("tools", [])]
    assert tools == ["remember_fact"]
    heard = NORMALISE(transcribe(whisper_tiny, tmp_path / "out.wav"))
    assert "shall i remember that your spare key is under the blue pot" in heard, heard
    assert "i will remember that your spare key" in heard or "i'll remember" in heard, heard
    store = MemoryStore(config.server.data_path).open()
    kept = [(f.words, f.source) for f in store.live()]
    store.close()
    assert kept == [("my spare key is under the blue pot", "assistant")]
    # The health detail was refused by the tool, and the LLM was told why.
    tool_results = [m for r in llm.requests for m in r.messages if m.get("role") == "tool"]
    assert any("health details" in str(m.get("content")) for m in tool_results), tool_results
    assert "your blood pressure" not in heard and "all right" in heard, heard


async def test_slower_is_kept_for_the_next_session_until_he_forgets_everything(
    tmp_path, synth, config_for
):
    from nabu_pipeline.talk import talk

    from .conftest import CLIPS

    slower = synth("Please speak slower.", "slower")
    forget_all = synth("Forget everything.", "forget_all")
    yes = synth("Yes.", "yes")
    with ScriptedLLMServer(Script(reply="The front door is locked.", ttft_s=0.1)) as llm:
        config = config_for(llm.url)
        # The same reply before and after "slower", so the two are compared like for like.
        first = await talk(
            config, [CLIPS / "goforward.wav", slower, CLIPS / "goforward.wav"], tmp_path / "1.wav"
        )
        # A new session (its own pipeline and TTS, built from the config and the store).
        second = await talk(config, [CLIPS / "goforward.wav"], tmp_path / "2.wav")
        store = MemoryStore(config.server.data_path).open()
        rate = store.preferences()["speech_rate"]
        # "Forget everything" is asked first; his spoken "yes" forgets the preference too.
        await talk(config, [forget_all, yes], tmp_path / "3.wav")
        kept = store.live()
        store.close()
        third = await talk(config, [CLIPS / "goforward.wav"], tmp_path / "4.wav")
    heard = [t["transcript"] for t in first.turns]
    normal, _, slowed = first.burst_s
    # A burst holds fixed silences besides the words (length scale 1.1 -> 1.3 gave 1.32 s ->
    # 1.44 s); the test voice has no random variation, so an unchanged rate is exactly equal.
    assert slowed > normal * 1.05, (first.burst_s, heard)
    assert second.burst_s[0] > normal * 1.05, (first.burst_s, second.burst_s)
    assert float(rate) == pytest.approx(config.tts.length_scale + config.tts.slower_step)
    assert kept == []
    assert abs(third.burst_s[0] - normal) < 0.1 * normal, (first.burst_s, third.burst_s)


async def test_serve_keeps_a_spoken_fact_for_the_next_session_and_the_family(
    tmp_path, synth, whisper_tiny, config_for
):
    """`nabu serve`: told over one phone connection, known to the next and to the family API."""
    import httpx
    import numpy as np
    import soundfile as sf

    from benchmarks.phone_client import PhoneClient, load_pcm

    from .server_harness import in_process

    token = "serve-memory-token-0123456789abcdef"
    remember = load_pcm(synth("Remember that my pills are in the kitchen drawer.", "remember"))
    where = load_pcm(synth("Where are my pills?", "where"))
    with (
        ScriptedLLMServer(Script(reply=answer_from_memory, ttft_s=0.1)) as llm,
        in_process(config_for(llm.url), token=token) as srv,
    ):
        async with PhoneClient(srv.ws(token=token)) as phone:
            await phone.turn(remember)
        assert llm.requests == []
        out = tmp_path / "told.wav"
        sf.write(str(out), np.frombuffer(bytes(phone.bot_audio), dtype=np.int16), 24000)
        heard = NORMALISE(transcribe(whisper_tiny, out))
        assert "remember" in heard and "kitchen drawer" in heard, heard
        async with PhoneClient(srv.ws(token=token)) as phone:  # a new session
            await phone.turn(where)
        assert "my pills are in the kitchen drawer" in system_text(llm.requests[-1].messages)
        assert phone.bot_text() == "Your pills are in the kitchen drawer."
        listed = await asyncio.to_thread(
            httpx.get, f"{srv.http}/api/memory", headers={"Authorization": f"Bearer {token}"}
        )
        assert [(f["words"], f["source"]) for f in listed.json()["facts"]] == [
            ("my pills are in the kitchen drawer", "spoken")
        ]
