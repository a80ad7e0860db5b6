"""`nabu bench --suite concurrent`: three conversations at once through a real `nabu serve`.

Why: one server answers the phone app and the desk page at the same time
(server.max_sessions), and on a small CPU every conversation's Whisper, VAD and
Piper share the same cores. The latency suite runs one pipeline inside the
benchmark's own process, so it cannot say what a second and a third
conversation cost the first, nor how much memory the server holds. Here the
server is the real thing, `python -m nabu_pipeline.cli serve` in its own process
(`server_probes.nabu_serve`), talking to the built-in scripted OpenAI-protocol
LLM, and the callers are real Pipecat-protocol WebSocket clients
(`benchmarks/phone_client.PhoneClient`) whose microphones send 20 ms of audio every
20 ms of wall time.

Phases, one server throughout:
- single: one conversation through every clip, after one warm-up turn not counted;
- conversations: N one-turn conversations one after another (connect, one clip,
  its reply, close), for the server's memory after many sessions;
- three at once: `--sessions` conversations started together, each through every
  clip from its own offset in the list (rotated by 0, n/3, 2n/3) so they do not
  say the same thing at the same moment.

A turn: the clip is said, the reply starts and finishes (a bot-stopped-speaking
event and 1 s without Nabu's audio), then a 1 s gap before the next clip: a
conversation's pace. Voice-to-voice is timed as in the latency suite: from the
moment the clip's end of speech (offline Silero VAD on the file) had been sent,
in wall time, to the first audio frame of the reply received by the client. A
turn without a reply within REPLY_WITHIN_S counts as a failure and the
conversation goes on. The server's resident memory (VmRSS in /proc) is sampled
every 0.5 s throughout.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import yaml
from loguru import logger
from tqdm import tqdm

from benchmarks.clips import DEFAULT_MANIFEST, SAMPLE_RATE, Clip, load_manifest, repo_path
from benchmarks.latency import summarise
from benchmarks.phone_client import PhoneClient
from benchmarks.run import _machine, llm_endpoint
from benchmarks.server_probes import nabu_serve
from nabu_pipeline.config import DEFAULT_CONFIG_PATH, NabuConfig
from nabu_pipeline.freed_memory import IDLE_S

SESSIONS = 3
"""Conversations at once in the last phase (`--sessions`)."""
CONVERSATIONS = 20
"""One-turn conversations before the memory reading (`--conversations`)."""
GAP_S = 1.0
"""Quiet after Nabu's reply before the next clip (on top of QUIET_S)."""
QUIET_S = 1.0
"""A reply has finished when bot-stopped-speaking came and no audio arrived for this long."""
REPLY_WITHIN_S = 60.0
"""End of speech -> first reply audio; later counts as no reply (a failure)."""
FINISH_WITHIN_S = 120.0
"""First reply audio -> reply finished; later, the conversation goes on regardless."""
RSS_EVERY_S = 0.5
GOAL_P95_RATIO = 2.0
"""Three at once: p95 voice-to-voice at most this many times one conversation's."""
GOAL_RSS_MB = 1500.0
"""The server's resident memory, at most 1.5 GB (10^6-byte MB) at any point."""
MB = 1_000_000


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of process `pid` in MB (10^6 bytes); empty once it has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) * 1024 / MB, 1)
    return out


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `every_s`, tagged with the phase running then."""

    def __init__(self, pid: int, every_s: float = RSS_EVERY_S):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.phase = "start"
        self.samples: list[tuple[float, str, float]] = []
        self._t0 = time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.every_s)

    def sample(self) -> float | None:
        rss = proc_status_mb(self.pid).get("VmRSS")
        if rss is not None:
            self.samples.append((round(time.monotonic() - self._t0, 2), self.phase, rss))
        return rss

    def peak(self, phase: str | None = None) -> float | None:
        values = [mb for _, p, mb in self.samples if phase is None or p == phase]
        return max(values) if values else None

    def stop(self) -> None:
        self._done.set()
        self.join(5)


@dataclass
class Turn:
    phase: str
    session: int
    index: int
    """Position in its conversation (the warm-up turn is -1)."""
    clip: str
    voice_to_voice_s: float | None
    replied: bool
    finished: bool = False
    bursts: int = 0
    """Bursts of Nabu's audio from his end of speech until the next clip (more than one: the
    reply stuttered or came twice)."""
    early: int = 0
    """Bursts that started while he was still speaking (a reply cut him off)."""
    error: str = ""


class Caller:
    """One phone: says clips and times Nabu's replies."""

    def __init__(self, url: str):
        self.phone = PhoneClient(url)
        self._said = 0  # clips queued into the microphone so far (two per turn)

    async def turn(self, clip: Clip, phase: str, session: int, index: int) -> Turn:
        phone = self.phone
        pcm = clip.samples.tobytes()
        end_s = clip.speech_end_s if clip.speech_end_s > 0 else clip.duration_s
        cut = min(round(end_s * SAMPLE_RATE), len(clip.samples)) * 2
        starts = len(phone.bot_audio_starts)
        stops = len(phone.of("bot-stopped-speaking"))
        ended = self._said  # said_until[ended]: the end of his speech had been sent
        phone.say(pcm[:cut])
        phone.say(pcm[cut:])
        self._said += 2
        turn = Turn(phase, session, index, clip.name, None, replied=False)
        try:
            await phone.wait_until(
                lambda: phone.closed or len(phone.said_until) > ended,
                clip.duration_s + 30,
                "end of speech sent",
            )
            if phone.closed:
                turn.error = "connection closed"
                return turn
            speech_end = phone.said_until[ended]

            def first_reply() -> float | None:
                return next((t for t in phone.bot_audio_starts[starts:] if t >= speech_end), None)

            await phone.wait_until(
                lambda: phone.closed or first_reply() is not None, REPLY_WITHIN_S, "reply"
            )
            first = first_reply()
            if first is None:
                turn.error = "connection closed"
                return turn
            turn.replied, turn.voice_to_voice_s = True, round(first - speech_end, 3)

            def finished() -> bool:
                stopped = any(e.t >= first for e in phone.of("bot-stopped-speaking")[stops:])
                return phone.closed or (stopped and time.time() - phone.last_audio_at >= QUIET_S)

            await phone.wait_until(finished, FINISH_WITHIN_S, "end of the reply")
            turn.finished = not phone.closed
        except TimeoutError as e:
            turn.error = str(e).split(";")[0]
        finally:
            if not phone.closed:
                await asyncio.sleep(GAP_S)
            if len(phone.said_until) > ended:
                bursts = phone.bot_audio_starts[starts:]
                speech_end = phone.said_until[ended]
                turn.early = sum(t < speech_end for t in bursts)
                turn.bursts = len(bursts) - turn.early
        return turn


