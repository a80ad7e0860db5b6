"""Benchmark report: budgets pass/fail, markdown tables, and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.designs import build_nabu, build_pipecat_default
from nabu_pipeline.config import BudgetConfig

BUILDERS = {"nabu": build_nabu, "pipecat_default": build_pipecat_default}
DESIGN_LABELS = {
    "nabu": "Nabu (streaming)",
    "pipecat_default": "pipecat default",
    "sequential": "sequential (predecessor)",
}
# Critical path from end of speech to first audio, in order.
BAR_STAGES = (
    ("turn_end_s", "turn end (incl. STT)"),
    ("llm_ttft_s", "LLM first token"),
    ("first_sentence_s", "first sentence"),
    ("tts_first_audio_s", "TTS first audio"),
)


def check_budgets(results: dict, budgets: BudgetConfig) -> dict:
    v2v = results["voice_to_voice_s"]
    ratio = None
    if results.get("speedup_vs_pipecat_default"):
        ratio = round(1 / results["speedup_vs_pipecat_default"], 3)
    checks = {
        "voice_to_voice_p50_s": (v2v["p50"], budgets.voice_to_voice_p50_s, "<="),
        "voice_to_voice_p95_s": (v2v["p95"], budgets.voice_to_voice_p95_s, "<="),
        "speedup_vs_sequential": (
            results.get("speedup_vs_sequential"),
            budgets.speedup_vs_sequential_min,
            ">=",
        ),
        "ratio_vs_pipecat_default": (ratio, budgets.ratio_vs_pipecat_default_max, "<="),
        "cold_start_s": (results.get("cold_start_s"), budgets.cold_start_s, "<="),
    }
    out = {}
    for name, (value, limit, op) in checks.items():
        ok = value is not None and (value <= limit if op == "<=" else value >= limit)
        out[name] = {"value": value, "limit": limit, "op": op, "pass": ok}
    return out


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _table(columns: list[str], rows: list[list]) -> list[str]:
    """A Markdown table: the header, its rule, one line per row."""
    return [
        f"| {' | '.join(columns)} |",
        "|" + "---|" * len(columns),
        *(f"| {' | '.join(str(cell) for cell in row)} |" for row in rows),
    ]


def summary_table(results: dict) -> str:
    suite = results["suite"]
    if suite == "home":
        from benchmarks.home import summary_table as home_summary

        return home_summary(results)
    if suite == "concurrent":
        from benchmarks.concurrent import summary_table as concurrent_summary

        return concurrent_summary(results)
    if suite == "paused":

        def row(name: str, d: dict, n: int) -> list:
            return [
                name,
                f"{d['false_cutoffs']}/{n}",
                f"{d['false_cutoff_rate'] * 100:.0f} %",
                d.get("misheard_parts", "–"),
                d.get("unanswered", "–"),
                _fmt(d["voice_to_voice_s"]["p50"]),
                _fmt(d["voice_to_voice_s"]["p95"]),
            ]

        columns = ["design", "false cut-offs", "rate", "misheard parts", "unanswered"]
        columns += ["v2v p50 (s)", "v2v p95 (s)"]
        groups = results.get("groups") or {}
        lines = [f"{results['items']} items, {results['pauses']} pauses of 0.5-1.2 s", ""]
        if groups:
            lines[0] += " (" + ", ".join(f"{n} {g}" for g, n in groups.items()) + ")"
            rows = [
                row(f"{name}, {g}", d["groups"][g], n)
                for name, d in results["designs"].items()
                for g, n in groups.items()
                if g in d.get("groups", {})
            ]
        else:
            rows = [row(name, d, results["items"]) for name, d in results["designs"].items()]
        lines += _table(columns, rows)
    elif suite == "nospeech":
        rows = [
            [
                name,
                v["words_to_llm"],
                v["llm_requests"],
                v["raw_whisper_words"],
                f"{v['asked_to_repeat']}/{results['sounds']}",
                v.get("read_back", 0),
            ]
            for name, v in results["variants"].items()
        ]
        columns = ["variant", "words to the LLM", "LLM requests", "raw Whisper words"]
        spoke = "Nabu spoke (asked to repeat or read back)"
        lines = _table([*columns, spoke, "of which read back"], rows)
    elif suite == "vocabulary":
        rows = [
            [
                model,
                label,
                f"{r['term_hit_rate'] * 100:.0f} %",
                f"{r['wer'] * 100:.1f} %",
                f"{r['real_clips_wer'] * 100:.1f} %",
            ]
            for model, by in results["models"].items()
            for label, r in by.items()
        ]
        columns = ["model", "vocabulary", "term hits", "WER (vocab sentences)"]
        lines = _table([*columns, "WER (real clips)"], rows)
    elif suite == "accuracy":
        rows = [
            [
                name,
                f"{r['wer'] * 100:.1f} %",
                f"{r['degraded_wer'] * 100:.1f} %",
                _points(r.get("degraded_wer_spread")),
                _fmt(r["degraded_over_clean"]),
                f"{r['rtf']:.3f}",
                f"{r['degraded_rtf']:.3f}",
            ]
            for name, r in results["per_model"].items()
        ]
        columns = ["model", "WER clean", "WER degraded (mean of seeds)", "seeds' spread"]
        lines = _table([*columns, "degraded/clean", "RTF clean", "RTF degraded"], rows)
    else:
        rows = [
            [label, _fmt(results[key]["p50"]), _fmt(results[key]["p95"]), results[key]["n"]]
            for key, label in (
                ("voice_to_voice_s", DESIGN_LABELS["nabu"]),
                ("pipecat_default_voice_to_voice_s", DESIGN_LABELS["pipecat_default"]),
                ("sequential_voice_to_voice_s", DESIGN_LABELS["sequential"]),
            )
        ]
        lines = [
            *_table(["design", "v2v p50 (s)", "v2v p95 (s)", "n"], rows),
            "",
            f"speedup vs sequential: {_fmt(results['speedup_vs_sequential'])}x; "
            f"vs pipecat default: {_fmt(results['speedup_vs_pipecat_default'])}x; "
            f"cold start: {_fmt(results['cold_start_s'])} s",
        ]
    return "\n".join(lines)


def _points(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.1f} points"


def markdown(results: dict, plots: list[Path]) -> str:
    if results["suite"] == "home":
        from benchmarks.home import markdown as home_markdown

        return home_markdown(results)
    if results["suite"] == "concurrent":
        from benchmarks.concurrent import markdown as concurrent_markdown

        return concurrent_markdown(results, plots)
    if results["suite"] == "accuracy":
        return _accuracy_markdown(results, plots)
    if results["suite"] in ("paused", "nospeech", "vocabulary"):
        return _hearing_markdown(results, plots)
    r = results
    out = ["# Nabu latency benchmark", ""]
    out.append(
        f"{r['clips']} clips x {r['repeat']} repeat(s) from `{r['manifest']}`; LLM: "
        f"{r['llm']['endpoint']}"
        + (
            f" (first token {r['llm']['ttft_s']} s, {r['llm']['tokens_per_s']:.0f} tokens/s)"
            if r["llm"]["ttft_s"] is not None
            else ""
        )
        + f"; machine: {r['machine']['cpu_count']} CPUs. End of speech is measured on each clip "
        "with offline Silero VAD; voice-to-voice ends when the first reply audio leaves the "
        "output transport. Replies play 4x faster than real time (only their start is timed)."
    )
    out += ["", "## Voice to voice, three designs, same clips and models", "", summary_table(r), ""]
    out += ["## Budgets", "", "| budget | value | limit | result |", "|---|---|---|---|"]
    for name, b in r["budgets"].items():
        out.append(
            f"| {name} | {_fmt(b['value'])} | {b['op']} {b['limit']} | "
            f"{'pass' if b['pass'] else '**FAIL**'} |"
        )
    out += [
        "",
        "## Nabu per stage (seconds from its start; turn end and STT from end of speech)",
        "",
    ]
    out += ["| stage | p50 | p95 |", "|---|---|---|"]
    for stage, s in r["stages"].items():
        out.append(f"| {stage} | {_fmt(s['p50'])} | {_fmt(s['p95'])} |")
    out += [
        "",
        f"First turn after start-up: p50 {_fmt(r['first_turn_voice_to_voice_s']['p50'])} s; "
        f"warm turns: p50 {_fmt(r['warm_turn_voice_to_voice_s']['p50'])} s. "
        f"Cold start (process start -> ready to listen): {r['cold_start_runs_s']} s.",
        "",
        f"Replies that started before the speaker had finished (cut-offs): {r['early_replies']}.",
    ]
    if "floor" in r:
        out += ["", *_floor_markdown(r["floor"])]
    if "long_reply_80_tokens" in r:
        lr = r["long_reply_80_tokens"]
        out += [
            "",
            "## 80-token reply",
            "",
            f"Nabu p50 {_fmt(lr['voice_to_voice_s']['p50'])} s, sequential p50 "
            f"{_fmt(lr['sequential_voice_to_voice_s']['p50'])} s: "
            f"{_fmt(lr['speedup_vs_sequential'])}x.",
        ]
    out += [
        "",
        "## Per clip (Nabu)",
        "",
        "| clip | v2v | turn end | STT | LLM ttft | first sentence | TTS first audio | heard |",
    ]
    out.append("|---|---|---|---|---|---|---|---|")
    for t in r["turns"]["nabu"]:
        s = t["stages"]
        out.append(
            f"| {t['clip']} | {_fmt(t['voice_to_voice_s'])} | {_fmt(s.get('turn_end_s'))} | "
            f"{_fmt(s.get('stt_s'))} | {_fmt(s.get('llm_ttft_s'))} | "
            f"{_fmt(s.get('first_sentence_s'))} | {_fmt(s.get('tts_first_audio_s'))} | "
            f"{t['transcript'][:60]} |"
        )
    out += ["", "## Sequential design, how it is timed", ""]
    out.append(
        "Whole utterance -> Whisper -> non-streaming LLM -> Piper on the whole reply, one after "
        "another with Nabu's models; its end of utterance is 0.8 s after the end of speech (VAD "
        "stop 0.2 s + 0.6 s silence). Its `llm_ttft_s` column holds the whole LLM call and "
        "`tts_first_audio_s` the whole synthesis."
    )
    out += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    return "\n".join(out)


def _floor_markdown(f: dict) -> list[str]:
    out = [
        "## The floor: each stage alone against the same stage in the pipeline",
        "",
        "Per clip, after the pipeline runs: the same models and settings, one stage at a time "
        "on an otherwise idle machine (`benchmarks/floor.py`). STT alone includes the VAD stop, "
        "as the pipeline's STT is timed from the end of speech; whisper_s is the decode alone "
        "against VAD's stop -> transcript in the pipeline, and vad_stop_s in the pipeline is "
        "when VAD's stop was seen (its silence and its lag).",
        "",
        "| stage | alone p50 (s) | in the pipeline p50 (s) | ratio |",
        "|---|---|---|---|",
    ]
    for stage, row in f["stages"].items():
        out.append(
            f"| {stage} | {_fmt(row['alone_p50'])} | {_fmt(row['in_pipeline_p50'])} | "
            f"{_fmt(row['ratio'])} |"
        )
    v2v, floor = f.get("voice_to_voice_p50_s"), f["total_p50_s"]
    over = round(v2v - floor, 3) if v2v is not None and floor is not None else None
    out += [
        "",
        f"Floor (the stages' sum) p50 {_fmt(floor)} s; Nabu's voice-to-voice p50 {_fmt(v2v)} s: "
        f"{_fmt(over)} s above it. Nabu's reply also waits for {f['pause_hold_s']} s of silence "
        "after his speech (the pause hold), which runs beside these stages.",
    ]
    return out


def _accuracy_markdown(r: dict, plots: list[Path]) -> str:
    out = ["# Nabu accuracy benchmark", ""]
    out.append(
        f"{r['clips']} clips from `{r['manifest']}`. WER after Whisper's English normaliser "
        '(numbers, punctuation, case; digit runs joined, so "five five" = "5 5"), as a '
        "fraction of reference words; RTF = decoding time / "
        f"audio time on {r['machine']['cpu_count']} CPUs, decoding as Nabu does (its beam "
        "size, its prompt; the configured model is also shown with the other beam size and "
        "behind a spectral noise filter, where noisereduce is installed). "
        f"Degraded copy: {r['degraded']}. These are clear read recordings made worse: proxies "
        "for slurred speech, not measurements of it."
    )
    out += ["", summary_table(r)]
    names = list(r["per_model"])
    if all("variants" in r["per_model"][n] for n in names):
        out += [
            "",
            "## Each factor (WER, mean of seeds; x clean)",
            "",
            "| variant | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for variant in r["per_model"][names[0]]["variants"]:
            cells = []
            for n in names:
                v = r["per_model"][n]["variants"][variant]
                cells.append(f"{v['wer'] * 100:.1f} % ({_fmt(v['over_clean'])}x)")
            out.append(f"| {variant} | " + " | ".join(cells) + " |")
    out += ["", "## Per clip", ""]
    out.append("| clip | reference | " + " | ".join(names) + " |")
    out.append("|---|---|" + "---|" * len(names))
    first = r["per_model"][names[0]]["clips"]
    for i, c in enumerate(first):
        hyps = [r["per_model"][n]["clips"][i] for n in names]
        out.append(
            f"| {c['clip']} | {c['reference']} | "
            + " | ".join(f"{h['hypothesis']} ({h['wer'] * 100:.0f} %)" for h in hyps)
            + " |"
        )
    out += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    return "\n".join(out)


def _hearing_markdown(r: dict, plots: list[Path]) -> str:
    titles = {
        "paused": "Paused speech: does a sentence with pauses stay one turn?",
        "nospeech": "No speech: what reaches the LLM from noise, hum, music and backwards speech",
        "vocabulary": "Warren's vocabulary as Whisper's initial prompt",
    }
    out = [f"# {titles[r['suite']]}", "", summary_table(r), ""]
    if r["suite"] == "paused":
        out.append(
            "Turn-taking and recognition are scored apart. A false cut-off is a reply that "
            "starts before the speaker has finished, or the reply to an LLM request sent before "
            "Whisper's last transcript of the sentence (segments are transcribed in order, so "
            "that request cannot hold the last stretch, misheard or not: the first stretches "
            "reached the LLM alone). A misheard part is a stretch between pauses with "
            "under half its words in the answered request of a turn that was not cut (Whisper's "
            "doing, not turn-taking's); coverage is the share of all words. Speculative requests "
            "cancelled unheard are allowed. The recordings are clear read speech with silences "
            "inserted: a proxy for Warren's pauses."
        )
        out.append(
            "\nThe questions are Piper's voice slowed to 1.35x, whole or with a pause after "
            "words that can pass for a question of their own (\"What time? ... is my doctor's "
            'appointment"): whole ones show what the shorter hold for a finished question '
            "saves, paused ones whether he is still left to finish."
        )
        columns = ["clip", "pauses (s)", "cut off", "all parts heard", "coverage", "v2v"]
        for name, d in r["designs"].items():
            rows = [
                [
                    row["clip"],
                    row["pauses_s"],
                    "**yes**" if row["cut_off"] else "no",
                    "yes" if row["all_parts_heard"] else "**no**",
                    f"{row['coverage']:.2f}",
                    _fmt(row["voice_to_voice_s"]),
                    row["llm_requests"],
                ]
                for row in d["rows"]
            ]
            out += ["", f"## {name}", "", *_table([*columns, "requests"], rows)]
    elif r["suite"] == "nospeech":
        columns = ["sound", "raw Whisper", "words to LLM", "Nabu said", "Nabu spoke (s)"]
        for name, v in r["variants"].items():
            rows = [
                [
                    row["sound"],
                    row["whisper_raw"] or "–",
                    row["words_to_llm"],
                    row.get("nabu_said") or "–",
                    f"{row['nabu_spoke_s']:.1f}",
                ]
                for row in v["rows"]
            ]
            out += ["", f"## {name}", "", *_table(columns, rows)]
    else:
        for model, by in r["models"].items():
            labels = list(by)  # without, with (the typed list), known (from what Nabu knows)
            out += [
                "",
                f"## {model}",
                "",
                "| said | voice | " + " | ".join(labels) + " |",
                "|---|---|" + "---|" * len(labels),
            ]
            for examples in zip(*(by[label]["examples"] for label in labels), strict=True):
                heard = " | ".join(e["heard"] for e in examples)
                out.append(f"| {examples[0]['said']} | {examples[0]['voice']} | {heard} |")
    out += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    return "\n".join(out)


def plots(results: dict, out: Path) -> list[Path]:
    if results["suite"] in ("nospeech", "vocabulary", "home"):
        return []
    if results["suite"] == "paused":
        return [_paused_plot(results, out)]
    if results["suite"] == "concurrent":
        from benchmarks.concurrent import plot as concurrent_plot

        return [concurrent_plot(results, out)]
    if results["suite"] == "accuracy":
        return [_accuracy_plot(results, out)]
    return [_stage_bars(results, out), _v2v_cdf(results, out)]


def _stage_bars(results: dict, out: Path) -> Path:
    turns = results["turns"]["nabu"]
    fig, ax = plt.subplots(figsize=(max(8, len(turns) * 0.45), 5))
    labels = [f"{t['clip']}#{t['repeat']}" for t in turns]
    bottoms = [0.0] * len(turns)
    for stage, label in BAR_STAGES:
        vals = [t["stages"].get(stage) or 0.0 for t in turns]
        ax.bar(labels, vals, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    rest = [max((t["voice_to_voice_s"] or 0) - b, 0) for t, b in zip(turns, bottoms, strict=True)]
    ax.bar(labels, rest, bottom=bottoms, label="output / other", color="lightgrey")
    stt = [t["stages"].get("stt_s") for t in turns]
    ax.scatter(
        labels,
        [s if s is not None else float("nan") for s in stt],
        marker="_",
        s=200,
        color="black",
        label="transcript ready",
        zorder=3,
    )
    ax.axhline(
        results["budgets"]["voice_to_voice_p50_s"]["limit"],
        ls="--",
        color="red",
        label="p50 budget",
    )
    ax.set_ylabel("seconds after end of speech")
    ax.set_title("Nabu: where each turn's voice-to-voice time goes")
    ax.tick_params(axis="x", rotation=75, labelsize=7)
    ax.legend(fontsize=8)
    return _save(fig, out / "stages.png")


def _v2v_cdf(results: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for design, label in DESIGN_LABELS.items():
        vals = sorted(
            t["voice_to_voice_s"]
            for t in results["turns"][design]
            if t["voice_to_voice_s"] is not None
        )
        if vals:
            ax.step(
                vals, [(i + 1) / len(vals) for i in range(len(vals))], where="post", label=label
            )
    ax.axvline(results["budgets"]["voice_to_voice_p50_s"]["limit"], ls="--", color="red", lw=1)
    ax.legend()
    _axes(ax, "voice-to-voice (s)", "fraction of turns", "Voice-to-voice CDF, three designs")
    return _save(fig, out / "v2v_cdf.png")


def _accuracy_plot(results: dict, out: Path) -> Path:
    points = {name: (r["rtf"], r["wer"] * 100) for name, r in results["per_model"].items()}
    return _labelled_points(
        points,
        ("real-time factor (lower is faster)", "WER (%)", "STT accuracy vs speed"),
        out / "accuracy.png",
    )


def _paused_plot(results: dict, out: Path) -> Path:
    points = {
        name: (d["voice_to_voice_s"]["p50"], d["false_cutoff_rate"] * 100)
        for name, d in results["designs"].items()
        if d["voice_to_voice_s"]["p50"] is not None
    }
    return _labelled_points(
        points,
        ("voice-to-voice p50 (s)", "false cut-off rate (%)", "Paused speech: cut-offs vs speed"),
        out / "paused.png",
        fontsize=8,
    )


def _labelled_points(
    points: dict[str, tuple[float, float]], labels: tuple[str, str, str], path: Path, fontsize=10
) -> Path:
    """One named dot per design or model (x, y), with axis labels and a title."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in points.items():
        ax.scatter(x, y, s=80)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=fontsize)
    _axes(ax, *labels)
    return _save(fig, path)


def _axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
