"""Warren's memory without speech: the store (real SQLite), the commands, the family's HTTP API.

The spoken conversations across processes are in test_memory_speech.py.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from pipecat.frames.frames import (
    LLMUpdateSettingsFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.tests.utils import run_test

from nabu_pipeline.config import NabuConfig
from nabu_pipeline.memory_store import MemoryStore, second_person, subject_of
from nabu_pipeline.pipeline import build_matcher, with_preferences
from processors.memory_commands import MemoryCommands
from processors.phrases import Command
from processors.piper_tts import NabuPiperTTSService

from .server_harness import in_process

MATCHER = build_matcher(NabuConfig())
TOKEN = "memory-test-token-0123456789abcdef"


@pytest.fixture
def store(tmp_path):
    s = MemoryStore(tmp_path / "data").open()
    yield s
    s.close()


def stage(store: MemoryStore) -> MemoryCommands:
    return MemoryCommands(
        store, MATCHER, base_prompt="BASE PROMPT", user_name="Warren", confirm_timeout_s=30
    )


async def converse(store: MemoryStore, *said: str, frames=()) -> tuple[list, list[str]]:
    """What comes out of the memory stage for Warren's transcripts: (frames, spoken replies)."""
    down, _ = await run_test(
        stage(store),
        frames_to_send=[*frames, *(TranscriptionFrame(t, "warren", "") for t in said)],
        expected_down_frames=None,
    )
    return down, [f.text for f in down if isinstance(f, TTSSpeakFrame)]


def passed_on(down: list) -> list[str]:
    """Transcripts that go on to the user aggregator (and so the LLM)."""
    return [f.text for f in down if isinstance(f, TranscriptionFrame) and f.text.strip()]


def instructions(down: list) -> list[str]:
    return [f.delta.system_instruction for f in down if isinstance(f, LLMUpdateSettingsFrame)]


# --- words -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "subject", "back"),
    [
        ("My pills are in the kitchen drawer.", "my pills", "your pills are in the kitchen drawer"),
        ("my pills are in the bathroom cabinet now", "my pills", None),
        ("My daughter's name is Mary", "my daughter's name", "your daughter's name is Mary"),
        ("the key's under the mat", "the key", None),
        ("I am allergic to cats", "i am allergic to cats", "you are allergic to cats"),
        ("Mary is my daughter", "mary", "Mary is your daughter"),
        ("I live in Springfield", "i live in springfield", "you live in Springfield"),
    ],
)  # fmt: skip
def test_subject_and_read_back(said, subject, back):
    assert subject_of(said) == subject
    if back:
        assert second_person(said) == back


def test_memory_commands_are_in_the_one_matcher():
    cases = {
        "Remember that my pills are in the kitchen drawer.": (
            Command.REMEMBER,
            {"fact": "my pills are in the kitchen drawer"},
        ),
        "Nabu, don't forget that the plumber comes on Tuesday.": (
            Command.REMEMBER,
            {"fact": "the plumber comes on Tuesday"},
        ),
        "Forget about my pills.": (Command.FORGET, {"fact": "my pills"}),
        "Forget everything.": (Command.FORGET_ALL, {}),
        "Um, what do you remember about me?": (Command.RECALL, {}),
        "I like the weather in Celsius.": (Command.TEMPERATURE_UNIT, {"unit": "Celsius"}),
        "Call me Bill.": (Command.ADDRESS_AS, {"name": "Bill"}),
    }
    for text, (command, slots) in cases.items():
        match = MATCHER.match(text)
        assert match is not None and (match.command, dict(match.slots)) == (command, slots), text
    # A command with free words is never trusted past the guard's doubt check; a fixed one is.
    assert not MATCHER.match("Remember that my pills are in the drawer.").trusted
    assert MATCHER.match("What do you remember?").trusted
    assert MATCHER.match("Stop.").command == Command.STOP


# --- the store -------------------------------------------------------------------------------


