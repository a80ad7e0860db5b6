"""A real Home Assistant core for the tests: installed (cached), started, onboarded.

`HomeAssistantCore` runs `hass -c DIR --skip-pip` from its own virtualenv (made by
install.sh) with the deterministic test home in configuration.yaml, onboards it with
no person (user -> auth code -> token -> long-lived token over the WebSocket API),
and puts the devices in areas with aliases through the WebSocket registries, as a
person would in the UI. Synchronous on purpose: fixtures stay off the tests' loops.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

HERE = Path(__file__).resolve().parent
HA_VERSION = "2024.3.3"
CACHE = Path(os.environ.get("NABU_TEST_HA_DIR") or Path.home() / ".cache" / "nabu-test-ha")
VENV = CACHE / f"venv-{HA_VERSION}"
START_TIMEOUT_S = 90.0

# Where each device is and what else Warren calls it.
AREAS = {
    "Kitchen": {"light.kitchen_light": ["Kitchen Lamp"], "switch.kitchen_speaker": ["Radio"]},
    "Living Room": {
        "light.living_room_lamp": [],
        "climate.heating": ["Thermostat", "Heater"],
        "sensor.living_room_temperature": [],
    },
    "Bedroom": {"light.bedroom_light": []},
    "Hallway": {"lock.front_door": ["Front Door Lock"], "alarm_control_panel.house_alarm": []},
    "Garage": {"cover.garage_door": ["Garage"]},
}


def ensure_installed() -> Path:
    """The Home Assistant venv, installed by install.sh on first use (minutes, then cached)."""
    if not (VENV / ".nabu-installed").is_file():
        subprocess.run(["bash", str(HERE / "install.sh")], check=True, timeout=1800)
    return VENV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HomeAssistantCore:
    def __init__(self, workdir: Path):
        self.venv = ensure_installed()
        self.config_dir = workdir / "ha-config"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "ha.log"

    # ---- process ----------------------------------------------------------------------

    def start(self) -> HomeAssistantCore:
        first = not self.config_dir.exists()
        if first:
            self.config_dir.mkdir(parents=True)
            text = (HERE / "configuration.yaml").read_text().replace("__PORT__", str(self.port))
            (self.config_dir / "configuration.yaml").write_text(text)
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "hass"), "-c", str(self.config_dir), "--skip-pip"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited: {self.log_tail()}")
            try:
                self._http("GET", "/api/onboarding", auth=False)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Home Assistant did not start: {self.log_tail()}") from None
                time.sleep(0.3)
        if first:
            self._onboard()
            self._arrange_home()
        self.wait_for_entities()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.config_dir, ignore_errors=True)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    # ---- HTTP and WebSocket -----------------------------------------------------------

    def _http(self, method: str, path: str, body=None, auth: bool = True, form: bool = False):
        headers = {}
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=15) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def ws(self, *commands: dict, token: str | None = None) -> list:
        """Send commands on one authenticated WebSocket; return their results in order."""
        results = []
        with connect(self.url.replace("http", "ws") + "/api/websocket", open_timeout=15) as ws:
            json.loads(ws.recv(15))
            ws.send(json.dumps({"type": "auth", "access_token": token or self.token}))
            assert json.loads(ws.recv(15))["type"] == "auth_ok"
            for i, command in enumerate(commands, 1):
                ws.send(json.dumps({"id": i, **command}))
                while True:
                    msg = json.loads(ws.recv(15))
                    if msg.get("id") == i and msg.get("type") == "result":
                        break
                if not msg["success"]:
                    raise RuntimeError(f"{command['type']}: {msg.get('error')}")
                results.append(msg["result"])
        return results

    def _onboard(self) -> None:
        client_id = self.url + "/"
        user = self._http(
            "POST",
            "/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "Test",
                "username": "test",
                "password": "test-password-1234",
                "language": "en",
            },
            auth=False,
        )
        tokens = self._http(
            "POST",
            "/auth/token",
            {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id},
            auth=False,
            form=True,
        )
        (long_lived,) = self.ws(
            {"type": "auth/long_lived_access_token", "client_name": "nabu tests", "lifespan": 3650},
            token=tokens["access_token"],
        )
        self.token = long_lived

    def _arrange_home(self) -> None:
        self.wait_for_entities()
        # Onboarding makes a Kitchen, a Living Room and a Bedroom itself.
        (existing,) = self.ws({"type": "config/area_registry/list"})
        area_ids = {a["name"]: a["area_id"] for a in existing}
        missing = [a for a in AREAS if a not in area_ids]
        created = self.ws(*({"type": "config/area_registry/create", "name": a} for a in missing))
        area_ids.update({a["name"]: a["area_id"] for a in created})
        updates = []
        for area, devices in AREAS.items():
            for entity_id, aliases in devices.items():
                updates.append(
                    {
                        "type": "config/entity_registry/update",
                        "entity_id": entity_id,
                        "area_id": area_ids[area],
                        "aliases": aliases,
                    }
                )
        # Locks are not exposed to voice assistants by default; Warren's is, by choice.
        updates.append(
            {
                "type": "homeassistant/expose_entity",
                "assistants": ["conversation"],
                "entity_ids": [e for d in AREAS.values() for e in d],
                "should_expose": True,
            }
        )
        self.ws(*updates)

    def wait_for_entities(self, timeout_s: float = 60.0) -> None:
        wanted = {e for devices in AREAS.values() for e in devices}
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                have = {s["entity_id"] for s in self._http("GET", "/api/states")}
            except (urllib.error.URLError, OSError):
                have = set()
            if wanted <= have:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"entities missing: {wanted - have}: {self.log_tail()}")
            time.sleep(0.3)

    # ---- the test home's "hardware" ----------------------------------------------------

    def state(self, entity_id: str) -> dict:
        return self._http("GET", f"/api/states/{entity_id}")

    def call(self, domain: str, service: str, **data) -> None:
        self._http("POST", f"/api/services/{domain}/{service}", data)

    def set_switch(self, helper: str, on: bool) -> None:
        self.call("input_boolean", "turn_on" if on else "turn_off", entity_id=helper)

    def reset(self) -> None:
        """Everything off, the front door locked, the garage closed, heating at 20 C."""
        for helper in (
            "kitchen_light_power",
            "living_room_lamp_power",
            "bedroom_light_power",
            "kitchen_speaker_power",
            "garage_door_up",
            "garage_door_jammed",
        ):
            self.set_switch(f"input_boolean.{helper}", False)
        self.set_switch("input_boolean.front_door_bolt", True)
        self.set_switch("input_boolean.alarm_set", True)
        self.call("climate", "set_hvac_mode", entity_id="climate.heating", hvac_mode="heat")
        self.call("climate", "set_temperature", entity_id="climate.heating", temperature=20)
        self.call(
            "input_number",
            "set_value",
            entity_id="input_number.living_room_temperature_c",
            value=19.5,
        )
        deadline = time.monotonic() + 10
        while self.state("lock.front_door")["state"] != "locked" and time.monotonic() < deadline:
            time.sleep(0.1)
