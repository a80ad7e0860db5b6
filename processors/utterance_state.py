"""What Nabu knows about the sentence Warren is in the middle of, shared by three stages.

Warren pauses mid-sentence. Each pause ends a VAD segment, and Nabu starts
answering what it has so far (speculatively, held by the SpeechReleaseGate).
If he carries on before the pause reaches the release hold, the sentence is
not over: the STT transcribes the whole utterance again, pauses and all (one
transcript of the whole sentence is more accurate than fragments, and the
fragments would overlap), and the history window drops the partial
transcripts it superseded, so the LLM sees the sentence once, whole.

- SpeechReleaseGate sets `pause_expired` when a pause reaches its hold: the
  utterance is over and whatever comes next is a new one.
- NabuWhisperSTTService keeps the utterance's audio while it is open and
  records each transcript.
- HistoryWindow removes superseded partial user messages before the LLM call.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UtteranceState:
    pause_expired: bool = True
    """True once silence has reached the release hold (or before anything was said)."""
    transcripts: list[str] = field(default_factory=list)
    """Transcripts of the open utterance, oldest first; each supersedes the previous."""
    superseded: set[str] = field(default_factory=set)
    """Partial transcripts a later, whole one replaced; not to be sent to the LLM."""
    awaiting: int = 0
    """Stretches of speech handed to Whisper whose transcript has not come back yet. On a
    busy CPU Whisper can take longer than his pause; he is still continuing the utterance."""
    speaking: bool = False
    """He is speaking now (VAD has started a stretch and not yet ended it)."""

    def start_speech(self) -> bool:
        """Warren started speaking; True when he is continuing the open utterance."""
        continuing = not self.pause_expired and (bool(self.transcripts) or self.awaiting > 0)
        if not continuing:
            self.transcripts.clear()
            self.awaiting = 0  # a stale count must not glue the next utterance to this one
        self.pause_expired = False
        self.speaking = True
        return continuing

    def transcribed(self, text: str) -> None:
        self.superseded.update(t for t in self.transcripts if t != text)
        self.transcripts.append(text)
        if len(self.superseded) > 64:
            self.superseded = set(list(self.superseded)[-32:])
