"""faster-whisper's model, plus how sure Whisper is of his language and of each word.

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

Word probabilities: faster-whisper gives them only with `word_timestamps=True`, and
then it moves its window to the last word's end and decodes the trailing silence again:
a second 30 s encoder pass (decode time 2.6x, measured here) that also invents words
("you", "Bye."). Scoring the tokens already decoded against the encoder output already
computed, after the same prompt (CTranslate2's `align`, which faster-whisper's own word
timestamps use) costs about 5 % of a decode instead (0.07 s against 1.45 s, 23 clips, a
busy machine).
"""

from __future__ import annotations

import threading

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim


class ScoringWhisperModel(WhisperModel):
    """`transcribe()` as usual; `language_probabilities()` and `word_probabilities()`
    afterwards, in the same thread."""

    _last = threading.local()

    def encode(self, features):
        output = super().encode(features)
        self._last.encoded = output
        self._last.windows = getattr(self._last, "windows", 0) + 1
        return output

    def generate_segments(self, features, tokenizer, options, log_progress, encoder_output=None):
        self._last.probabilities = None
        self._last.encoded = None
        self._last.windows = 0
        self._last.frames = min(features.shape[-1] - 1, self.feature_extractor.nb_max_frames)
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

    def generate_with_fallback(self, encoder_output, prompt, tokenizer, options):
        self._last.prompt = list(prompt)
        self._last.tokenizer = tokenizer
        return super().generate_with_fallback(encoder_output, prompt, tokenizer, options)

    def word_probabilities(self, segments: list) -> tuple[tuple[str, float], ...]:
        """Each word of this thread's last transcription (punctuation attached to it) with
        Whisper's probability of it, given the same prompt as the decode (his home's names
        in it make "Kitchen" likely; without it the capital K scored 0.00); () when
        unknown. Utterances are under one 30 s window (whisper_stt.MAX_UTTERANCE_S), so
        the last encoder output is the whole of it."""
        encoded = getattr(self._last, "encoded", None)
        self._last.encoded = None
        if encoded is None or not segments or getattr(self._last, "windows", 0) != 1:
            return ()  # nothing decoded, or more than one 30 s window (the benches' long clips)
        tokenizer = self._last.tokenizer
        tokens = [t for s in segments for t in s.tokens if t < tokenizer.eot]
        if not tokens:
            return ()
        (result,) = self.model.align(encoded, self._last.prompt, [tokens], self._last.frames)
        probabilities = result.text_token_probs
        texts, groups = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
        words: list[list] = []
        at = 0
        for text, group in zip(texts, groups, strict=True):
            if not group or group[0] >= tokenizer.eot:
                break
            probability = float(np.mean(probabilities[at : at + len(group)]))
            at += len(group)
            punctuation = not any(c.isalnum() for c in text)
            if words and (punctuation or not text.startswith(" ")):
                # "." and "-disposed" belong to the word before; punctuation's own (often
                # low) probability says nothing about what he said.
                words[-1][0] += text
                if not punctuation:
                    words[-1][1] = min(words[-1][1], probability)
            elif not punctuation:
                words.append([text, probability])
        return tuple((t.strip(), round(p, 3)) for t, p in words)
