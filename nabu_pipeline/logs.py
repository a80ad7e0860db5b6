"""Logging: loguru with secrets redacted from every line, and quiet third-party chatter."""

from __future__ import annotations

import logging
import os
import re
import sys
from urllib.parse import quote, quote_plus, unquote_plus

from loguru import logger

SECRET_ENV = ("OPENAI_API_KEY", "NABU_AUTH_TOKEN", "NABU_LLM_API_KEY")
SECRET_PARAMS = frozenset({"token", "api_key", "apikey", "key", "access_token", "password"})
# name=value as in a query string; the name may be percent-encoded (`tok%65n=`), which the
# server decodes. The value stops at a closing bracket so the redaction never eats the
# sentence around it.
_PARAM = re.compile(r"(?P<name>[A-Za-z0-9_.~+%\-]+)=(?P<value>[^&\s\"'()\[\]<>]+)")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=\-]+")
# Control characters (a newline above all) would let text a client chose forge a log line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _secret_forms(secret: str) -> set[str]:
    """A secret as it may appear in a URL: plain, percent-encoded (either hex case)."""
    encoded = {quote(secret, safe=""), quote_plus(secret, safe="")}
    every_byte = "".join(f"%{b:02X}" for b in secret.encode())
    return {secret, *encoded, every_byte, every_byte.lower()}


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """Remove secret values, `?token=` style query parameters and bearer tokens.

    Query parameters are judged by their decoded name and value, so an encoded
    name (`tok%65n=`) or an encoded token never slips through.
    """
    if secrets is None:
        secrets = tuple(v for k in SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 4)
    for secret in secrets:
        for form in sorted(_secret_forms(secret), key=len, reverse=True):
            text = text.replace(form, "***")

    def param(m: re.Match) -> str:
        name, value = unquote_plus(m["name"]).lower(), unquote_plus(m["value"])
        if m["value"] == "...":  # a placeholder in Nabu's own advice ("pass ?token=...")
            return m[0]
        if name in SECRET_PARAMS or name.endswith("token") or any(s in value for s in secrets):
            return f"{m['name']}=***"
        return m[0]

    text = _PARAM.sub(param, text)
    return _BEARER.sub(r"\1***", text)


def escape_controls(text: str) -> str:
    """One log record, one line: newlines and other control characters shown escaped."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def _patch(record) -> None:
    record["message"] = escape_controls(redact(record["message"]))


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
