"""The words of the last user or assistant message in an LLM context, as plain text.

Local answers read Warren's last question; 'say that again' reads Nabu's last
answer. Both read the context the same way: a message's content is a string,
or a list of parts whose text parts are joined.
"""

from __future__ import annotations

from pipecat.processors.aggregators.llm_context import LLMContext


def last_text(context: LLMContext, role: str) -> str:
    """The text of the newest message with this role ("" when there is none)."""
    for message in reversed(context.get_messages()):
        if isinstance(message, dict) and message.get("role") == role:
            content = message.get("content")
            if isinstance(content, str):
                return content.strip()
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict)).strip()
    return ""


def last_user_text(context: LLMContext) -> str:
    """Warren's newest message."""
    return last_text(context, "user")


def last_assistant_text(context: LLMContext) -> str:
    """Nabu's newest answer."""
    return last_text(context, "assistant")
