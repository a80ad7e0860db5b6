"""Nabu: a streaming voice assistant on pipecat (see docs/ARCHITECTURE.md)."""

import os

# Nabu never downloads models at run time; make the Hugging Face hub refuse to try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
