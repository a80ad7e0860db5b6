"""The LLM's retry policy, fallbacks and apologies, on the real openai client and a real server.

Each test drives NabuOpenAILLMService (pipecat's `run_test`) against the
scripted OpenAI-protocol server failing on demand, and checks what would be
spoken, how soon, how many requests were made, and the one log line.
No audio models: these run in seconds.
"""

from __future__ import annotations

import time

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from nabu_pipeline.config import NO_LLM_APOLOGY, LLMConfig, LocaleConfig, NabuConfig, OpenAIEndpoint
from nabu_pipeline.pipeline import build_matcher
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer, refused_url
from processors.history_window import HistoryWindow, merge_consecutive_user_messages
from processors.openai_endpoint import retry_after_s
from processors.openai_llm import NabuOpenAILLMService

from .helpers import captured_logs

REPLY = "The front door is locked. The porch light is on. Mary called this morning."
SECRET = "sk-test-DO-NOT-LOG-0123456789"
BROKEN_OFF = LLMConfig().broken_off_apology
MATCHER = build_matcher(NabuConfig())


def server(fault=None, **kw) -> ScriptedLLMServer:
    return ScriptedLLMServer(Script(reply=REPLY, fault=fault, ttft_s=0.05, tokens_per_s=200, **kw))


def make_llm(base_url: str, **llm) -> NabuOpenAILLMService:
    config = LLMConfig(base_url=base_url, api_key=SECRET, **llm)
    return NabuOpenAILLMService(
        config=config, locale=LocaleConfig(), system_prompt="Be brief.", matcher=MATCHER
    )


class Outcome:
    """What one reply did: its words, its apology, and when each came."""

    def __init__(self, frames: list[Frame], started: float, ended: float):
        self.text = "".join(f.text for f in frames if isinstance(f, LLMTextFrame))
        speak = [f for f in frames if isinstance(f, TTSSpeakFrame)]
        self.apology = speak[0].text if speak else None
        self.recorded_apology = any(f.append_to_context for f in speak)
        self.elapsed_s = ended - started
        kinds = [type(f) for f in frames]
        self.apology_after_end = not speak or kinds.index(TTSSpeakFrame) > kinds.index(
            LLMFullResponseEndFrame
        )


async def ask(llm: NabuOpenAILLMService, question="Tell me about kettles.", context=None):
    context = context or LLMContext()
    context.add_message({"role": "user", "content": question})
    started = time.monotonic()
    down, _up = await run_test(llm, frames_to_send=[LLMContextFrame(context)])
    return Outcome(list(down), started, time.monotonic())


async def test_healthy_endpoint_answers_once():
    with server() as srv:
        out = await ask(make_llm(srv.url))
    assert out.text == REPLY and out.apology is None
    assert len(srv.requests) == 1


async def test_429_once_is_retried_after_retry_after():
    with server("429-once", retry_after_s=0.6) as srv, captured_logs() as lines:
        out = await ask(make_llm(srv.url))
    assert out.text == REPLY and out.apology is None
    assert srv.faults_seen == ["429-once", None]
    gap = srv.requests[1].at - srv.requests[0].at
    assert gap >= 0.6, gap  # Retry-After honoured, not the 0.25 s backoff
    assert len(lines) == 1 and "recovered" in lines[0] and "HTTP 429" in lines[0], lines


async def test_500_retried_with_backoff_then_apology():
    with server("500") as srv, captured_logs() as lines:
        out = await ask(make_llm(srv.url))
    assert out.text == "" and out.apology == NO_LLM_APOLOGY
    assert not out.recorded_apology and out.apology_after_end
    assert len(srv.requests) == 2  # retry_attempts=2, and no hidden client retries
    gap = srv.requests[1].at - srv.requests[0].at
    assert gap >= 0.125, gap  # 0.25 s backoff with equal jitter (its range: test_backoff_...)
    assert len(lines) == 1 and "HTTP 500" in lines[0] and "apologising" in lines[0], lines
    assert SECRET not in " ".join(lines) and "Traceback" not in " ".join(lines)


async def test_429_always_with_long_retry_after_apologises_at_once_and_rests_the_endpoint():
    with server("429", retry_after_s=30) as srv:
        llm = make_llm(srv.url)
        first = await ask(llm)
        context = LLMContext([{"role": "user", "content": "Tell me about kettles."}])
        second = await ask(llm, "And about teapots?", context)
    # Limits in these tests are only far below what the fault would cost (here 30 s): how
    # quick Nabu is belongs to `nabu bench`, and a busy CI machine must not fail them.
    assert first.apology == NO_LLM_APOLOGY and first.elapsed_s < 10
    assert second.apology == NO_LLM_APOLOGY and second.elapsed_s < 10
    # One request: a 30 s Retry-After is not waited for, and not ignored on the next turn.
    assert len(srv.requests) == 1


