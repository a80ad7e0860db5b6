"""Alerts to Warren's family: delivered until a receiver acknowledges, whatever the session does.

A call for help that does not get through is worse than none, because Warren
believes someone is coming. So every alert goes to every configured channel
(HTTP webhooks, a Home Assistant notify service), each retried with growing
backoff until it answers 2xx. Delivery tasks belong to this process-wide
service, not to a pipeline: a phone that loses its connection right after
"help" cancels its session, never the alert.

The service only reports; what Warren hears (including "I couldn't reach Mary")
is the caller's job, through `Alert.delivered` and `Alert.all_failed`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from loguru import logger

from nabu_pipeline.config import SafetyConfig

HA_NOTIFY_PATH = "/api/services/notify/{service}"


@dataclass
class Alert:
    """One alert and what became of it on each channel."""

    kind: str
    """help, help-unanswered, reminder-missed, ..."""
    message: str
    """What the family reads: plain words."""
    said: str = ""
    """Warren's own words, as transcribed (empty when he said nothing)."""
    session: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    at: float = field(default_factory=time.time)
    channels: dict[str, str] = field(default_factory=dict)
    """Channel name -> pending | delivered | failed: reason."""
    attempts: dict[str, int] = field(default_factory=dict)
    delivered_at: float | None = None
    """Wall-clock time the first channel acknowledged."""
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when any channel has acknowledged."""
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when every channel has acknowledged or been given up on."""

    @property
    def all_failed(self) -> bool:
        return bool(self.channels) and all(s.startswith("failed") for s in self.channels.values())

    def payload(self) -> dict:
        """The JSON a webhook receives."""
        return {
            "id": self.id,
            "kind": self.kind,
            "message": self.message,
            "said": self.said,
            "session": self.session,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(),
        }


class Channel:
    """Somewhere an alert can be delivered; `send` raises unless the receiver acknowledged."""

    name: str = "channel"

    async def send(self, http: aiohttp.ClientSession, alert: Alert, timeout_s: float) -> None:
        raise NotImplementedError

    def redact(self, text: str) -> str:
        """An error message safe to log (a URL may carry a secret)."""
        return text


class WebhookChannel(Channel):
    """POST the alert as JSON; any 2xx is the receiver's acknowledgement."""

    def __init__(self, url: str):
        self.url = url
        # The URL may carry a secret (a token in its path or query): name only its host.
        parts = url.split("/")
        self.name = f"webhook {parts[2] if len(parts) > 2 else '?'}"

    def redact(self, text: str) -> str:
        return text.replace(self.url, self.name)

    async def send(self, http: aiohttp.ClientSession, alert: Alert, timeout_s: float) -> None:
        async with http.post(
            self.url, json=alert.payload(), timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"HTTP {resp.status}")


class HomeAssistantNotifyChannel(Channel):
    """Home Assistant's REST API: POST /api/services/notify/<service> {title, message}.

    Self-contained on purpose (one request, bearer token), so it needs nothing else
    of Nabu's Home Assistant client.
    """

    def __init__(self, base_url: str, token: str, service: str):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.service = service.removeprefix("notify.")
        self.name = f"home assistant notify.{self.service}"

    async def send(self, http: aiohttp.ClientSession, alert: Alert, timeout_s: float) -> None:
        url = self.base_url + HA_NOTIFY_PATH.format(service=self.service)
        body = {"title": f"Nabu: {alert.kind.replace('-', ' ')}", "message": alert.message}
        headers = {"Authorization": f"Bearer {self._token}"}
        async with http.post(
            url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"HTTP {resp.status}")


def channels_for(safety: SafetyConfig, environ: dict | os._Environ = os.environ) -> list[Channel]:
    """Every channel this config and environment name."""
    channels: list[Channel] = [WebhookChannel(url) for url in safety.webhooks(environ)]
    if safety.home_assistant_notify:
        url, token = environ.get("NABU_HA_URL", ""), environ.get("NABU_HA_TOKEN", "")
        if url and token:
            channels.append(HomeAssistantNotifyChannel(url, token, safety.home_assistant_notify))
        else:
            logger.warning(
                f"Alerts: safety.home_assistant_notify is {safety.home_assistant_notify!r} but "
                "NABU_HA_URL and NABU_HA_TOKEN are not both set; that channel is off"
            )
    return channels


class AlertService:
    """Sends alerts on every channel until each acknowledges; one per process."""

    def __init__(
        self,
        safety: SafetyConfig,
        channels: list[Channel] | None = None,
        *,
        sleep: Callable[[float], object] = asyncio.sleep,
    ):
        self.safety = safety
        self.channels = channels_for(safety) if channels is None else channels
        self._sleep = sleep
        self._tasks: set[asyncio.Task] = set()
        self._http: aiohttp.ClientSession | None = None
        self.sent: list[Alert] = []

    @property
    def configured(self) -> bool:
        return bool(self.channels)

    def describe(self) -> str:
        if not self.channels:
            return "Alerts: no channel configured (safety.alert_webhooks, NABU_ALERT_WEBHOOK_URL)"
        return "Alerts: " + ", ".join(c.name for c in self.channels)

    def raise_alert(self, kind: str, message: str, *, said: str = "", session: str = "") -> Alert:
        """Start delivering `message` everywhere; returns at once."""
        alert = Alert(kind=kind, message=message, said=said, session=session)
        self.sent.append(alert)
        if not self.channels:
            logger.error(f"Alert {alert.id} ({kind}): NO CHANNEL CONFIGURED; nobody is told")
            alert.settled.set()
            return alert
        logger.warning(f"Alert {alert.id} ({kind}): sending to {len(self.channels)} channel(s)")
        for channel in self.channels:
            alert.channels[channel.name] = "pending"
            task = asyncio.create_task(self._deliver(channel, alert), name=f"alert-{alert.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return alert

    async def _deliver(self, channel: Channel, alert: Alert) -> None:
        safety = self.safety
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        started = time.monotonic()
        delay = safety.retry_base_delay_s
        while True:
            alert.attempts[channel.name] = alert.attempts.get(channel.name, 0) + 1
            try:
                await channel.send(self._http, alert, safety.request_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                reason = channel.redact(str(e) or type(e).__name__)
                if time.monotonic() - started >= safety.retry_for_s:
                    alert.channels[channel.name] = f"failed: {reason}"
                    logger.error(f"Alert {alert.id}: gave up on {channel.name} ({reason})")
                    break
                wait = min(delay, safety.retry_max_delay_s) * random.uniform(0.75, 1.0)
                logger.warning(
                    f"Alert {alert.id}: {channel.name} failed ({reason}, try "
                    f"{alert.attempts[channel.name]}); again in {wait:.1f}s"
                )
                alert.channels[channel.name] = f"retrying: {reason}"
                await self._sleep(wait)
                delay *= 2
                continue
            alert.channels[channel.name] = "delivered"
            if alert.delivered_at is None:
                alert.delivered_at = time.time()
            alert.delivered.set()
            logger.info(
                f"Alert {alert.id}: delivered to {channel.name} "
                f"{time.time() - alert.at:.2f}s after it was raised "
                f"(try {alert.attempts[channel.name]})"
            )
            break
        if all(s == "delivered" or s.startswith("failed") for s in alert.channels.values()):
            alert.settled.set()

    async def wait_settled(self, timeout_s: float) -> bool:
        """Wait for every alert in flight (e.g. before `nabu talk` exits); False on timeout."""
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return True
        done, _ = await asyncio.wait(pending, timeout=timeout_s)
        return len(done) == len(pending)

    async def close(self) -> None:
        """Stop delivering (process exit) and free the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
