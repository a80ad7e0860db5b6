"""Silero VAD analysed on the event loop, without a thread hop per audio frame.

pipecat 1.14's VADAnalyzer hands every 20 ms input frame to a one-thread executor.
Most frames only grow Silero's 32 ms window and return at once; the rest run a
model that takes well under a millisecond. The hop itself (a future, a queue, a
thread woken, the GIL handed over twice) cost more than the work: in a flame graph
of the latency suite, `ThreadPoolExecutor.submit` under `VADAnalyzer.analyze_audio`
took about 7 % of the process's Python samples, fifty times a second, on the two
cores Whisper decodes on when Warren stops speaking (issue 18). Run inline, the
same analysis gives the same VAD states (same code, same order) for less.
"""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState


class InlineSileroVAD(SileroVADAnalyzer):
    """SileroVADAnalyzer whose analysis runs in the caller (the input's audio task)."""

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)