async def test_hang_hits_the_first_token_timeout():
    with server("hang") as srv, captured_logs() as lines:
        out = await ask(make_llm(srv.url, first_token_timeout_s=1.0))
    assert out.apology == NO_LLM_APOLOGY
    assert 1.0 <= out.elapsed_s < 10, out.elapsed_s  # not the 20 s request timeout
    assert len(srv.requests) == 1  # a hung endpoint is not asked again
    assert "no first word within 1.0s" in lines[0], lines


async def test_refused_connection_apologises_quickly():
    with captured_logs() as lines:
        out = await ask(make_llm(refused_url()))
    assert out.apology == NO_LLM_APOLOGY and out.elapsed_s < 10
    assert "ConnectionRefusedError" in lines[0], lines


@pytest.mark.parametrize("fault", ["cut", "malformed"])
async def test_broken_stream_finishes_what_was_said_then_apologises(fault):
    with server(fault) as srv, captured_logs() as lines:
        out = await ask(make_llm(srv.url))
    assert out.text and REPLY.startswith(out.text) and out.text != REPLY
    assert out.apology == BROKEN_OFF and not out.recorded_apology and out.apology_after_end
    assert len(srv.requests) == 1  # never retried: he would hear the start twice
    assert len(lines) == 1 and "broke off" in lines[0], lines


async def test_stream_stalling_mid_reply_is_broken_off():
    with server("stall") as srv:
        out = await ask(make_llm(srv.url, stall_timeout_s=0.5))
    assert out.text and out.apology == BROKEN_OFF
    assert out.elapsed_s < 10  # not the 20 s request timeout


async def test_empty_reply_counts_as_a_failure():
    with server("empty") as srv:
        out = await ask(make_llm(srv.url))
    assert out.apology == NO_LLM_APOLOGY and len(srv.requests) == 1


async def test_fallbacks_are_tried_in_order():
    with server("hang") as hung, server("500") as broken, server() as good:
        llm = make_llm(
            hung.url,
            first_token_timeout_s=1.0,
            fallbacks=(
                OpenAIEndpoint(base_url=refused_url()),
                OpenAIEndpoint(base_url=broken.url, model="other-model"),
                OpenAIEndpoint(base_url=good.url, model="good-model"),
            ),
        )
        with captured_logs() as lines:
            out = await ask(llm)
    assert out.text == REPLY and out.apology is None
    assert len(hung.requests) == 1 and len(broken.requests) == 2 and len(good.requests) == 1
    assert broken.requests[0].body["model"] == "other-model"
    assert good.requests[0].body["model"] == "good-model"
    assert len(lines) == 1 and "recovered" in lines[0] and good.url[7:] in lines[0], lines


async def test_an_endpoint_that_failed_a_turn_is_asked_last_for_a_while():
    with server("hang") as hung, server() as good:
        llm = make_llm(
            hung.url, first_token_timeout_s=1.0, fallbacks=(OpenAIEndpoint(base_url=good.url),)
        )
        first = await ask(llm)
        context = LLMContext([{"role": "user", "content": "Tell me about kettles."}])
        second = await ask(llm, "And about teapots?", context)
    assert first.text == REPLY and first.elapsed_s >= 1.0
    assert second.text == REPLY  # straight to the healthy one: the hung one was not asked
    assert len(hung.requests) == 1 and len(good.requests) == 2


async def test_everything_fits_the_answer_deadline():
    with server("hang") as first, server("hang") as second:
        llm = make_llm(
            first.url,
            first_token_timeout_s=4.0,
            answer_deadline_s=5.0,
            fallbacks=(OpenAIEndpoint(base_url=second.url),),
        )
        out = await ask(llm)
    assert out.apology == NO_LLM_APOLOGY
    # 4 s on the first, 1 s left for the second (8 s if the deadline were ignored)
    assert 5.0 <= out.elapsed_s < 7.5, out.elapsed_s
    assert len(second.requests) == 1


async def test_time_and_date_answered_locally_while_the_llm_is_down():
    with server("500") as srv:
        llm = make_llm(srv.url)
        out = await ask(llm, "What time is it?")
        merged = await ask(llm, "Tell me about the moon. What's the date today?")
    assert out.text.startswith("It's") and out.apology is None
    assert merged.text.startswith("Today is") and merged.apology is None
    assert not srv.requests


async def test_configured_apology_words_and_no_llm_at_all():
    offline = NabuOpenAILLMService(
        config=LLMConfig(provider="offline", apology="My helper is away. Ask me the time."),
        locale=LocaleConfig(),
        system_prompt="",
        matcher=MATCHER,
    )
    out = await ask(offline, "Tell me about the moon.")
    assert out.apology == "My helper is away. Ask me the time." and not out.recorded_apology


