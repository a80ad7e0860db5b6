"""`nabu bench`: run a suite, write DIR/results.json, DIR/report.md and PNG plots."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from benchmarks import report
from benchmarks.clips import DEFAULT_MANIFEST, load_manifest, repo_path
from benchmarks.floor import measure_floor
from benchmarks.floor import summary as floor_summary
from benchmarks.latency import (
    EIGHTY_TOKENS,
    THREE_SENTENCES,
    measure_cold_start,
    run_conversation,
    run_sequential,
    summarise,
    turn_dicts,
)
from nabu_pipeline.config import NabuConfig, load_config
from nabu_pipeline.latency import STAGES
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

# gpt-4o-mini-like pace for the built-in LLM (docs/RESULTS.md, "Latency").
DEFAULT_TTFT_S = 0.35
DEFAULT_TOKENS_PER_S = 60.0
ACCURACY_MODELS = ("tiny.en", "base")


def _machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def llm_endpoint(args) -> tuple[ScriptedLLMServer | None, str]:
    """The LLM a suite talks to: `--llm-base-url`, or the built-in server at gpt-4o-mini's
    pace (started here; the caller stops it)."""
    if args.llm_base_url is not None:
        return None, args.llm_base_url
    server = ScriptedLLMServer(
        Script(reply=THREE_SENTENCES, ttft_s=DEFAULT_TTFT_S, tokens_per_s=DEFAULT_TOKENS_PER_S)
    ).start()
    return server, server.url


def run_latency(args, config: NabuConfig) -> dict:
    clips = load_manifest(args.manifest)
    repeat = max(1, args.repeat)
    server, url = llm_endpoint(args)
    scripted = server is not None
    config = config.with_changes(llm={"base_url": url, "provider": "openai"})
    passes = 5 if scripted else 3
    progress = tqdm(total=len(clips) * repeat * passes, desc="latency", unit="turn")
    measures = {"nabu": [], "pipecat_default": [], "sequential": []}
    long_reply = {"nabu": [], "sequential": []}
    try:
        cold = measure_cold_start(args.config)
        for r in range(repeat):
            if server:
                server.script.reply = THREE_SENTENCES
            measures["nabu"] += asyncio.run(
                run_conversation("nabu", report.BUILDERS["nabu"], config, clips, r, progress)
            )
            measures["pipecat_default"] += asyncio.run(
                run_conversation(
                    "pipecat_default",
                    report.BUILDERS["pipecat_default"],
                    config,
                    clips,
                    r,
                    progress,
                )
            )
            measures["sequential"] += run_sequential(config, clips, r, progress)
            if server:
                server.script.reply = EIGHTY_TOKENS
                long_reply["nabu"] += asyncio.run(
                    run_conversation("nabu", report.BUILDERS["nabu"], config, clips, r, progress)
                )
                long_reply["sequential"] += run_sequential(config, clips, r, progress)
        if server:
            server.script.reply = THREE_SENTENCES
        floors = measure_floor(config, clips, url)
    finally:
        progress.close()
        if server:
            server.stop()

    def v2v(ms):
        return summarise([m.voice_to_voice_s for m in ms])

    nabu, default, seq = (v2v(measures[k]) for k in ("nabu", "pipecat_default", "sequential"))
    results = {
        "suite": "latency",
        "voice_to_voice_s": nabu,
        "sequential_voice_to_voice_s": seq,
        "pipecat_default_voice_to_voice_s": default,
        "speedup_vs_sequential": _ratio(seq["p50"], nabu["p50"]),
        "speedup_vs_pipecat_default": _ratio(default["p50"], nabu["p50"]),
        "stages": {
            s: {
                k: v
                for k, v in summarise([m.stages.get(s) for m in measures["nabu"]]).items()
                if k in ("p50", "p95")
            }
            for s in STAGES
            if s != "voice_to_voice_s"
        },
        "cold_start_s": round(sorted(cold)[len(cold) // 2], 3) if cold else None,
        "cold_start_runs_s": cold,
        "first_turn_voice_to_voice_s": summarise(
            [m.voice_to_voice_s for m in measures["nabu"] if m.index == 0]
        ),
        "warm_turn_voice_to_voice_s": summarise(
            [m.voice_to_voice_s for m in measures["nabu"] if m.index > 0]
        ),
        "early_replies": {k: sum(m.early_replies for m in v) for k, v in measures.items()},
        "llm": {
            "endpoint": "built-in scripted server" if scripted else url,
            "ttft_s": DEFAULT_TTFT_S if scripted else None,
            "tokens_per_s": DEFAULT_TOKENS_PER_S if scripted else None,
        },
        "manifest": repo_path(args.manifest or DEFAULT_MANIFEST),
        "clips": len(clips),
        "repeat": repeat,
        "machine": _machine(),
        "turns": {k: turn_dicts(v) for k, v in measures.items()},
    }
    if scripted:
        ln, ls = v2v(long_reply["nabu"]), v2v(long_reply["sequential"])
        results["long_reply_80_tokens"] = {
            "voice_to_voice_s": ln,
            "sequential_voice_to_voice_s": ls,
            "speedup_vs_sequential": _ratio(ls["p50"], ln["p50"]),
            "turns": {k: turn_dicts(v) for k, v in long_reply.items()},
        }
    results["floor"] = floor_summary(floors, results["stages"])
    results["floor_voice_to_voice_s"] = summarise([f.total_s for f in floors])
    results["floor"]["voice_to_voice_p50_s"] = nabu["p50"]
    results["floor"]["pause_hold_s"] = config.turn.pause_tolerance_s
    results["budgets"] = report.check_budgets(results, config.budgets)
    return results


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def decodings(config: NabuConfig) -> dict[str, tuple]:
    """The configured model decoded otherwise (issue 19 item 2): (STT config, prepare)."""
    from benchmarks.accuracy import spectral_filter

    stt = config.stt
    other_beam = 5 if stt.beam_size == 1 else 1
    rows = {
        f"{stt.model} beam {other_beam}": (stt.model_copy(update={"beam_size": other_beam}), None)
    }
    prepare = spectral_filter()
    if prepare is not None:
        rows[f"{stt.model} + spectral filter"] = (stt, prepare)
    return rows


def run_accuracy(args, config: NabuConfig) -> dict:
    from benchmarks.accuracy import evaluate, mean_over_seeds
    from benchmarks.degrade import NOISE_SEEDS, TARGET, VARIANTS, variant_sets

    clips = load_manifest(args.manifest)
    variants = variant_sets(clips)
    models = [config.stt.model, *[m for m in ACCURACY_MODELS if m != config.stt.model]]
    decoders = {
        name: (config.stt.model_copy(update={"model": name}), None) for name in models
    } | decodings(config)
    repeat = max(1, args.repeat)
    total = (1 + NOISE_SEEDS * len(VARIANTS)) * len(clips) * len(decoders) * repeat
    progress = tqdm(total=total, desc="accuracy")
    per_model = {}
    try:
        for name, (stt, prepare) in decoders.items():
            run = functools.partial(evaluate, stt, progress=progress, prepare=prepare)
            best = min((run(clips) for _ in range(repeat)), key=lambda r: r.rtf)
            rows, first_target = {}, None
            for variant, sets in variants.items():
                # Per seed, the fastest of the repeats (WER does not change between them).
                runs = [min((run(d) for _ in range(repeat)), key=lambda r: r.rtf) for d in sets]
                mean = mean_over_seeds(runs)
                rows[variant] = {
                    **mean,
                    "over_clean": round(mean["wer"] / best.wer, 2) if best.wer else None,
                }
                if variant == TARGET:
                    first_target = runs[0]
            target = rows[TARGET]
            per_model[name] = {
                "wer": best.wer,
                "rtf": best.rtf,
                "degraded_wer": target["wer"],
                "degraded_wer_per_seed": target["wer_per_seed"],
                "degraded_wer_spread": target["wer_spread"],
                "degraded_rtf": target["rtf"],
                "degraded_over_clean": target["over_clean"],
                "variants": rows,
                "clips": [asdict(c) for c in best.clips],
                "degraded_clips": [asdict(c) for c in first_target.clips],
            }
    finally:
        progress.close()
    configured = per_model[config.stt.model]
    return {
        "suite": "accuracy",
        "model": config.stt.model,
        "wer": configured["wer"],
        "rtf": configured["rtf"],
        "degraded_wer": configured["degraded_wer"],
        "degraded": f"{TARGET}: wideband 16 kHz, tempo 0.75x (sox), a little room reverberation "
        "(sox reverb), two other speakers talking at 10 dB SNR; each factor alone and the "
        "telephone-band proxy of the first round (stress) in `variants`; WER averaged over "
        f"{NOISE_SEEDS} noise seeds",
        "noise_seeds": NOISE_SEEDS,
        "per_model": per_model,
        "manifest": repo_path(args.manifest or DEFAULT_MANIFEST),
        "clips": len(clips),
        "machine": _machine(),
    }


def main(args) -> int:
    config = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.suite == "accuracy":
        results = run_accuracy(args, config)
    elif args.suite == "latency":
        results = run_latency(args, config)
    elif args.suite == "home":
        from benchmarks.home import run_home

        results = run_home(args, config)
    elif args.suite == "concurrent":
        from benchmarks.concurrent import run_concurrent

        results = run_concurrent(args, config)
    else:
        from benchmarks import hearing

        runner = {
            "paused": hearing.run_paused,
            "nospeech": hearing.run_nospeech,
            "vocabulary": hearing.run_vocabulary,
        }[args.suite]
        results = runner(args, config)
    results["elapsed_s"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plots = report.plots(results, out)
    (out / "report.md").write_text(report.markdown(results, plots))
    print(report.summary_table(results))
    print(f"Wrote {out / 'results.json'}, {out / 'report.md'} and {len(plots)} plot(s)")
    logger.info(f"bench finished in {results['elapsed_s']:.0f}s")
    return 0
