"""Short answers that must be heard: a call for help's answer, a reminder, its read-back.

A transcript that arrives after its turn was closed (Whisper slow under load: 6 s
for 2 s of audio was seen) opens a new user turn, and pipecat's user aggregator
then broadcasts an interruption that would silently drop an answer already on its
way. These sentences are short and matter, so they are marked uninterruptible;
"stop" still ends anything longer.
"""

from pipecat.frames.frames import TTSSpeakFrame


def firm_speech(text: str, *, append_to_context: bool = False) -> TTSSpeakFrame:
    frame = TTSSpeakFrame(text, append_to_context=append_to_context)
    frame.interruptible = False
    return frame
