"""The OpenAI-protocol LLM, with one retry policy, fallbacks and answers of its own.

Subclasses pipecat's OpenAILLMService (any OpenAI-protocol endpoint: OpenAI,
Ollama, llama.cpp, vLLM). Nabu adds what Warren needs:
- the time and date are answered locally, instantly and correctly, whatever
  state the LLM is in;
- with no LLM configured, Nabu still answers aloud (time, date, what it can
  do, otherwise its apology);
- whatever fails, Warren hears something within 8 s of his last word.

The retry policy (the only one: the `openai` client's own retries are off,
`max_retries=0`):
- Endpoints are asked in order: `llm.base_url`, then each of `llm.fallbacks`.
- On 429, 5xx and connection errors an endpoint is tried again, up to
  `retry_attempts` times, after an exponential backoff (`retry_base_delay_s`,
  doubled per retry, half of it random: "equal jitter"). A Retry-After (or
  retry-after-ms) header replaces the backoff when it is at most
  `retry_max_delay_s`; a longer one moves on to the next endpoint and rests
  this one until the time it named (later turns skip it too).
- An endpoint that sends no first word within `first_token_timeout_s`, sends an
  empty reply, or fails in any other way (4xx, malformed data) is not retried:
  the next endpoint is asked at once.
- An endpoint that failed a turn is asked after the others for
  `failed_endpoint_rest_s` (a hung main endpoint would otherwise cost every
  turn its first-token timeout before a healthy fallback was asked).
- Everything, backoffs included, must fit in `answer_deadline_s` from the
  request; after that, or when no endpoint is left, Warren hears
  `llm.apology`.
- A reply that breaks off after some words were spoken (connection cut,
  malformed data, silence longer than `stall_timeout_s`) is never retried
  (he would hear the start twice): what was already said is finished, then
  `llm.broken_off_apology`.

Apologies are spoken with a `TTSSpeakFrame(append_to_context=False)` pushed
after the reply's `LLMFullResponseEndFrame`: the TTS speaks it after the words
already queued, and the assistant aggregator never records it, so the history
holds Warren's question (the user aggregator put it there) and only what was
really answered. Errors are handled here rather than pushed as ErrorFrames, so
one failed request does not mark the service unusable for the rest of the
conversation, and each fault is one log line (stage, endpoint, cause; no key,
no stack trace).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from loguru import logger
from openai import APIStatusError, AsyncOpenAI
from pipecat.frames.frames import (
    Frame,
    FunctionCallsStartedFrame,
    LLMContextFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from nabu_pipeline.config import LLMConfig, LocaleConfig, OpenAIEndpoint
from processors.context_text import last_user_text
from processors.local_answers import NO_LLM, local_answer
from processors.openai_endpoint import (
    NO_KEY,
    EndpointFault,
    async_client,
    describe,
    endpoint_label,
    is_retryable,
    retry_after_s,
)
from processors.phrases import PhraseMatcher

# Don't start an attempt with less than this left before the deadline.
MIN_ATTEMPT_S = 0.3


class NoFirstWord(EndpointFault):
    """The endpoint sent no word within the first-token timeout."""


class StreamStalled(EndpointFault):
    """The reply went silent mid-stream for longer than the stall timeout."""


class EmptyReply(EndpointFault):
    """The endpoint answered, but with no words."""


@dataclass
class _Endpoint:
    config: OpenAIEndpoint
    client: AsyncOpenAI
    label: str
    resting_until: float = 0.0
    """Monotonic time before which a Retry-After asked us not to call it."""
    demoted_until: float = 0.0
    """Monotonic time until which it is asked after the others (it failed a turn)."""


@dataclass
class _Attempt:
    endpoint: _Endpoint
    first_word_s: float
    """How long this attempt may wait for its first word."""
    first_word_by: float = 0.0
    """Monotonic deadline for the first word of this attempt."""

    def __post_init__(self):
        self.first_word_by = time.monotonic() + self.first_word_s

    def no_first_word(self) -> NoFirstWord:
        return NoFirstWord(f"no first word within {self.first_word_s:.1f}s")


class _GuardedStream:
    """The chunk stream of one attempt, with the first-word and stall deadlines enforced.

    pipecat's `_process_context` iterates it (`__aiter__`) and closes it
    (`close`) exactly as it would the openai client's own stream.
    """

    def __init__(self, stream, attempt: _Attempt, stall_s: float):
        self._stream = stream
        self._attempt = attempt
        self._stall_s = stall_s

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        chunks = self._stream.__aiter__()
        got_words = False
        while True:
            if got_words:
                timeout = self._stall_s
            else:
                timeout = self._attempt.first_word_by - time.monotonic()
                if timeout <= 0:
                    raise self._attempt.no_first_word()
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if got_words:
                    raise StreamStalled(f"reply silent for {self._stall_s:g}s") from None
                raise self._attempt.no_first_word() from None
            if not got_words and any(
                c.delta and (c.delta.content or c.delta.tool_calls) for c in chunk.choices or []
            ):
                got_words = True
            yield chunk

    async def close(self):
        await self._stream.close()


class NabuOpenAILLMService(OpenAILLMService):
    """OpenAILLMService that always says something, and records only real answers."""

    def __init__(
        self,
        *,
        config: LLMConfig,
        locale: LocaleConfig,
        system_prompt: str,
        matcher: PhraseMatcher,
        unanswered: set[str] | None = None,
        **kwargs,
    ):
        self._config = config
        self._matcher = matcher
        # Questions it apologised for, shared with the history window (history_window.py).
        self._unanswered = unanswered if unanswered is not None else set()
        self._available = config.is_configured
        self._locale = locale
        self._spoke = False
        self._apology: str | None = None
        self._attempt: _Attempt | None = None
        main = config.endpoints[0] if config.endpoints else config.endpoint
        super().__init__(
            api_key=main.api_key or (NO_KEY if self._available else "not-configured"),
            base_url=main.base_url,
            settings=OpenAILLMService.Settings(
                model=main.model or config.model,
                system_instruction=system_prompt,
                temperature=config.temperature,
                max_tokens=config.max_tokens,
            ),
            **kwargs,
        )
        self._endpoints = [
            _Endpoint(
                config=e,
                client=self._client if i == 0 else self.create_client(e.api_key, e.base_url),
                label=endpoint_label(e.base_url),
            )
            for i, e in enumerate(config.endpoints)
        ]
        self._secrets = tuple(e.api_key for e in config.endpoints if e.api_key)
        if len(self._endpoints) > 1:
            logger.debug(
                f"{self}: LLM endpoints in order: "
                + ", ".join(f"{e.config.model} at {e.label}" for e in self._endpoints)
            )

    @property
    def available(self) -> bool:
        return self._available

    def create_client(self, api_key=None, base_url=None, **kwargs) -> AsyncOpenAI:
        return async_client(api_key, base_url, self._config.timeout_s)

    # --- frames -------------------------------------------------------------------------------

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, LLMTextFrame) and frame.text.strip():
            self._spoke = True
        if isinstance(frame, FunctionCallsStartedFrame):  # a tool call is an answer too
            self._spoke = True
        await super().push_frame(frame, direction)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, LLMContextFrame):
            self._apology = None
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and self._apology:
            # After LLMFullResponseEndFrame: the TTS says it after any words already queued
            # (it holds frames while a reply's audio is open), and the assistant aggregator
            # does not record it (append_to_context=False).
            apology, self._apology = self._apology, None
            await self.push_frame(TTSSpeakFrame(apology, append_to_context=False))

    async def run_function_calls(self, function_calls):
        if function_calls:
            self._spoke = True  # a tool call is an answer: its result starts the next reply
        await super().run_function_calls(function_calls)

    # --- one reply ----------------------------------------------------------------------------

    async def _process_context(self, context: LLMContext):
        self._spoke = False
        question = last_user_text(context)
        answer = local_answer(question, self._locale, self._matcher, llm_available=self._available)
        if answer == NO_LLM:
            logger.info(f"{self}: no LLM configured; apologising for [{question[:80]}]")
            self._apology = self._config.apology
            self._unanswered.add(question)
            return
        if answer is not None:
            logger.info(f"{self}: local answer to [{question[:80]}]")
            await self._push_llm_text(answer)
            return
        self._apology = await self._answer(context)
        if self._apology == self._config.apology:  # nothing of an answer was said
            self._unanswered.add(question)

    async def _answer(self, context: LLMContext) -> str | None:
        """Ask the endpoints by the retry policy; the apology to speak, or None if answered."""
        cfg = self._config
        started = time.monotonic()
        deadline = started + cfg.answer_deadline_s
        failures: list[str] = []
        # Endpoints that failed a recent turn go last: a hung one would cost every turn
        # its first-token timeout before a healthy fallback was asked.
        order = sorted(self._endpoints, key=lambda e: e.demoted_until > started)
        for endpoint in order:
            now = time.monotonic()
            if endpoint.resting_until > now:
                failures.append(
                    f"{endpoint.label} skipped (Retry-After: "
                    f"{endpoint.resting_until - now:.0f}s left)"
                )
                continue
            for attempt in range(1, cfg.retry_attempts + 1):
                left = deadline - time.monotonic()
                if left < MIN_ATTEMPT_S:
                    break
                self._attempt = _Attempt(endpoint, min(cfg.first_token_timeout_s, left))
                try:
                    await super()._process_context(context)
                    if not self._spoke:
                        raise EmptyReply("empty reply")
                    endpoint.demoted_until = 0.0
                    if failures:
                        logger.warning(
                            f"{self}: LLM fault recovered after {time.monotonic() - started:.1f}s: "
                            f"{'; '.join(failures)}; answered by {endpoint.label}"
                        )
                    return None
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    cause = describe(e, self._secrets)
                    endpoint.demoted_until = time.monotonic() + cfg.failed_endpoint_rest_s
                    if self._spoke:
                        logger.warning(
                            f"{self}: LLM reply from {endpoint.label} broke off after "
                            f"{time.monotonic() - started:.1f}s ({cause}); finishing what was "
                            "said, then apologising"
                        )
                        return cfg.broken_off_apology
                    wait = self._retry_wait(e, attempt)
                    retry = (
                        wait is not None
                        and attempt < cfg.retry_attempts
                        and time.monotonic() + wait + MIN_ATTEMPT_S < deadline
                    )
                    failures.append(
                        f"{endpoint.label} try {attempt}: {cause}"
                        + (f" (retry in {wait:.2f}s)" if retry else "")
                    )
                    hint = retry_after_s(e) if isinstance(e, APIStatusError) else None
                    if hint is not None and hint > cfg.retry_max_delay_s:
                        endpoint.resting_until = time.monotonic() + hint
                    if not retry:
                        break
                    await asyncio.sleep(wait)
                finally:
                    self._attempt = None
        elapsed = time.monotonic() - started
        why = "; ".join(failures) or "no endpoint available"
        if deadline - time.monotonic() < MIN_ATTEMPT_S and failures:
            why += f"; deadline {cfg.answer_deadline_s:g}s reached"
        logger.warning(f"{self}: LLM failed after {elapsed:.1f}s ({why}); apologising")
        return cfg.apology

    def _retry_wait(self, error: Exception, attempt: int) -> float | None:
        """Seconds to wait before trying the same endpoint again, or None not to."""
        if not is_retryable(error):
            return None
        cfg = self._config
        hint = retry_after_s(error) if isinstance(error, APIStatusError) else None
        if hint is not None:
            return hint if hint <= cfg.retry_max_delay_s else None
        backoff = min(cfg.retry_max_delay_s, cfg.retry_base_delay_s * 2 ** (attempt - 1))
        return backoff / 2 + random.uniform(0, backoff / 2)

    # --- one attempt (called by pipecat's _process_context) ------------------------------------

    def build_chat_completion_params(self, params_from_context) -> dict:
        params = super().build_chat_completion_params(params_from_context)
        if self._attempt is not None:
            params["model"] = self._attempt.endpoint.config.model or params["model"]
        return params

    async def get_chat_completions(self, context: LLMContext):
        attempt = self._attempt
        if attempt is None:  # not through _answer (e.g. a summary): pipecat's own behaviour
            return await super().get_chat_completions(context)
        primary, self._client = self._client, attempt.endpoint.client
        try:
            timeout = attempt.first_word_by - time.monotonic()
            try:
                stream = await asyncio.wait_for(super().get_chat_completions(context), timeout)
            except TimeoutError:
                raise attempt.no_first_word() from None
        finally:
            self._client = primary
        return _GuardedStream(stream, attempt, self._config.stall_timeout_s)