def test_table_layout_and_wal(store):
    db = sqlite3.connect(store.path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(facts)")]
    assert columns == [
        "id",
        "kind",
        "subject",
        "words",
        "value",
        "source",
        "created_at",
        "updated_at",
        "forgotten_at",
    ]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_contradiction_replaces_and_forgetting_erases_the_words(store, tmp_path):
    first = store.save("my pills are in the kitchen drawer", source="spoken").fact
    store.save("my daughter's name is Mary", source="spoken")
    later = store.save("My pills are in the bathroom cabinet now.", source="spoken")
    assert later.replaced.words == "my pills are in the kitchen drawer"
    assert later.fact.id == first.id and later.fact.updated_at >= first.updated_at
    assert [f.words for f in store.live()] == [
        "My pills are in the bathroom cabinet now",
        "my daughter's name is Mary",
    ]
    # Another process (another connection to the same file) sees it at once.
    other = MemoryStore(tmp_path / "data").open()
    assert next(f.words for f in other.live()) == "My pills are in the bathroom cabinet now"
    assert other.forget(first.id)
    other.close()
    assert [f.words for f in store.live()] == ["my daughter's name is Mary"]
    raw = sqlite3.connect(store.path).execute("SELECT words, forgotten_at FROM facts").fetchall()
    assert ("", raw[0][1]) == raw[0] and raw[0][1] is not None  # no trace of the words
    assert store.forget_all() == 1 and store.live() == []


def test_preferences_shape_the_next_session(store):
    store.save("I like temperatures in Celsius", source="spoken", kind="preference",
               subject="temperature_unit", value="C")  # fmt: skip
    store.save("I like to be called Bill", source="spoken", kind="preference",
               subject="address_as", value="Bill")  # fmt: skip
    store.save("I like you to speak slower", source="spoken", kind="preference",
               subject="speech_rate", value="1.30")  # fmt: skip
    config = with_preferences(NabuConfig(), store.preferences())
    assert config.locale.temperature_unit == "C"
    assert config.locale.user_name == "Bill"
    assert config.tts.length_scale == pytest.approx(1.3)


# --- the stage: spoken commands without the LLM ----------------------------------------------


async def test_remember_reads_back_and_goes_into_the_llm_instructions(store):
    down, spoken = await converse(
        store, "Remember that my pills are in the kitchen drawer.", "Where are my pills?"
    )
    assert spoken == ["Okay. I'll remember that your pills are in the kitchen drawer."]
    assert passed_on(down) == ["Where are my pills?"]  # the command never reaches the LLM
    last = instructions(down)[-1]
    assert last.startswith("BASE PROMPT") and '"my pills are in the kitchen drawer"' in last
    assert [f.words for f in store.live()] == ["my pills are in the kitchen drawer"]


async def test_no_after_the_read_back_undoes_a_misheard_save(store):
    store.save("my pills are in the kitchen drawer", source="spoken")
    _, spoken = await converse(store, "Remember that my pills are in the bath cabinet.", "No.")
    assert (
        spoken[0]
        == "Okay. I've changed that: I'll remember that your pills are in the bath cabinet."
    )
    assert spoken[1] == "Sorry. I've forgotten that. Could you say it again?"
    assert [f.words for f in store.live()] == ["my pills are in the kitchen drawer"]


async def test_a_pause_mid_sentence_keeps_only_the_whole_sentence(store):
    """Warren pauses: "Remember that I take... two pills at night". The STT sends his first
    words, then the whole utterance again; only the whole one is kept."""
    from processors.utterance_state import UtteranceState

    partial, whole = "Remember that I take.", "Remember that I take two pills at night."
    utterance = UtteranceState(pause_expired=False)
    utterance.transcribed(partial)
    utterance.transcribed(whole)
    memory = MemoryCommands(
        store, MATCHER, base_prompt="B", user_name="Warren", confirm_timeout_s=30,
        utterance=utterance,
    )  # fmt: skip
    await run_test(
        memory,
        frames_to_send=[TranscriptionFrame(partial, "", ""), TranscriptionFrame(whole, "", "")],
        expected_down_frames=None,
    )
    assert [f.words for f in store.live()] == ["I take two pills at night"]


async def test_no_after_forgetting_brings_it_back(store):
    store.save("my pills are in the kitchen drawer", source="spoken")
    _, spoken = await converse(store, "Forget about my pills.", "No.")
    assert spoken == [
        "Okay. I've forgotten that your pills are in the kitchen drawer.",
        "Sorry. I'll keep remembering that your pills are in the kitchen drawer.",
    ]
    assert [f.words for f in store.live()] == ["my pills are in the kitchen drawer"]


async def test_recall_forget_and_forget_everything_confirmed(store):
    store.save("my pills are in the kitchen drawer", source="spoken")
    store.save("my daughter's name is Mary", source="spoken")
    down, spoken = await converse(
        store,
        "What do you remember?",
        "Forget about my pills.",
        "Forget everything.",
        "No.",
        "Forget everything.",
        "What's the weather like?",  # not an answer: his next sentence, and nothing forgotten
    )
    assert spoken[0] == (
        "You asked me to remember that your daughter's name is Mary, and your pills are in "
        "the kitchen drawer."
    )
    assert spoken[1] == "Okay. I've forgotten that your pills are in the kitchen drawer."
    assert spoken[2].startswith("Do you want me to forget everything")
    assert spoken[3] == "Okay. I'll keep everything."
    assert passed_on(down) == ["What's the weather like?"]
    assert [f.words for f in store.live()] == ["my daughter's name is Mary"]
    _, spoken = await converse(store, "Forget everything.", "Yes.", "What do you remember?")
    assert spoken[1:] == [
        "Okay. I've forgotten everything you asked me to remember.",
        "You haven't asked me to remember anything yet.",
    ]
    assert store.live() == []


async def test_questions_and_near_misses_go_to_the_llm(store):
    said = ["Can you remember where I put my keys?", "I like cheese.", "Call me a taxi to the "
            "station at nine tomorrow morning please.", "Remember?"]  # fmt: skip
    down, spoken = await converse(store, *said)
    assert spoken == []
    assert passed_on(down) == said
    assert store.live() == []


async def test_preferences_act_at_once_and_slower_is_kept(store):
    down, spoken = await converse(
        store,
        "I like the weather in Celsius.",
        "Call me Bill.",
        frames=[TTSUpdateSettingsFrame(delta=NabuPiperTTSService.Settings(length_scale=1.3))],
    )
    assert spoken == ["Okay. I'll give you temperatures in Celsius.", "Okay. I'll call you Bill."]
    last = instructions(down)[-1]
    assert "Call him Bill." in last and "degrees Celsius" in last
    assert store.preferences() == {
        "speech_rate": "1.30",
        "temperature_unit": "C",
        "address_as": "Bill",
    }


async def test_llm_proposal_is_kept_only_after_yes_and_never_health(store):
    memory = stage(store)
    assert memory.propose("my blood pressure pills are blue") is None
    question = memory.propose("my spare key is under the blue pot")
    assert question == "Shall I remember that your spare key is under the blue pot?"
    down, _ = await run_test(
        memory, frames_to_send=[TranscriptionFrame("Yes.", "", "")], expected_down_frames=None
    )
    assert [f.text for f in down if isinstance(f, TTSSpeakFrame)] == [
        "Okay. I'll remember that your spare key is under the blue pot."
    ]
    assert [(f.words, f.source) for f in store.live()] == [
        ("my spare key is under the blue pot", "assistant")
    ]
    memory.propose("my car is in the garage")
    await run_test(
        memory, frames_to_send=[TranscriptionFrame("No.", "", "")], expected_down_frames=None
    )
    assert len(store.live()) == 1


async def test_a_doubtful_remember_is_read_back_and_kept_only_after_yes(store):
    """Guard then memory stage, as in the pipeline: half-heard words are never kept unasked."""
    from pipecat.pipeline.pipeline import Pipeline

    from nabu_pipeline.config import GuardConfig
    from processors.transcript_guard import TranscriptGuard
    from processors.whisper_stt import TranscriptEvidence

    unsure = TranscriptEvidence(
        no_speech_prob=0.05, avg_logprob=-0.85, compression_ratio=1.2, audio_s=2.0,
        rms_dbfs=-25.0, stt_s=0.4,
    )  # fmt: skip
    doubtful = "Remember that my pills are in the kitchen drawer."
    chain = Pipeline([TranscriptGuard(GuardConfig(), MATCHER), stage(store)])
    down, _ = await run_test(
        chain,
        frames_to_send=[
            TranscriptionFrame(doubtful, "", "", result=unsure),
            TranscriptionFrame("No.", "", "", result=unsure),
            TranscriptionFrame(doubtful, "", "", result=unsure),
        ],
        expected_down_frames=None,
    )
    spoken = [f.text for f in down if isinstance(f, TTSSpeakFrame)]
    assert spoken == [
        "Did you say: Remember that my pills are in the kitchen drawer?",
        "Sorry. Could you say it again?",
        "Did you say: Remember that my pills are in the kitchen drawer?",
    ]
    assert store.live() == []
    chain = Pipeline([TranscriptGuard(GuardConfig(), MATCHER), stage(store)])
    down, _ = await run_test(
        chain,
        frames_to_send=[
            TranscriptionFrame(doubtful, "", "", result=unsure),
            TranscriptionFrame("Yes.", "", "", result=unsure),
        ],
        expected_down_frames=None,
    )
    assert [f.text for f in down if isinstance(f, TTSSpeakFrame)][-1] == (
        "Okay. I'll remember that your pills are in the kitchen drawer."
    )
    assert [f.words for f in store.live()] == ["my pills are in the kitchen drawer"]


# --- the family's HTTP API -------------------------------------------------------------------


@pytest.fixture
def api(config_for):
    # OpenAI-protocol STT/TTS: the server starts without loading Whisper or Piper.
    config = config_for(
        None,
        stt={"provider": "openai"},
        tts={"provider": "openai"},
        server={"allowed_origins": ["https://nabu.example.org"]},
    )
    with in_process(config, token=TOKEN) as srv:
        yield srv


def test_http_api_refuses_a_missing_or_wrong_token(api):
    url = f"{api.http}/api/memory"
    assert httpx.get(url).status_code == 401
    assert (
        httpx.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code
        == 401
    )
    assert httpx.post(url, json={"words": "my pills are in the drawer"}).status_code == 401
    assert httpx.delete(f"{url}/1").status_code == 401
    assert httpx.patch(f"{url}/1", json={"words": "x"}, params={"token": "nope"}).status_code == 401
    evil = {"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example.com"}
    assert httpx.get(url, headers=evil).status_code == 403
    assert httpx.get(url, params={"token": TOKEN}).status_code == 200  # as on /ws


def test_http_api_lists_adds_edits_and_deletes(api):
    url = f"{api.http}/api/memory"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(url, headers=auth).json() == {"facts": []}
    added = httpx.post(url, headers=auth, json={"words": "My pills are in the kitchen drawer."})
    assert added.status_code == 201, added.text
    fact = added.json()["fact"]
    assert (fact["words"], fact["source"], fact["subject"]) == (
        "My pills are in the kitchen drawer", "family", "my pills"
    )  # fmt: skip
    replaced = httpx.post(url, headers=auth, json={"words": "my pills are in the bathroom now"})
    assert replaced.json()["replaced"]["id"] == fact["id"]
    edited = httpx.patch(
        f"{url}/{fact['id']}", headers=auth, json={"words": "my pills are by the sink"}
    )
    assert (
        edited.status_code == 200 and edited.json()["fact"]["words"] == "my pills are by the sink"
    )
    pref = httpx.post(
        url,
        headers=auth,
        json={"kind": "preference", "subject": "temperature_unit", "value": "celsius"},
    )
    assert pref.status_code == 201 and pref.json()["fact"]["value"] == "C"
    bad = httpx.post(
        url,
        headers=auth,
        json={"kind": "preference", "subject": "temperature_unit", "value": "kelvin"},
    )
    assert bad.status_code == 422 and "C or F" in bad.json()["error"]
    listed = httpx.get(url, headers=auth).json()["facts"]
    assert [(f["kind"], f["spoken"]) for f in listed] == [
        ("fact", "your pills are by the sink"),
        ("preference", "you like temperatures in Celsius"),
    ]
    assert httpx.delete(f"{url}/{fact['id']}", headers=auth).status_code == 204
    assert httpx.delete(f"{url}/{fact['id']}", headers=auth).status_code == 404
    assert len(httpx.get(url, headers=auth).json()["facts"]) == 1
    page = httpx.get(f"{api.http}/memory.html")
    assert page.status_code == 200 and "memory.js" in page.text
    assert "api/memory" in httpx.get(f"{api.http}/memory.js").text
    # Linked from the family's desk page, not from Warren's app.
    assert 'href="memory.html"' in httpx.get(f"{api.http}/desk").text


def test_memory_page_in_chromium_lists_what_is_kept(api, tmp_path):
    """The page's script, in a real browser, fetches the list with the token from its URL."""
    import shutil
    import subprocess

    chromium = next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)
    if chromium is None:
        pytest.skip("needs Chromium (.ci/run installs it)")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpx.post(f"{api.http}/api/memory", headers=auth, json={"words": "my pills are in the drawer"})

    def page(query: str) -> str:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
             "--dump-dom", f"{api.http}/memory.html{query}"],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip

    shown = page(f"?token={TOKEN}")
    assert "“my pills are in the drawer”" in shown and "1 kept." in shown, shown[-2000:]
    refused = page("?token=wrong-token-0123456789")
    assert "The token is missing or wrong." in refused and "pills" not in refused
