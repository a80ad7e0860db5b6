"""Logging: loguru with secrets redacted from every line, and quiet third-party chatter."""

from __future__ import annotations

import logging
import os
import re
import sys

from loguru import logger

SECRET_ENV = ("OPENAI_API_KEY", "NABU_AUTH_TOKEN", "NABU_LLM_API_KEY")
_TOKEN_PARAM = re.compile(r"((?:token|api_key|key)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """Remove secret values, `?token=` style query parameters and bearer tokens."""
    if secrets is None:
        secrets = tuple(v for k in SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 4)
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _TOKEN_PARAM.sub(r"\1***", text)
    return _BEARER.sub(r"\1***", text)


def _patch(record) -> None:
    record["message"] = redact(record["message"])


def _not_banner(record) -> bool:
    """pipecat logs its version banner when first imported, on every `nabu` command."""
    return not (record["name"] == "pipecat" and record["function"] == "<module>")


def setup_logging(level: str | None = None) -> None:
    """One stderr sink; NABU_LOG_LEVEL (default INFO) sets the level."""
    level = (level or os.environ.get("NABU_LOG_LEVEL") or "INFO").upper()
    logger.remove()
    logger.configure(patcher=_patch)
    logger.add(
        sys.stderr,
        level=level,
        filter=_not_banner,
        format="<green>{time:HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | {message}",
        backtrace=False,
        diagnose=False,
    )


class _ToLoguru(logging.Handler):
    """Sends a stdlib logging record to loguru, so it is redacted like every other line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, f"{record.name}: {record.getMessage()}")


def route_stdlib_logging(*names: str) -> None:
    """Send these stdlib loggers (e.g. uvicorn's access log) through loguru's redaction.

    uvicorn logs each request's path with its query string, and browsers must
    pass the auth token as `?token=`; through loguru the patcher removes it.
    """
    for name in names:
        std = logging.getLogger(name)
        std.handlers = [_ToLoguru()]
        std.setLevel(logging.INFO)
        std.propagate = False
