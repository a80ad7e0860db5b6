"""A spoken call for help reaches a real Home Assistant's notify service.

Home Assistant core (the test fixture in tests/home_assistant, its own venv) gets a
`file` notify platform named `family`; Nabu's alert is the plain REST call
`POST /api/services/notify/family` with a long-lived token, and the message lands
in the file as it would on Mary's phone through `notify.mobile_app_...`.
"""

from __future__ import annotations

import pytest

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.talk import talk

from .helpers import marys_safety

ha_core = pytest.importorskip(
    "tests.home_assistant.core",
    reason="needs the Home Assistant test fixture (tests/home_assistant)",
)

pytestmark = pytest.mark.slow

NOTIFY = """
notify:
  - platform: file
    name: family
    filename: family_notifications.txt
"""


@pytest.fixture(scope="module")
def home_with_notify(tmp_path_factory):
    core = ha_core.HomeAssistantCore(tmp_path_factory.mktemp("ha-notify"))
    core.start()  # onboarded, token made
    core.stop()
    config = core.config_dir / "configuration.yaml"
    config.write_text(config.read_text() + NOTIFY)
    core.start()
    yield core
    core.destroy()


async def test_spoken_call_for_help_reaches_home_assistant_notify(
    home_with_notify, synth, config_for, monkeypatch, tmp_path
):
    core = home_with_notify
    monkeypatch.setenv("NABU_HA_URL", core.url)
    monkeypatch.setenv("NABU_HA_TOKEN", core.token)
    clip = synth("I've fallen.", "ha_fallen")
    with ScriptedLLMServer(Script(ttft_s=0.05)) as llm:
        config = config_for(
            llm.url,
            safety=marys_safety(
                home_assistant_notify="notify.family",
            ),
        )
        result = await talk(config, [clip], tmp_path / "out.wav")
    assert llm.requests == []
    (alert,) = result.alerts
    assert alert.channels == {"home assistant notify.family": "delivered"}, alert.channels
    written = (core.config_dir / "family_notifications.txt").read_text()
    print(f"\nHome Assistant notify.family wrote:\n{written}")
    # What he said, as Whisper heard it: "I've fallen", or "I Fallen" once his home's names
    # are in Whisper's prompt (which depends on whether Home Assistant has connected yet).
    assert "Warren called for help" in written and "fallen" in written.lower()
    assert core.token not in str(result.turns)
