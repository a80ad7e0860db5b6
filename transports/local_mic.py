"""This machine's microphone and speaker through PortAudio (PyAudio), for `nabu mic`.

pipecat's `LocalAudioTransport` moves the audio; this module finds the
devices it opens: it lists them, picks one by index or by name, checks that it
takes Nabu's sample rates, and turns "no sound hardware here" into one
sentence instead of PortAudio's exceptions. PortAudio's device scan makes ALSA
and JACK print dozens of lines to stderr on a machine without a sound card or
a JACK server; they are kept out of the terminal and logged at DEBUG.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from loguru import logger

Kind = Literal["input", "output"]

NO_DEVICES = (
    "This machine has no {what} that Nabu can use, so `nabu mic` cannot run here: talk to "
    "Nabu from a browser with `nabu serve` (then open http://127.0.0.1:7860/desk and press "
    '"Start talking"), or play it a recording with `nabu talk --input IN.wav --output OUT.wav`.'
)
NO_PYAUDIO = (
    "nabu mic needs PyAudio and the PortAudio library. Install PortAudio "
    "(Debian/Ubuntu: apt-get install portaudio19-dev python3-dev gcc; macOS: brew install "
    "portaudio), then, in the Nabu checkout: pip install -e '.[mic]'"
)
_WHAT = {"input": "microphone", "output": "speaker"}


class MicUnavailable(Exception):
    """The microphone or speaker cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class SoundDevice:
    """One PortAudio device as `nabu mic --list-devices` shows it."""

    index: int
    name: str
    input_channels: int
    output_channels: int
    default_rate_hz: int
    host_api: str

    def channels(self, kind: Kind) -> int:
        return self.input_channels if kind == "input" else self.output_channels


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hold back what C libraries (ALSA, JACK) print to stderr; log it at DEBUG."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            noise = sink.read().decode(errors="replace").strip()
            if noise:
                logger.debug(f"PortAudio said on stderr:\n{noise[-4000:]}")


_alsa_handler = None


def _alsa_errors_to_debug() -> None:
    """ALSA prints a line for every speaker underrun while running; log them at DEBUG."""
    global _alsa_handler
    if _alsa_handler is not None:
        return
    try:
        alsa = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
    except OSError:
        return  # no ALSA (not Linux): nothing prints

    def handler(file, line, function, err, fmt) -> None:
        logger.debug(f"ALSA {(function or b'').decode()}: {(fmt or b'').decode(errors='replace')}")

    c_str, c_int = ctypes.c_char_p, ctypes.c_int
    _alsa_handler = ctypes.CFUNCTYPE(None, c_str, c_int, c_str, c_int, c_str)(handler)
    alsa.snd_lib_error_set_handler(_alsa_handler)


def open_portaudio():
    """A `pyaudio.PyAudio` (PortAudio initialised, devices scanned), quietly."""
    try:
        import pyaudio
    except ImportError:
        raise MicUnavailable(NO_PYAUDIO) from None
    _alsa_errors_to_debug()
    with quiet_stderr():
        return pyaudio.PyAudio()