def test_backoff_doubles_with_equal_jitter_and_honours_retry_after():
    from openai import APIConnectionError

    llm = make_llm("http://127.0.0.1:9/v1")
    error = APIConnectionError(request=None)  # type: ignore[arg-type]
    for attempt, base in ((1, 0.25), (2, 0.5), (3, 1.0)):
        waits = [llm._retry_wait(error, attempt) for _ in range(200)]
        assert base / 2 <= min(waits) and max(waits) <= base, (attempt, min(waits), max(waits))


def test_retry_after_parsing():
    class Response:
        def __init__(self, headers):
            self.headers = headers

    class Error(Exception):
        def __init__(self, headers):
            self.response = Response(headers)

    assert retry_after_s(Error({"retry-after": "2"})) == 2
    assert retry_after_s(Error({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_s(Error({})) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 < retry_after_s(Error({"retry-after": date})) <= 10


def test_reliability_settings_from_yaml(tmp_path):
    from nabu_pipeline.config import load_config

    path = tmp_path / "nabu.yaml"
    path.write_text(
        "llm:\n"
        "  base_url: http://main:8000/v1\n"
        "  model: small\n"
        "  first_token_timeout_s: 2.5\n"
        "  apology: Sorry, my helper is asleep.\n"
        "  fallbacks:\n"
        "    - base_url: http://spare:8000/v1\n"
        "      model: big\n"
        "    - base_url: http://third:8000/v1\n"
        "    - base_url: https://api.openai.com/v1\n"  # no key: cannot answer, left out
    )
    llm = load_config(path, env={}).llm
    assert [(e.base_url, e.model) for e in llm.endpoints] == [
        ("http://main:8000/v1", "small"),
        ("http://spare:8000/v1", "big"),
        ("http://third:8000/v1", "small"),  # a fallback without a model uses llm.model
    ]
    assert llm.first_token_timeout_s == 2.5 and llm.apology == "Sorry, my helper is asleep."
    defaults = load_config(env={}).llm
    assert defaults.first_token_timeout_s == 4.0 and defaults.answer_deadline_s == 6.0
    assert defaults.retry_attempts == 2 and defaults.fallbacks == ()


def test_a_fallback_alone_is_enough_to_answer():
    with server() as good:
        config = LLMConfig(fallbacks=(OpenAIEndpoint(base_url=good.url, model="local"),))
        assert config.is_configured  # the cloud main endpoint has no key
        llm = NabuOpenAILLMService(
            config=config, locale=LocaleConfig(), system_prompt="", matcher=MATCHER
        )
        assert llm.available


def test_a_mistake_in_a_fallback_is_one_clear_error(tmp_path):
    from nabu_pipeline.config import ConfigError, load_config

    path = tmp_path / "nabu.yaml"
    path.write_text("llm:\n  fallbacks:\n    - base_url: http://x/v1\n      key: abc\n")
    with pytest.raises(ConfigError, match=r"llm\.fallbacks\.0\.key: unknown key"):
        load_config(path, env={})


async def test_a_failed_question_stays_apart_from_the_next_one():
    """After an apology nothing is recorded as the answer; the next question must not be glued
    onto the failed one ("...kettles? What time is the doctor coming?" reads as one)."""
    first, second = "Tell me about kettles.", "When is the doctor coming?"

    def fault(messages):
        users = [m for m in messages if m.get("role") == "user"]
        return "500" if users[-1]["content"] == first else None

    unanswered: set[str] = set()
    with server(fault) as srv:
        llm = NabuOpenAILLMService(
            config=LLMConfig(base_url=srv.url, retry_attempts=1),
            locale=LocaleConfig(),
            system_prompt="Be brief.",
            matcher=MATCHER,
            unanswered=unanswered,
        )
        stages = Pipeline([HistoryWindow(turns=4, unanswered=unanswered), llm])
        context = LLMContext()
        outcomes = []
        for question in (first, second):
            context.add_message({"role": "user", "content": question})
            down, _ = await run_test(stages, frames_to_send=[LLMContextFrame(context)])
            outcomes.append(Outcome(list(down), 0, 0))
    assert outcomes[0].apology == LLMConfig().apology and outcomes[1].text == REPLY
    asked = [m for m in srv.requests[-1].messages if m["role"] != "system"]
    assert asked == [{"role": "user", "content": first}, {"role": "user", "content": second}]


def test_a_question_split_by_a_pause_is_still_joined():
    said = [{"role": "user", "content": "What time is"}, {"role": "user", "content": "the doctor?"}]
    history = [
        {"role": "user", "content": "Hello."},
        {"role": "user", "content": "Are you there?"},  # an old failed turn, settled long ago
        {"role": "assistant", "content": "I am here."},
    ]
    assert merge_consecutive_user_messages(said) == [
        {"role": "user", "content": "What time is the doctor?"}
    ]
    assert merge_consecutive_user_messages(said, {"What time is"}) == said
    assert merge_consecutive_user_messages(history + said)[:3] == history