async def _open(url: str) -> Caller | Exception:
    caller = Caller(url)
    try:
        await caller.phone.open()
    except Exception as e:  # refused, or no bot-ready: every turn of it counts as a failure
        await caller.phone.close()
        return e
    return caller


async def _talk(
    caller: Caller | Exception,
    clips: list[Clip],
    phase: str,
    session: int,
    progress: tqdm,
    first_index: int = 0,
) -> list[Turn]:
    turns = []
    for i, clip in enumerate(clips, first_index):
        if isinstance(caller, Exception) or caller.phone.closed:
            why = f"connect: {caller!r}" if isinstance(caller, Exception) else "connection closed"
            turns.append(Turn(phase, session, i, clip.name, None, replied=False, error=why[:200]))
        else:
            turns.append(await caller.turn(clip, phase, session, i))
        progress.update()
    return turns


async def wait_idle(port: int, within_s: float = 60) -> None:
    """Until the server counts no session (the last one's pipeline has ended)."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient() as client:
        while True:
            try:
                r = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                if r.json()["sessions"] == 0:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                logger.warning(f"the server still counts sessions after {within_s:.0f} s")
                return
            await asyncio.sleep(0.1)


def rotated(clips: list[Clip], session: int, sessions: int) -> list[Clip]:
    k = session * len(clips) // sessions
    return clips[k:] + clips[:k]


async def _drive(
    url: str, port: int, clips: list[Clip], sessions: int, conversations: int, rss: RssSampler
) -> tuple[list[Turn], dict]:
    progress = tqdm(
        total=1 + len(clips) + conversations + sessions * len(clips), desc="concurrent", unit="turn"
    )
    turns: list[Turn] = []
    memory: dict[str, float | None] = {}
    try:
        rss.phase = "single"
        caller = await _open(url)
        warm = await _talk(caller, clips[:1], "warm-up", 0, progress, first_index=-1)
        turns += warm
        memory["after_warm_up"] = rss.sample()
        logger.info(f"after warm-up: {memory['after_warm_up']} MB")
        try:
            turns += await _talk(caller, clips, "single", 0, progress)
        finally:
            if not isinstance(caller, Exception):
                await caller.phone.close()
        await wait_idle(port)

        rss.phase = "conversations"
        for i in range(conversations):
            one = await _open(url)
            try:
                turns += await _talk(one, [clips[i % len(clips)]], "conversations", i, progress)
            finally:
                if not isinstance(one, Exception):
                    await one.phone.close()
            await wait_idle(port)
        memory["after_conversations"] = rss.sample()
        await asyncio.sleep(IDLE_S + 1)  # the server hands freed memory back when idle
        memory["after_conversations_idle"] = rss.sample()
        logger.info(f"after {conversations} conversations: {memory} MB")

        rss.phase = "concurrent"
        callers = await asyncio.gather(*(_open(url) for _ in range(sessions)))
        try:
            for per_session in await asyncio.gather(
                *(
                    _talk(c, rotated(clips, s, sessions), "concurrent", s, progress)
                    for s, c in enumerate(callers)
                )
            ):
                turns += per_session
        finally:
            for c in callers:
                if not isinstance(c, Exception):
                    await c.phone.close()
        rss.sample()
        memory["peak_concurrent"] = rss.peak("concurrent")
        rss.phase = "end"
        await wait_idle(port)
    finally:
        progress.close()
    return turns, memory


def server_config(config: NabuConfig, sessions: int) -> str:
    """The YAML `nabu serve` runs with: the user's config file (or the defaults) with room for
    every session, plain loopback WebSocket and the benchmark's own data directory."""
    own: dict = {}
    source = Path(config.source) if config.source else DEFAULT_CONFIG_PATH
    if source.is_file() and source.resolve() != DEFAULT_CONFIG_PATH.resolve():
        own = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    server = {
        **(own.get("server") or {}),
        "max_sessions": max(config.server.max_sessions, 4, sessions + 1),
        "data_dir": "",
        "tls_certfile": "",
        "tls_keyfile": "",
        "public_url": "",
    }
    llm = {**(own.get("llm") or {}), "provider": "openai"}
    return yaml.safe_dump({**own, "server": server, "llm": llm}, sort_keys=False)