class SoundDevices:
    """The devices PortAudio found, and the choice of one by index or name."""

    def __init__(self, pa):
        self._pa = pa
        self.devices: list[SoundDevice] = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            self.devices.append(
                SoundDevice(
                    index=i,
                    name=str(info["name"]),
                    input_channels=int(info["maxInputChannels"]),
                    output_channels=int(info["maxOutputChannels"]),
                    default_rate_hz=int(info["defaultSampleRate"]),
                    host_api=str(pa.get_host_api_info_by_index(info["hostApi"])["name"]),
                )
            )

    def of_kind(self, kind: Kind) -> list[SoundDevice]:
        return [d for d in self.devices if d.channels(kind) > 0]

    def default(self, kind: Kind) -> SoundDevice | None:
        """PortAudio's default device of `kind`, else the first that can do it."""
        getter = (
            self._pa.get_default_input_device_info
            if kind == "input"
            else self._pa.get_default_output_device_info
        )
        try:
            index = int(getter()["index"])
        except OSError:  # PortAudio: "No Default Input Device Available"
            index = -1
        usable = self.of_kind(kind)
        return next((d for d in usable if d.index == index), usable[0] if usable else None)

    def choose(self, kind: Kind, wanted: int | str) -> SoundDevice:
        """The device `wanted` names (an index, a name, or part of one); "" is the default."""
        usable = self.of_kind(kind)
        what = _WHAT[kind]
        if not usable:
            nothing = "microphone or speaker" if not self.devices else what
            raise MicUnavailable(NO_DEVICES.format(what=nothing))
        wanted_text = str(wanted).strip()
        if wanted_text == "":
            device = self.default(kind)
            assert device is not None  # usable is not empty
            return device
        see = "`nabu mic --list-devices` shows them"
        if wanted_text.isdigit():
            index = int(wanted_text)
            for device in usable:
                if device.index == index:
                    return device
            raise MicUnavailable(f"There is no {what} number {index}; {see}.")
        low = wanted_text.lower()
        exact = [d for d in usable if d.name.lower() == low]
        matches = exact or [d for d in usable if low in d.name.lower()]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise MicUnavailable(f"No {what} is called {wanted_text!r}; {see}.")
        names = ", ".join(f"{d.index} ({d.name})" for d in matches)
        raise MicUnavailable(
            f"{wanted_text!r} matches {len(matches)} {what}s: {names}; give the number instead."
        )

    def check_rate(self, kind: Kind, device: SoundDevice, rate_hz: int) -> None:
        """Refuse, in words, a device that cannot take `rate_hz` (mono, 16-bit)."""
        import pyaudio

        if kind == "input":
            args = dict(input_device=device.index, input_channels=1, input_format=pyaudio.paInt16)
        else:
            args = dict(
                output_device=device.index, output_channels=1, output_format=pyaudio.paInt16
            )
        try:
            with quiet_stderr():
                self._pa.is_format_supported(rate_hz, **args)
        except ValueError as e:
            reason = e.args[0] if e.args else e
            verb = "record" if kind == "input" else "play"
            raise MicUnavailable(
                f"The {_WHAT[kind]} {device.name!r} cannot {verb}"
                f" mono 16-bit audio at {rate_hz} Hz ({reason}); choose a device that converts "
                f"rates, such as 'default' or 'pulse' (`nabu mic --list-devices`)."
            ) from None

    def describe(self) -> str:
        """The table `nabu mic --list-devices` prints."""
        if not self.devices:
            raise MicUnavailable(NO_DEVICES.format(what="microphone or speaker"))
        lines = []
        for kind, title in (("input", "Microphones (input)"), ("output", "Speakers (output)")):
            default = self.default(kind)
            lines.append(f"{title}:")
            usable = self.of_kind(kind)
            for d in usable:
                mark = "  (default)" if default is not None and d.index == default.index else ""
                lines.append(
                    f"  {d.index:>3}  {d.name}  [{d.host_api}, {d.channels(kind)} ch, "
                    f"{d.default_rate_hz} Hz]{mark}"
                )
            if not usable:
                lines.append("  (none)")
        lines.append("Choose with --input-device / --output-device (a number or a name).")
        return "\n".join(lines)


def local_audio_transport(
    pa,
    *,
    input_device: SoundDevice,
    output_device: SoundDevice,
    in_rate_hz: int,
    out_rate_hz: int,
    on_played: Callable[[bytes, int, int, float], None] | None = None,
):
    """pipecat's LocalAudioTransport on the chosen devices (mono, Nabu's rates).

    `on_played(pcm, sample_rate_hz, num_channels, heard_at)` hears every period the
    speaker plays; each microphone frame carries when it was recorded
    (`processors.echo_canceller.CAPTURED_AT_KEY`).
    """
    from pipecat.transports.local.audio import LocalAudioTransportParams

    from transports.local_audio import RoomyLocalAudioTransport

    params = LocalAudioTransportParams(
        audio_in_enabled=True,
        audio_in_sample_rate=in_rate_hz,
        audio_out_enabled=True,
        audio_out_sample_rate=out_rate_hz,
        input_device_index=input_device.index,
        output_device_index=output_device.index,
    )
    with quiet_stderr():
        transport = RoomyLocalAudioTransport(params, on_played=on_played)
    # pipecat opens its own PortAudio handle; ours only served to choose the devices.
    pa.terminate()
    return transport
