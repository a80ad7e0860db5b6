"""Keeps the LLM context to the last N user turns, so long chats stay fast and cheap."""

from __future__ import annotations

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


def _role(message) -> str:
    return message.get("role", "") if isinstance(message, dict) else ""


def trim_to_turns(messages: list, turns: int) -> list:
    """System/developer messages stay; then only the last `turns` user turns and their replies.

    `turns` counts completed turns before the current one, so 0 keeps only the
    question being asked.
    """
    head = [m for m in messages if _role(m) in ("system", "developer")]
    rest = [m for m in messages if _role(m) not in ("system", "developer")]
    user_idx = [i for i, m in enumerate(rest) if _role(m) == "user"]
    keep = turns + 1
    if len(user_idx) <= keep:
        return messages
    return head + rest[user_idx[-keep] :]


class HistoryWindow(FrameProcessor):
    """Trims the shared context before each LLM request."""

    def __init__(self, turns: int, **kwargs):
        super().__init__(**kwargs)
        self._turns = turns

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            messages = frame.context.get_messages()
            trimmed = trim_to_turns(messages, self._turns)
            if len(trimmed) != len(messages):
                frame.context.set_messages(trimmed)
        await self.push_frame(frame, direction)
