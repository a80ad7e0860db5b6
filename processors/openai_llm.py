"""The OpenAI-protocol LLM, with answers of its own when no LLM can give one.

Subclasses pipecat's OpenAILLMService (any OpenAI-protocol endpoint: OpenAI,
Ollama, llama.cpp, vLLM). Nabu adds three things Warren needs:
- the time and date are answered locally, instantly and correctly;
- with no LLM configured, Nabu still answers aloud (time, date, what it can
  do, otherwise that it cannot reach its assistant);
- a request that fails becomes a short spoken apology instead of silence:
  before any words, the local answer or apology; after some, an apology
  appended to what was already said.
Errors are handled here rather than pushed as ErrorFrames, so one failed
request does not mark the service unusable for the rest of the conversation.
"""

from __future__ import annotations

import httpx
from loguru import logger
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from pipecat.frames.frames import Frame, LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.openai.llm import OpenAILLMService

from nabu_pipeline.config import LLMConfig, LocaleConfig
from processors.local_answers import NO_LLM, local_answer

BROKEN_OFF = "Sorry, I lost my train of thought there."
# The openai client's own retries (with backoff and Retry-After) are the one
# retry policy; nothing is layered on top.
CLIENT_MAX_RETRIES = 2


def last_user_text(context: LLMContext) -> str:
    for message in reversed(context.get_messages()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class NabuOpenAILLMService(OpenAILLMService):
    """OpenAILLMService that always says something."""

    def __init__(self, *, config: LLMConfig, locale: LocaleConfig, system_prompt: str, **kwargs):
        self._available = config.is_configured
        self._timeout_s = config.timeout_s
        self._locale = locale
        self._spoke = False
        api_key = config.api_key or ("not-configured" if not self._available else "not-needed")
        super().__init__(
            api_key=api_key,
            base_url=config.base_url,
            settings=OpenAILLMService.Settings(
                model=config.model,
                system_instruction=system_prompt,
                temperature=config.temperature,
                max_tokens=config.max_tokens,
            ),
            **kwargs,
        )

    @property
    def available(self) -> bool:
        return self._available

    def create_client(self, api_key=None, base_url=None, **kwargs) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=CLIENT_MAX_RETRIES,
            timeout=httpx.Timeout(self._timeout_s, connect=min(5.0, self._timeout_s)),
            http_client=DefaultAsyncHttpxClient(),
        )

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, LLMTextFrame) and frame.text.strip():
            self._spoke = True
        await super().push_frame(frame, direction)

    async def _process_context(self, context: LLMContext):
        question = last_user_text(context)
        answer = local_answer(question, self._locale, llm_available=self._available)
        if answer is not None:
            logger.info(f"{self}: local answer to [{question}]")
            await self._push_llm_text(answer)
            return
        self._spoke = False
        try:
            await super()._process_context(context)
        except Exception as e:
            # One clear line: stage, endpoint and cause; no stack trace, no secret.
            logger.warning(
                f"{self}: LLM request to {self._client.base_url} failed "
                f"({type(e).__name__}: {str(e)[:200]}); speaking an apology"
            )
            await self._push_llm_text(f" {BROKEN_OFF}" if self._spoke else NO_LLM)
