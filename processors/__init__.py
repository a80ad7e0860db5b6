"""Nabu's pipeline stages: one pipecat FrameProcessor (or service subclass) per file."""