def phase_summary(turns: list[Turn]) -> dict:
    return {
        "voice_to_voice_s": summarise([t.voice_to_voice_s for t in turns]),
        "turns": len(turns),
        "no_reply": sum(not t.replied for t in turns),
        "unfinished": sum(t.replied and not t.finished for t in turns),
        "more_than_one_burst": sum(t.bursts > 1 for t in turns),
        "early": sum(t.early > 0 for t in turns),
    }


def _goal(value: float | None, limit: float) -> dict:
    return {
        "value": value,
        "limit": limit,
        "op": "<=",
        "pass": value is not None and value <= limit,
    }


def run_concurrent(args, config: NabuConfig) -> dict:
    clips = load_manifest(args.manifest)
    sessions = getattr(args, "sessions", None)
    sessions = SESSIONS if sessions is None else max(1, sessions)
    conversations = getattr(args, "conversations", None)
    conversations = CONVERSATIONS if conversations is None else max(0, conversations)
    llm, url = llm_endpoint(args)
    token = secrets.token_urlsafe(24)  # whatever the user's environment holds
    tmp = Path(tempfile.mkdtemp(prefix="nabu-bench-concurrent-"))
    env = {"NABU_LLM_BASE_URL": url, "NABU_AUTH_TOKEN": token}
    started = time.time()
    try:
        serving = nabu_serve(tmp, "serve", env, server_config(config, sessions), with_process=True)
        with serving as (port, log, _data, proc):
            startup_s = round(time.time() - started, 1)
            rss = RssSampler(proc.pid)
            rss.start()
            try:
                turns, memory = asyncio.run(
                    _drive(
                        f"ws://127.0.0.1:{port}/ws?token={token}",
                        port,
                        clips,
                        sessions,
                        conversations,
                        rss,
                    )
                )
            finally:
                rss.stop()
            status = proc_status_mb(proc.pid)
            log_lines = log.read_text(errors="replace").splitlines()
    finally:
        if llm:
            llm.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    errors = [ln for ln in log_lines if "| ERROR" in ln or "Traceback" in ln]
    by_phase = {p: [t for t in turns if t.phase == p] for p in ("single", "conversations")}
    concurrent = [t for t in turns if t.phase == "concurrent"]
    single = phase_summary(by_phase["single"])
    together = phase_summary(concurrent)
    together["per_session"] = [
        {
            "first_clip": rotated(clips, s, sessions)[0].name,
            **phase_summary([t for t in concurrent if t.session == s]),
        }
        for s in range(sessions)
    ]
    ratio = None
    if single["voice_to_voice_s"]["p95"] and together["voice_to_voice_s"]["p95"]:
        ratio = round(together["voice_to_voice_s"]["p95"] / single["voice_to_voice_s"]["p95"], 3)
    memory["peak"] = rss.peak()
    memory["high_water"] = status.get("VmHWM")
    return {
        "suite": "concurrent",
        "sessions": sessions,
        "conversations_count": conversations,
        "single": single,
        "conversations": phase_summary(by_phase["conversations"]),
        "concurrent": together,
        "concurrent_over_single_p95": ratio,
        "rss_mb": memory,
        "goals": {
            "concurrent_over_single_p95": _goal(ratio, GOAL_P95_RATIO),
            "server_rss_peak_mb": _goal(memory["peak"], GOAL_RSS_MB),
        },
        "failures": sum(not t.replied for t in turns if t.phase != "warm-up"),
        "server_errors": len(errors),
        "server_error_lines": [ln[:300] for ln in errors[:10]],
        "server_startup_s": startup_s,
        "stt_model": config.stt.model,
        "pause_tolerance_s": config.turn.pause_tolerance_s,
        "max_sessions": max(config.server.max_sessions, 4, sessions + 1),
        "limits_s": {"reply_within": REPLY_WITHIN_S, "finish_within": FINISH_WITHIN_S},
        "llm": {
            "endpoint": "built-in scripted server" if llm else url,
            "ttft_s": llm.script.ttft_s if llm else None,
            "tokens_per_s": llm.script.tokens_per_s if llm else None,
        },
        "manifest": repo_path(args.manifest or DEFAULT_MANIFEST),
        "clips": len(clips),
        "machine": _machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rss_samples": rss.samples,
        "turns": [asdict(t) for t in turns],
    }


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _mb(v) -> str:
    return "–" if v is None else f"{v:.0f}"


