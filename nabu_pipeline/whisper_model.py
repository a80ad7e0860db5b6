"""faster-whisper's model, plus how sure Whisper is that it heard Warren's language.

Speech it cannot make out (slurred beyond reading, a TV in another room, speech
played backwards) still comes out as fluent English when the language is fixed,
and its average log-probability can look as good as a hard real sentence: on the
shipped clips played backwards, four of 23 scored above -0.76 while clear
speech scored down to -0.66. Whisper's language identification separates them:
English scored 0.78-1.00 on the clear clips and 0.59-0.99 on the degraded copy,
but 0.04-0.49 on 16 of the 23 reversed ones. Asking faster-whisper to detect the
language costs a second pass of the encoder (most of a decode on a CPU), so this
subclass reads the language probabilities off the encoder output the decode
computes anyway: one decoder step, measured at +0.03 s median per utterance with
base on the 2-core CPU (0.56 -> 0.59 s, 5 %, 46 decodes interleaved). Transcription
still uses the configured language.
"""

from __future__ import annotations

import threading

from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim


class LanguageScoringWhisperModel(WhisperModel):
    """`transcribe()` as usual; `language_probabilities()` afterwards, in the same thread."""

    _last = threading.local()

    def generate_segments(self, features, tokenizer, options, log_progress, encoder_output=None):
        self._last.probabilities = None
        if encoder_output is None and self.model.is_multilingual:
            # Exactly the first window generate_segments would encode (seek 0).
            content_frames = features.shape[-1] - 1
            first = features[:, : min(self.feature_extractor.nb_max_frames, content_frames)]
            encoder_output = self.encode(pad_or_trim(first))
            ranked = self.model.detect_language(encoder_output)[0]
            self._last.probabilities = {token[2:-2]: p for token, p in ranked}
        yield from super().generate_segments(
            features, tokenizer, options, log_progress, encoder_output
        )

    def language_probabilities(self) -> dict[str, float] | None:
        """Language -> probability for the first 30 s of this thread's last transcription.

        None for English-only models (tiny.en), which cannot tell.
        """
        return getattr(self._last, "probabilities", None)
