"""Closing Warren's turn when a processor has answered his words itself.

A stop phrase or "say that again" is handled before the user aggregator and
must not reach the LLM or the history. Swallowing the TranscriptionFrame
would leave the user turn open (the turn-end strategy waits for a
transcript) until its 5 s safety timeout, so a blank, finalized transcript
is passed on instead. pipecat 1.14's turn-stop strategies count any non-empty
text (" " included) as "a transcript arrived", while the user aggregator
ignores text that is blank after strip(): the turn closes at once, with
nothing added to the context and nothing for the LLM to answer.
"""

from dataclasses import replace

from pipecat.frames.frames import TranscriptionFrame


def consumed(frame: TranscriptionFrame) -> TranscriptionFrame:
    return replace(frame, text=" ", finalized=True, result=None)
