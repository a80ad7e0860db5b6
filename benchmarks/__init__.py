"""Nabu's benchmarks: latency of three designs side by side, and STT accuracy per model."""
