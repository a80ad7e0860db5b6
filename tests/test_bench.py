"""`nabu bench` on a two-clip manifest: every key docs/RESULTS.md names, report, plots."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.clips import DEFAULT_MANIFEST, repo_path
from benchmarks.degrade import TARGET, VARIANTS

from .conftest import CLIPS, ROOT
from .helpers import nabu

pytestmark = pytest.mark.slow


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "two.tsv"
    path.write_text(
        "file\tduration_s\ttranscript\n"
        f"{CLIPS / 'goforward.wav'}\t2.79\tgo forward ten meters\n"
        f"{CLIPS / 'sb_spk2_snt2.wav'}\t1.76\tWhat joy there is in living.\n"
    )
    return path


def _bench(*args: str) -> subprocess.CompletedProcess:
    return nabu("bench", *args, timeout=900)


def test_latency_suite_writes_results_report_and_plots(tmp_path, manifest):
    out = tmp_path / "bench"
    proc = _bench("--manifest", str(manifest), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    for key in (
        "voice_to_voice_s",
        "sequential_voice_to_voice_s",
        "pipecat_default_voice_to_voice_s",
    ):
        assert r[key]["n"] == 2 and r[key]["p50"] > 0 and r[key]["p95"] >= r[key]["p50"], r[key]
    assert r["speedup_vs_sequential"] > 0 and r["speedup_vs_pipecat_default"] > 0
    assert not Path(r["manifest"]).is_absolute() and r["manifest"].endswith("two.tsv")
    assert set(r["stages"]) == {
        "turn_end_s",
        "vad_stop_s",
        "stt_s",
        "whisper_s",
        "llm_ttft_s",
        "first_sentence_s",
        "tts_first_audio_s",
    }
    assert all(s["p50"] is not None for s in r["stages"].values()), r["stages"]
    assert 0 < r["cold_start_s"] < 60
    assert r["long_reply_80_tokens"]["voice_to_voice_s"]["n"] == 2
    assert {"voice_to_voice_p50_s", "cold_start_s"} <= set(r["budgets"])
    # Nabu heard the clips.
    heard = " ".join(t["transcript"].lower() for t in r["turns"]["nabu"])
    assert "forward" in heard and "joy" in heard, heard
    # The floor: each stage alone, per clip, beside the same stage in the pipeline.
    floor = r["floor"]
    assert [c["clip"] for c in floor["clips"]] == ["goforward", "sb_spk2_snt2"]
    for clip in floor["clips"]:
        assert clip["stt_s"] > 0 and clip["llm_ttft_s"] > 0 and clip["tts_first_audio_s"] > 0
        assert clip["total_s"] > clip["stt_s"] + clip["vad_stop_s"]
    assert floor["stages"]["stt_s"]["in_pipeline_p50"] == r["stages"]["stt_s"]["p50"]
    totals = sorted(c["total_s"] for c in floor["clips"])
    assert r["floor_voice_to_voice_s"]["n"] == 2, r["floor_voice_to_voice_s"]
    assert totals[0] <= r["floor_voice_to_voice_s"]["p50"] <= totals[1]
    report = (out / "report.md").read_text()
    assert "Budgets" in report and "sequential" in report and "The floor" in report
    assert (out / "stages.png").stat().st_size > 5000 and (
        out / "v2v_cdf.png"
    ).stat().st_size > 5000


def test_accuracy_suite_reports_wer_and_rtf_per_model(tmp_path, manifest):
    out = tmp_path / "acc"
    proc = _bench("--suite", "accuracy", "--manifest", str(manifest), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert isinstance(r["wer"], float) and isinstance(r["rtf"], float)
    assert r["wer"] < 0.2 and 0 < r["rtf"] < 2
    # The models, then the configured one (base, beam 5) decoded greedily and behind a
    # spectral filter (where noisereduce is installed).
    assert {"tiny.en", "base", "base beam 1"} <= set(r["per_model"])
    assert set(r["per_model"]) <= {"tiny.en", "base", "base beam 1", "base + spectral filter"}
    for m in r["per_model"].values():
        assert {"wer", "rtf", "degraded_wer"} <= set(m)
        assert set(m["variants"]) == set(VARIANTS)
        assert m["degraded_wer"] == m["variants"][TARGET]["wer"]
    assert (out / "accuracy.png").exists()


def test_bad_manifest_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\ttext\nx.wav\thello\n")
    proc = _bench("--manifest", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "missing column" in proc.stderr and "Traceback" not in proc.stderr


def test_benchmarks_load_only_when_nabu_bench_runs():
    """`nabu talk/serve/mic` start without importing the benchmark suites (or their plots)."""
    code = (
        "import sys, nabu_pipeline.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('benchmarks', 'matplotlib')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_reports_name_files_relative_to_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # wherever `nabu bench` runs from
    assert repo_path(DEFAULT_MANIFEST) == "benchmarks/clips/manifest.tsv"
    assert repo_path(ROOT / "benchmarks" / ".." / "README.md") == "README.md"
    assert repo_path(ROOT.parent / "speech" / "m.tsv") == "../speech/m.tsv"
    committed = (ROOT / "benchmarks" / "reports").rglob("results.json")
    for results in committed:
        manifest = json.loads(results.read_text()).get("manifest")
        assert manifest is None or not Path(manifest).is_absolute(), (results, manifest)


def test_concurrent_suite_talks_to_a_real_server_at_once(tmp_path, manifest):
    """Two conversations at once through a real `nabu serve` subprocess and real WebSocket
    clients: every turn answered, voice-to-voice measured, the server's memory read."""
    fast = tmp_path / "fast.yaml"  # shorter replies keep the test short; timings are not tested
    fast.write_text("stt:\n  model: tiny.en\ntts:\n  length_scale: 0.5\n")
    out = tmp_path / "concurrent"
    proc = _bench(
        "--suite",
        "concurrent",
        "--manifest",
        str(manifest),
        "--sessions",
        "2",
        "--conversations",
        "1",
        "--config",
        str(fast),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    turns = r["turns"]
    by_phase = {p: [t for t in turns if t["phase"] == p] for p in ("single", "concurrent")}
    assert len(by_phase["single"]) == 2 and len(by_phase["concurrent"]) == 4, turns
    # The two conversations at once start from different clips.
    firsts = {t["session"]: t["clip"] for t in by_phase["concurrent"] if t["index"] == 0}
    assert firsts == {0: "goforward", 1: "sb_spk2_snt2"}, firsts
    for t in turns:
        # replied: a reply came within the suite's own limit (REPLY_WITHIN_S); no clock here.
        assert t["replied"] and t["finished"] and not t["error"], t
        assert t["voice_to_voice_s"] > 0, t
    assert r["failures"] == 0
    for phase in ("single", "concurrent"):
        assert r[phase]["voice_to_voice_s"]["n"] == len(by_phase[phase]), r[phase]
        assert r[phase]["no_reply"] == 0
    assert r["concurrent_over_single_p95"] > 0
    memory = r["rss_mb"]
    for key in ("after_warm_up", "after_conversations", "peak_concurrent", "peak", "high_water"):
        assert memory[key] > 0, memory
    assert memory["peak"] >= memory["peak_concurrent"], memory
    assert {p for _, p, _ in r["rss_samples"]} >= {"single", "concurrent"}
    assert set(r["goals"]) == {"concurrent_over_single_p95", "server_rss_peak_mb"}
    report = (out / "report.md").read_text()
    assert "# Nabu concurrent conversations benchmark" in report
    assert "## Server memory" in report and "2 at once" in report
    assert (out / "concurrent.png").stat().st_size > 5000