PHASES = (
    ("single", "one conversation"),
    ("conversations", "one-turn conversations, one after another"),
    ("concurrent", "at once"),
)


def _phase_rows(r: dict) -> list[list]:
    rows = []
    for key, label in PHASES:
        d = r[key]
        v = d["voice_to_voice_s"]
        if key == "concurrent":
            label = f"{r['sessions']} {label}"
        elif key == "conversations":
            label = f"{r['conversations_count']} {label}"
        rows.append(
            [
                label,
                d["turns"],
                _fmt(v["p50"]),
                _fmt(v["p95"]),
                d["no_reply"],
                d["more_than_one_burst"],
                d["early"],
            ]
        )
    return rows


def summary_table(r: dict) -> str:
    from benchmarks.report import _table

    columns = ["phase", "turns", "v2v p50 (s)", "v2v p95 (s)", "no reply", ">1 burst", "early"]
    m = r["rss_mb"]
    return "\n".join(
        [
            *_table(columns, _phase_rows(r)),
            "",
            f"p95 {r['sessions']} at once / one: {_fmt(r['concurrent_over_single_p95'])} "
            f"(goal <= {GOAL_P95_RATIO}); server RSS MB: after warm-up "
            f"{_mb(m['after_warm_up'])}, after {r['conversations_count']} conversations "
            f"{_mb(m['after_conversations'])}, peak {r['sessions']} at once "
            f"{_mb(m['peak_concurrent'])}, peak {_mb(m['peak'])} (goal <= {GOAL_RSS_MB:.0f})",
        ]
    )


