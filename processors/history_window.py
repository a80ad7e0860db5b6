"""Tidies the LLM context: split questions merged, only the last N turns (fast and cheap)."""

from __future__ import annotations

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.text_normalise import normalise
from processors.utterance_state import UtteranceState


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


def merge_consecutive_user_messages(
    messages: list, unanswered: set[str] | frozenset = frozenset()
) -> list:
    """One question split by a pause becomes one user message again.

    When Warren resumes after a pause, the speculative answer to his first words
    is dropped unheard and his next words arrive as a second user turn; the
    LLM should see the sentence he actually said. Only the question being asked
    (the user messages after the last answer) is joined: older turns were
    settled when they were asked. A question the LLM failed to answer
    (`unanswered`, by its text) is a whole question of its own, not the start of
    the next one: it stays a separate message, so the LLM sees two questions.
    """
    start = len(messages)
    while start > 0 and _role(messages[start - 1]) == "user":
        start -= 1
    merged: list = list(messages[:start])
    for i, m in enumerate(messages[start:]):
        prev = merged[-1] if i else None
        if (
            prev is not None
            and isinstance(m.get("content"), str)
            and isinstance(prev.get("content"), str)
            and prev["content"].strip() not in unanswered
        ):
            merged[-1] = {**prev, "content": f"{prev['content'].rstrip()} {m['content'].lstrip()}"}
        else:
            merged.append(m)
    return merged


def drop_superseded(messages: list, superseded: set[str]) -> list:
    """Partial transcripts that a whole-utterance transcript replaced (utterance_state.py).

    Only user messages in the unanswered run just before the last one are dropped:
    an answered question is never touched.
    """
    if not superseded or not messages or _role(messages[-1]) != "user":
        return messages
    start = len(messages) - 1
    while start > 0 and _role(messages[start - 1]) == "user":
        start -= 1
    run = [
        m
        for m in messages[start:-1]
        if not (isinstance(m.get("content"), str) and m["content"].strip() in superseded)
    ]
    last = messages[-1]
    content = last.get("content")
    if isinstance(content, str):
        # A partial and its whole can also land in the same turn ("A" then "A B").
        text = content.strip()
        for partial in sorted(superseded, key=len, reverse=True):
            rest = text[len(partial) :].strip()
            first_word = normalise(partial).split(" ")[0]
            if text.startswith(partial) and rest and normalise(rest).startswith(first_word):
                last = {**last, "content": rest}
                break
    return [*messages[:start], *run, last]


class HistoryWindow(FrameProcessor):
    """Before each LLM request: whole sentences once, split questions merged, last N turns."""

    def __init__(
        self,
        turns: int,
        utterance: UtteranceState | None = None,
        unanswered: set[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._turns = turns
        self._utterance = utterance
        self._unanswered = unanswered if unanswered is not None else set()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            messages = frame.context.get_messages()
            superseded = self._utterance.superseded if self._utterance else set()
            tidy = drop_superseded(messages, superseded)
            tidy = merge_consecutive_user_messages(tidy, self._unanswered)
            tidy = trim_to_turns(tidy, self._turns)
            if len(tidy) != len(messages):
                frame.context.set_messages(tidy)
        await self.push_frame(frame, direction)
