"""Warren's home as Home Assistant reports it: entities, names, aliases, areas and states.

Everything Nabu knows about the home comes from Home Assistant itself over its
documented APIs, so there is never a second list to keep in step: the WebSocket
API gives the states, the area and entity registries (friendly names, aliases,
areas) and a `state_changed` subscription that keeps the states current without
polling; actions go through REST `POST /api/services/<domain>/<service>`.

Nabu must start and talk normally without a home: the connection runs in the
background, reconnects with a backoff, and every failure becomes a
`HomeAssistantError` whose `spoken` sentence is what Warren hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from loguru import logger

from nabu_pipeline.config import HomeAssistantConfig

# Domains Nabu acts on or reports; helpers (input_boolean, ...) and the rest stay hidden.
DOMAINS = frozenset(
    {"light", "switch", "fan", "cover", "lock", "climate", "sensor", "alarm_control_panel"}
)
RECONNECT_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class HomeAssistantError(Exception):
    """Home Assistant could not do what was asked; `spoken` says so to Warren in one sentence."""

    def __init__(self, spoken: str, detail: str = ""):
        super().__init__(detail or spoken)
        self.spoken = spoken


UNREACHABLE = "I can't reach your home system right now."
SLOW = "Your home system isn't answering in time right now."
REFUSED = "Your home system refused my access key, so I can't control the house."


@dataclass(frozen=True)
class Entity:
    """One device as Warren names it."""

    entity_id: str
    name: str
    aliases: tuple[str, ...] = ()
    area: str = ""

    @property
    def domain(self) -> str:
        return self.entity_id.split(".", 1)[0]


@dataclass
class _Waiter:
    entity_id: str
    check: Callable[[dict], bool]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class HomeAssistant:
    """One connection to Home Assistant, shared by every session of the process."""

    def __init__(self, config: HomeAssistantConfig):
        self._config = config
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self.states: dict[str, dict] = {}
        self._areas: dict[str, str] = {}
        self._registry: dict[str, dict] = {}
        self._device_areas: dict[str, str] = {}
        self._exposed: dict[str, bool] = {}
        self._waiters: list[_Waiter] = []
        self._ready = asyncio.Event()
        self.connected = False
        self.refused = False
        self.listeners: list[Callable[[], None]] = []
        """Called when names or areas change (the phrase lists are rebuilt)."""

    @property
    def url(self) -> str:
        return self._config.url.rstrip("/")

    # ---- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._config.token}"}
            )
            self._task = asyncio.create_task(self._run(), name="home-assistant")

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once the first states and registries are in (False after `timeout_s`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self._ready.is_set()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._http:
            await self._http.close()
            self._http = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except HomeAssistantError as e:
                logger.warning(f"Home Assistant: {e}")
            except Exception as e:  # the home must never take Nabu down
                if self.connected or attempt == 0:
                    logger.warning(
                        f"Home Assistant at {self.url}: connection lost or refused "
                        f"({type(e).__name__}: {str(e)[:120]}); retrying"
                    )
            self.connected = False
            delay = RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)]
            attempt += 1
            await asyncio.sleep(delay * (10 if self.refused else 1))

    async def _session(self) -> None:
        assert self._http is not None
        ws = await asyncio.wait_for(
            self._http.ws_connect(f"{self.url}/api/websocket", heartbeat=30),
            self._config.timeout_s,
        )
        async with ws:
            msg = await ws.receive_json(timeout=self._config.timeout_s)
            await ws.send_json({"type": "auth", "access_token": self._config.token})
            msg = await ws.receive_json(timeout=self._config.timeout_s)
            if msg.get("type") != "auth_ok":
                self.refused = True
                raise HomeAssistantError(REFUSED, "the access token was refused (auth_invalid)")
            self.refused = False
            ids = iter(range(1, 1 << 30))
            pending: dict[int, str] = {}

            async def send(kind: str, **body) -> None:
                i = next(ids)
                pending[i] = kind
                await ws.send_json({"id": i, "type": kind, **body})

            await send("subscribe_events", event_type="state_changed")
            for event in ("entity_registry_updated", "area_registry_updated"):
                await send("subscribe_events", event_type=event)
            await send("get_states")
            await self._request_registries(send)
            started = time.monotonic()
            async for raw in ws:
                if raw.type != aiohttp.WSMsgType.TEXT:
                    break
                msg = raw.json()
                if msg.get("type") == "event":
                    await self._on_event(msg["event"], send)
                elif msg.get("type") == "result":
                    kind = pending.pop(msg.get("id"), "")
                    self._on_result(kind, msg)
                    if kind == "config/entity_registry/list" and msg.get("success"):
                        # Aliases are only in the full entries.
                        await send(
                            "config/entity_registry/get_entries",
                            entity_ids=[e for e in self._registry if e.split(".")[0] in DOMAINS],
                        )
                    if not pending and not self._ready.is_set():
                        self.connected = True
                        self._ready.set()
                        logger.info(
                            f"Home Assistant: {len(self.entities())} devices in "
                            f"{len(self._areas)} areas ({time.monotonic() - started:.2f}s)"
                        )
                        self._notify()
                    elif not pending:
                        self.connected = True

    async def _request_registries(self, send) -> None:
        await send("config/area_registry/list")
        await send("config/entity_registry/list")
        await send("config/device_registry/list")
        await send("homeassistant/expose_entity/list")

    def _on_result(self, kind: str, msg: dict) -> None:
        if not msg.get("success"):
            if kind != "homeassistant/expose_entity/list":
                logger.warning(f"Home Assistant: {kind} failed: {msg.get('error')}")
            return
        result = msg.get("result")
        if kind == "get_states":
            self.states = {s["entity_id"]: s for s in result}
        elif kind == "config/area_registry/list":
            self._areas = {a["area_id"]: a["name"] for a in result}
        elif kind == "config/entity_registry/list":
            self._registry = {e["entity_id"]: e for e in result}
        elif kind == "config/entity_registry/get_entries":
            for entity_id, entry in result.items():
                if entry:
                    self._registry[entity_id] = entry
            if self._ready.is_set():
                self._notify()
        elif kind == "config/device_registry/list":
            self._device_areas = {d["id"]: d["area_id"] for d in result if d.get("area_id")}
        elif kind == "homeassistant/expose_entity/list":
            exposed = result.get("exposed_entities", {})
            self._exposed = {e: bool(v.get("conversation")) for e, v in exposed.items()}

    async def _on_event(self, event: dict, send) -> None:
        kind = event.get("event_type")
        if kind == "state_changed":
            data = event["data"]
            new = data.get("new_state")
            if new is None:
                self.states.pop(data["entity_id"], None)
            else:
                self.states[data["entity_id"]] = new
                for waiter in self._waiters:
                    if waiter.entity_id == data["entity_id"] and waiter.check(new):
                        waiter.done.set()
            if (data.get("old_state") or {}).get("attributes", {}).get("friendly_name") != (
                new or {}
            ).get("attributes", {}).get("friendly_name"):
                self._notify()
        elif kind in ("entity_registry_updated", "area_registry_updated"):
            await self._request_registries(send)

    def _notify(self) -> None:
        for listener in self.listeners:
            try:
                listener()
            except Exception as e:
                logger.warning(f"Home Assistant: listener failed: {e}")

    # ---- what the home holds ----------------------------------------------------------

    def area_of(self, entity_id: str) -> str:
        entry = self._registry.get(entity_id, {})
        area_id = entry.get("area_id") or self._device_areas.get(entry.get("device_id") or "")
        return self._areas.get(area_id or "", "")

    @property
    def areas(self) -> tuple[str, ...]:
        return tuple(sorted(self._areas.values()))

    def entities(self) -> list[Entity]:
        """Devices Warren may name: Nabu's domains, exposed to assistants, not hidden."""
        found = []
        for entity_id, state in self.states.items():
            domain = entity_id.split(".", 1)[0]
            if domain not in DOMAINS or self._exposed.get(entity_id) is False:
                continue
            entry = self._registry.get(entity_id, {})
            if entry.get("hidden_by") or entry.get("disabled_by"):
                continue
            attrs = state.get("attributes", {})
            if domain == "sensor" and attrs.get("device_class") != "temperature":
                continue
            name = entry.get("name") or attrs.get("friendly_name") or entity_id
            aliases = tuple(a for a in entry.get("aliases") or () if a)
            found.append(Entity(entity_id, name, aliases, self.area_of(entity_id)))
        return found

    def entity(self, entity_id: str) -> Entity | None:
        return next((e for e in self.entities() if e.entity_id == entity_id), None)

    # ---- acting and reading -----------------------------------------------------------

    async def call_service(self, domain: str, service: str, data: dict) -> None:
        """POST the service call; raises HomeAssistantError with Warren's sentence on failure."""
        await self._request("POST", f"/api/services/{domain}/{service}", json=data)

    async def fetch_state(self, entity_id: str) -> dict:
        """The state straight from Home Assistant (REST), for when the subscription is down."""
        state = await self._request("GET", f"/api/states/{entity_id}")
        self.states[entity_id] = state
        return state

    async def _request(self, method: str, path: str, json: dict | None = None):
        if self._http is None:
            raise HomeAssistantError(UNREACHABLE, "not started")
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        try:
            async with self._http.request(
                method, f"{self.url}{path}", json=json, timeout=timeout
            ) as response:
                if response.status == 401:
                    raise HomeAssistantError(REFUSED, f"{method} {path}: 401")
                if response.status >= 400:
                    body = (await response.text())[:200]
                    raise HomeAssistantError(
                        "Your home system couldn't do that.",
                        f"{method} {path}: {response.status} {body}",
                    )
                return await response.json()
        except TimeoutError:
            raise HomeAssistantError(SLOW, f"{method} {path}: no answer in time") from None
        except aiohttp.ClientError as e:
            raise HomeAssistantError(UNREACHABLE, f"{method} {path}: {e}") from None

    async def wait_for_state(
        self, entity_id: str, check: Callable[[dict], bool], timeout_s: float
    ) -> bool:
        """True once `entity_id`'s state passes `check` (a state_changed event or already)."""
        current = self.states.get(entity_id)
        if current is not None and check(current):
            return True
        waiter = _Waiter(entity_id, check)
        self._waiters.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.done.wait(), timeout_s)
        finally:
            self._waiters.remove(waiter)
        if waiter.done.is_set():
            return True
        # The subscription may be down: ask once more directly.
        with contextlib.suppress(HomeAssistantError):
            return check(await self.fetch_state(entity_id))
        return False