def markdown(r: dict, plots: list[Path]) -> str:
    from benchmarks.report import _table

    llm = r["llm"]
    pace = (
        f" (first token {llm['ttft_s']} s, {llm['tokens_per_s']:.0f} tokens/s, a three-sentence "
        "reply)"
        if llm["ttft_s"] is not None
        else ""
    )
    out = [
        "# Nabu concurrent conversations benchmark",
        "",
        f"A real `nabu serve` process (Whisper {r['stt_model']}, pause hold "
        f"{r['pause_tolerance_s']} s, max_sessions {r['max_sessions']}; ready in "
        f"{r['server_startup_s']} s) and real Pipecat-protocol WebSocket clients on loopback, "
        f"machine: {r['machine']['cpu_count']} CPUs, the clients on the same cores. LLM: "
        f"{llm['endpoint']}{pace}. {r['clips']} clips from `{r['manifest']}`, said at real-time "
        "pace; after each reply has finished (bot-stopped-speaking and "
        f"{QUIET_S:g} s without its audio) a {GAP_S:g} s gap, then the next clip. "
        "Voice-to-voice: from the moment the clip's end of speech (offline Silero VAD) had been "
        "sent to the first audio frame of the reply received by the client. The single "
        "conversation's first turn warms the server up and is not counted. "
        f"The {r['sessions']} conversations at once start together, each through every clip "
        "from its own offset in the list. No reply within "
        f"{r['limits_s']['reply_within']:.0f} s is a failure.",
        "",
        "## Voice to voice",
        "",
        *_table(
            [
                "phase",
                "turns",
                "v2v p50 (s)",
                "v2v p95 (s)",
                "no reply",
                "more than one reply burst",
                "reply began before his end of speech",
            ],
            _phase_rows(r),
        ),
        "",
        "## Goals",
        "",
    ]
    labels = {
        "concurrent_over_single_p95": f"p95, {r['sessions']} at once / one conversation",
        "server_rss_peak_mb": "server resident memory, peak (MB)",
    }
    out += _table(
        ["goal", "value", "limit", "result"],
        [
            [
                labels[name],
                _fmt(g["value"]),
                f"{g['op']} {g['limit']}",
                "pass" if g["pass"] else "**FAIL**",
            ]
            for name, g in r["goals"].items()
        ],
    )
    m = r["rss_mb"]
    out += [
        "",
        f"Turns without a reply (failures): {r['failures']}. ERROR lines in the server's log: "
        f"{r['server_errors']}. Load average at the end: {r['load_average']}.",
        *[f"    {line}" for line in r["server_error_lines"]],
        "",
        "## Server memory",
        "",
        f"VmRSS of the `nabu serve` process (/proc), MB of 10^6 bytes, sampled every "
        f"{RSS_EVERY_S:g} s throughout. The {r['conversations_count']} conversations come after "
        "the single one: each connects, says one clip, hears the reply and disconnects, one "
        f"after another. The server hands freed memory back {IDLE_S:g} s after its last session "
        "ends.",
        "",
        *_table(
            ["moment", "MB"],
            [
                ["after the warm-up turn", _mb(m["after_warm_up"])],
                [
                    f"after {r['conversations_count']} one-turn conversations (all closed)",
                    _mb(m["after_conversations"]),
                ],
                [f"the same, {IDLE_S + 1:g} s later (idle)", _mb(m["after_conversations_idle"])],
                [f"peak while {r['sessions']} conversations ran", _mb(m["peak_concurrent"])],
                ["peak over the whole run", _mb(m["peak"])],
                ["kernel high-water mark (VmHWM) at the end", _mb(m["high_water"])],
            ],
        ),
        "",
        f"## {r['sessions']} at once, per conversation",
        "",
        *_table(
            ["conversation", "first clip", "p50 (s)", "p95 (s)", "no reply", ">1 burst"],
            [
                [
                    i,
                    s["first_clip"],
                    _fmt(s["voice_to_voice_s"]["p50"]),
                    _fmt(s["voice_to_voice_s"]["p95"]),
                    s["no_reply"],
                    s["more_than_one_burst"],
                ]
                for i, s in enumerate(r["concurrent"]["per_session"])
            ],
        ),
        "",
        "## Per turn",
        "",
        *_table(
            ["phase", "conversation", "turn", "clip", "v2v (s)", "bursts", "early", "note"],
            [
                [
                    t["phase"],
                    t["session"],
                    t["index"],
                    t["clip"],
                    _fmt(t["voice_to_voice_s"]),
                    t["bursts"],
                    t["early"],
                    (t["error"] or ("" if t["finished"] else "reply did not finish"))
                    .replace("|", "/")
                    .replace("\n", " "),
                ]
                for t in r["turns"]
            ],
        ),
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    return "\n".join(out)


def plot(r: dict, out: Path) -> Path:
    """Voice-to-voice CDF per phase, and the server's memory over the run."""
    import matplotlib.pyplot as plt

    from benchmarks.report import _axes, _save

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in PHASES:
        vals = sorted(
            t["voice_to_voice_s"]
            for t in r["turns"]
            if t["phase"] == key and t["voice_to_voice_s"] is not None
        )
        if key == "concurrent":
            label = f"{r['sessions']} {label}"
        if vals:
            left.step(
                vals, [(i + 1) / len(vals) for i in range(len(vals))], where="post", label=label
            )
    left.legend(fontsize=8)
    _axes(left, "voice-to-voice (s)", "fraction of turns", "Voice to voice")
    phases = list(dict.fromkeys(p for _, p, _ in r["rss_samples"]))
    for phase in phases:
        pts = [(t, mb) for t, p, mb in r["rss_samples"] if p == phase]
        right.plot([t for t, _ in pts], [mb for _, mb in pts], ".", ms=3, label=phase)
    right.axhline(GOAL_RSS_MB, ls="--", color="red", lw=1, label="goal")
    right.legend(fontsize=8)
    _axes(right, "seconds since the server was ready", "VmRSS (MB)", "nabu serve memory")
    return _save(fig, out / "concurrent.png")
