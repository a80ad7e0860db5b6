"""Config: typed, validated, frozen; env expansion; one clear error per user mistake."""

import pytest
from pydantic import ValidationError

from nabu_pipeline.config import ConfigError, NabuConfig, expand_env, load_config

from .helpers import nabu


def write(tmp_path, text: str):
    path = tmp_path / "nabu.yaml"
    path.write_text(text)
    return path


def test_embedded_default_loads_and_is_frozen():
    config = load_config(env={})
    assert config.stt.model == "base"
    assert config.llm.model == "gpt-4o-mini"
    assert config.llm.max_tokens == 160
    assert config.tts.voice == "en_US-joe-medium"
    with pytest.raises(ValidationError):
        config.llm.model = "other"  # frozen


def test_configs_folder_default_is_the_embedded_default():
    from nabu_pipeline.config import DEFAULT_CONFIG_PATH

    from .conftest import ROOT

    assert DEFAULT_CONFIG_PATH.read_text() == (ROOT / "configs" / "default.yaml").read_text()


@pytest.mark.parametrize("name", ["default", "ollama", "openai", "gpu"])
def test_example_configs_load(name):
    from .conftest import ROOT

    load_config(ROOT / "configs" / f"{name}.yaml", env={"OPENAI_API_KEY": "sk-test"})


def test_env_expansion_with_defaults():
    env = {"A": "1", "EMPTY": ""}
    assert expand_env("${A}", env) == "1"
    assert expand_env("${B:-two}", env) == "two"
    assert expand_env("${EMPTY:-fallback}", env) == "fallback"
    assert expand_env("${B}", env) == ""
    assert expand_env({"x": ["${A}-${B:-b}"]}, env) == {"x": ["1-b"]}


def test_env_overrides_llm_endpoint_and_model(tmp_path):
    path = write(tmp_path, "llm:\n  base_url: http://a/v1\n  model: m1\n")
    config = load_config(path, env={"NABU_LLM_BASE_URL": "http://b/v1", "NABU_LLM_MODEL": "m2"})
    assert config.llm.base_url == "http://b/v1"
    assert config.llm.model == "m2"


def test_nabu_config_env_selects_file(tmp_path):
    path = write(tmp_path, "stt:\n  model: base\n")
    assert load_config(env={"NABU_CONFIG": str(path)}).stt.model == "base"


def test_api_key_from_env_never_printed(tmp_path):
    path = write(tmp_path, "llm:\n  api_key: ${OPENAI_API_KEY}\n")
    config = load_config(path, env={"OPENAI_API_KEY": "sk-secret-value-123"})
    assert config.llm.api_key == "sk-secret-value-123"
    assert "sk-secret" not in repr(config.llm) and "sk-secret" not in str(config.llm)
    assert "sk-secret" not in repr(config.llm.endpoint)


def test_llm_configured_only_with_key_or_own_endpoint():
    assert not load_config(env={}).llm.is_configured
    assert load_config(env={"OPENAI_API_KEY": "sk-x"}).llm.is_configured
    assert load_config(env={"NABU_LLM_BASE_URL": "http://localhost:11434/v1"}).llm.is_configured


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("stt:\n  provider: azure\n", ["stt.provider", "azure", "local_whisper", "openai"]),
        ("llm:\n  provider: claude\n", ["llm.provider", "claude", "openai", "offline"]),
        ("tts:\n  provider: espeak\n", ["tts.provider", "espeak", "piper"]),
        ("llm:\n  temperature: hot\n", ["llm.temperature", "hot"]),
        ("llm:\n  max_tokens: -5\n", ["llm.max_tokens"]),
        ("tts:\n  length_scale: 9\n", ["tts.length_scale"]),
        ("stt:\n  modle: base\n", ["stt.modle", "unknown key"]),
        ("locale:\n  time_zone: Mars/Olympus\n", ["locale.time_zone", "Mars/Olympus"]),
        ("locale:\n  clock: 13h\n", ["locale.clock", "12h", "24h"]),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, yaml_text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, yaml_text), env={})
    for part in expected:
        assert part in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "stt: [unclosed\n"), env={})
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), env={})


def test_cli_reports_config_error_without_traceback(tmp_path):
    path = write(tmp_path, "llm:\n  provider: claude\n")
    wav = tmp_path / "in.wav"
    import numpy as np
    import soundfile as sf

    sf.write(str(wav), np.zeros(1600, dtype=np.int16), 16000)
    proc = nabu(
        "talk",
        "--input",
        str(wav),
        "--output",
        str(tmp_path / "o.wav"),
        "--config",
        str(path),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "llm.provider" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_rejects_a_file_that_is_not_audio(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    proc = nabu("talk", "--input", str(bad), "--output", str(tmp_path / "o.wav"), timeout=120)
    assert proc.returncode == 2
    assert "not an audio file" in proc.stderr and "Traceback" not in proc.stderr
    missing = nabu(
        "talk", "--input", str(tmp_path / "x.wav"), "--output", str(tmp_path / "o.wav"), timeout=120
    )
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_config_object_defaults_match_yaml_defaults():
    assert NabuConfig().llm.max_tokens == load_config(env={}).llm.max_tokens


def test_with_changes_is_a_validated_copy():
    base = load_config(env={})
    changed = base.with_changes(llm={"base_url": "http://127.0.0.1:9/v1"}, turn={"vad_stop_s": 0.3})
    assert changed.llm.base_url == "http://127.0.0.1:9/v1" and changed.turn.vad_stop_s == 0.3
    assert changed.llm.model == base.llm.model and changed.source == base.source
    assert base.llm.base_url != changed.llm.base_url  # the original is untouched
    with pytest.raises(ValidationError):
        base.with_changes(turn={"pause_tolerance_s": -1})
