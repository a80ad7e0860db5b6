"""A private PulseAudio server with virtual sound devices, for testing `nabu mic` without hardware.

The room is two null sinks:

    speaker    what Nabu plays; its monitor (`speaker.monitor`) is recorded to hear the reply
    room       everything the microphone picks up; its monitor (`room.monitor`) is the
               microphone. Warren's recordings are played into it (paplay), and, for the
               echo case, the speaker's sound is looped back into it (module-loopback) at a
               laptop's speaker-to-microphone level and delay.

PyAudio reaches the server as an ordinary program does: PortAudio -> ALSA -> ALSA's `pulse`
plugin (Debian's libasound2-plugins) -> PULSE_SERVER. The server runs in the foreground of a
child process with its own runtime and state directories, so it never touches a desktop's
PulseAudio, and it is stopped by its process id.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import wave
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATE_HZ = 16000


def missing_tools() -> list[str]:
    """What this machine lacks for the virtual devices (`.ci/run` installs them)."""
    missing = [t for t in ("pulseaudio", "pactl", "parec", "paplay") if not shutil.which(t)]
    if not any(Path(p).exists() for p in _ALSA_PULSE_PLUGIN):
        missing.append("libasound2-plugins (ALSA's pulse plugin)")
    try:
        import pyaudio  # noqa: F401
    except ImportError:
        missing.append("PyAudio (pip install -e '.[mic]')")
    return missing


_ALSA_PULSE_PLUGIN = (
    "/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib/aarch64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",
    "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so",
)


@dataclass
class Recording:
    """parec writing one source to a raw 16 kHz mono file."""

    path: Path
    process: subprocess.Popen

    def stop(self) -> np.ndarray:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        data = self.path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16)


@dataclass
class VirtualSound:
    """A running private PulseAudio server and the room's devices."""

    directory: Path
    process: subprocess.Popen
    socket: Path
    recordings: list[Recording] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a program that should use these devices (and nothing else)."""
        return {**os.environ, "PULSE_SERVER": f"unix:{self.socket}"}

    def pactl(self, *args: str) -> str:
        return subprocess.run(
            ["pactl", *args], env=self.env, check=True, capture_output=True, text=True, timeout=20
        ).stdout.strip()

    def load(self, module: str, **args: str | int) -> int:
        return int(self.pactl("load-module", module, *(f"{k}={v}" for k, v in args.items())))

    def echo_into_microphone(self, *, level: float, delay_ms: int) -> None:
        """Loop the speaker back into the microphone at `level` (linear amplitude)."""
        module = self.load(
            "module-loopback",
            source="speaker.monitor",
            sink="room",
            latency_msec=delay_ms,
            source_dont_move="true",
            sink_dont_move="true",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in self.pactl("list", "short", "sink-inputs").splitlines():
                cols = line.split("\t")
                if len(cols) >= 4 and cols[2] == "-" and "loopback" in cols[3]:
                    # PulseAudio volumes are cubic: amplitude = (percent / 100) ** 3.
                    percent = round(100 * level ** (1 / 3))
                    self.pactl("set-sink-input-volume", cols[0], f"{percent}%")
                    return
            time.sleep(0.1)
        raise RuntimeError(f"loopback module {module} has no sink input")

    def play_into_room(self, wav: Path) -> subprocess.Popen:
        """Warren speaks: the recording plays into what the microphone hears."""
        return subprocess.Popen(["paplay", "--device=room", str(wav)], env=self.env)

    def record(self, source: str, name: str) -> Recording:
        path = self.directory / f"{name}.raw"
        process = subprocess.Popen(
            [
                "parec",
                f"--device={source}",
                "--format=s16le",
                f"--rate={RATE_HZ}",
                "--channels=1",
                "--raw",
                str(path),
            ],
            env=self.env,
        )
        recording = Recording(path, process)
        self.recordings.append(recording)
        return recording


@contextmanager
def virtual_sound(directory: Path):
    """Start PulseAudio with the speaker and the room; stop it (and its recorders) after."""
    directory.mkdir(parents=True, exist_ok=True)
    runtime = directory / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    socket = runtime / "native"
    server_env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "PULSE_RUNTIME_PATH": str(runtime),
        "PULSE_STATE_PATH": str(directory / "state"),
        "PULSE_SERVER": f"unix:{socket}",
    }
    server_env.pop("DISPLAY", None)
    log = (directory / "pulseaudio.log").open("wb")
    process = subprocess.Popen(
        [
            "pulseaudio",
            "-n",  # no default.pa: only the modules named here
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
            "--disable-shm=yes",
            "--log-target=stderr",
            "-L",
            f"module-native-protocol-unix socket={socket} auth-anonymous=1",
            "-L",
            "module-null-sink sink_name=speaker rate=48000 channels=1",
            "-L",
            "module-null-sink sink_name=room rate=48000 channels=1",
        ],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sound = VirtualSound(directory=directory, process=process, socket=socket)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"pulseaudio exited ({process.returncode}): "
                    f"{(directory / 'pulseaudio.log').read_text(errors='replace')[-2000:]}"
                )
            try:
                sound.pactl("info")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sound.pactl("set-default-sink", "speaker")
        sound.pactl("set-default-source", "room.monitor")
        yield sound
    finally:
        for recording in sound.recordings:
            if recording.process.poll() is None:
                recording.process.kill()
                recording.process.wait(5)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE_HZ) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype(np.int16).tobytes())
    return path
