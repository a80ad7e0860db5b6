"""Config: typed, validated, frozen; env expansion; one clear error per user mistake."""

import pytest
import yaml
from pydantic import ValidationError

from nabu_pipeline.config import ConfigError, NabuConfig, expand_env, load_config

from .conftest import ROOT
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

    assert DEFAULT_CONFIG_PATH.read_text() == (ROOT / "configs" / "default.yaml").read_text()


EXAMPLES = sorted((ROOT / "configs").glob("*.yaml"))


def leaves(tree: dict, prefix: tuple = ()) -> dict[tuple, object]:
    """Every non-section value of a YAML tree by its key path."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def value_at(config, path: tuple):
    for key in path:
        config = getattr(config, key)
    return list(config) if isinstance(config, tuple) else config


def test_every_example_config_is_tested():
    assert {p.name for p in EXAMPLES} >= {"default.yaml", "gpu.yaml", "ollama.yaml", "openai.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_laid_over_default_yaml(path):
    """Each example says only what differs: its own keys win, every other key keeps
    configs/default.yaml's value, `${OPENAI_API_KEY}` from the environment included."""
    env = {"OPENAI_API_KEY": "sk-from-env-123"}
    config = load_config(path, env=env)
    defaults = load_config(env=env)
    own = leaves(expand_env(yaml.safe_load(path.read_text()) or {}, env))
    for key_path, value in leaves(defaults.model_dump()).items():
        expected = own.get(key_path, value)
        expected = list(expected) if isinstance(expected, tuple) else expected
        assert value_at(config, key_path) == expected, ".".join(key_path)
    # The secret reaches every OpenAI endpoint the example does not give a key of its own.
    assert config.stt.openai.api_key == "sk-from-env-123"
    assert config.tts.openai.api_key == "sk-from-env-123"
    if ("llm", "api_key") not in own:
        assert config.llm.api_key == "sk-from-env-123"
        assert config.llm.is_configured


def test_gpu_config_keeps_the_key_from_the_environment():
    """The case that broke: configs/gpu.yaml never mentions llm.api_key."""
    config = load_config(ROOT / "configs" / "gpu.yaml", env={"OPENAI_API_KEY": "sk-gpu-456"})
    assert config.stt.beam_size == 5  # its own value
    assert config.llm.api_key == "sk-gpu-456"  # default.yaml's ${OPENAI_API_KEY:-}
    assert config.llm.model == "gpt-4o-mini" and config.llm.is_configured
    assert config.stt.openai.api_key == config.tts.openai.api_key == "sk-gpu-456"


def test_a_config_changes_one_key_of_a_section_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, "llm:\n  model: other-model\nturn:\n# all commented out\n")
    config = load_config(path, env={"OPENAI_API_KEY": "sk-abc-789"})
    assert config.llm.model == "other-model"
    assert config.llm.api_key == "sk-abc-789" and config.llm.max_tokens == 160
    assert config.turn == load_config(env={}).turn
    # a list replaces the default list whole
    path = write(tmp_path, "stt:\n  vocabulary: [Marguerite]\n")
    assert load_config(path, env={}).stt.vocabulary == ("Marguerite",)


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
        ("stt:\n  modle: base\n", ["stt.modle", "unknown key; did you mean `model`?"]),
        ("llm:\n  max_token: 100\n", ["llm.max_token", "did you mean `max_tokens`?"]),
        ("sst:\n  model: base\n", ["sst", "did you mean `stt`?"]),
        ("source: mine\n", ["source", "unknown key; allowed: stt, guard, llm"]),
        (
            "stt:\n  zzz: 1\n",
            ["stt.zzz", "unknown key; allowed: provider, fallback, retry_local_after_s, model"],
        ),
        (
            "llm:\n  fallbacks:\n    - base_url: http://x/v1\n      modl: m\n",
            ["did you mean `model`?"],
        ),
        ("stt:\n  vocabulary: Marguerite\n", ["stt.vocabulary", "should be a list", "Marguerite"]),
        ("stt: base\n", ["stt", "should be a section of keys"]),
        ("locale:\n  time_zone: Mars/Olympus\n", ["locale.time_zone", "Mars/Olympus"]),
        ("locale:\n  clock: 13h\n", ["locale.clock", "12h", "24h"]),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, yaml_text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, yaml_text), env={})
    for part in expected:
        assert part in str(err.value)
    assert "tuple" not in str(err.value) and "NabuConfig" not in str(err.value)


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
    """default.yaml is the one source users read; the typed defaults never disagree with it."""
    assert load_config(env={}).model_dump() == NabuConfig().model_dump()


def test_a_file_that_moves_an_endpoint_does_not_send_it_the_openai_key(tmp_path):
    """default.yaml's ${OPENAI_API_KEY} belongs to OpenAI's endpoint, not to any base_url."""
    path = tmp_path / "elsewhere.yaml"
    path.write_text(
        "llm:\n  base_url: https://llm.example.org/v1\n"
        "stt:\n  openai:\n    base_url: https://stt.example.org/v1\n"
    )
    config = load_config(path, env={"OPENAI_API_KEY": "sk-from-env-123"})
    assert config.llm.api_key == "" and config.stt.openai.api_key == ""
    assert config.tts.openai.api_key == "sk-from-env-123"  # still OpenAI's own endpoint
    path.write_text("llm:\n  base_url: https://llm.example.org/v1\n  api_key: ${OPENAI_API_KEY}\n")
    assert load_config(path, env={"OPENAI_API_KEY": "sk-from-env-123"}).llm.api_key == (
        "sk-from-env-123"
    )


def test_with_changes_is_a_validated_copy():
    base = load_config(env={})
    changed = base.with_changes(llm={"base_url": "http://127.0.0.1:9/v1"}, turn={"vad_stop_s": 0.3})
    assert changed.llm.base_url == "http://127.0.0.1:9/v1" and changed.turn.vad_stop_s == 0.3
    assert changed.llm.model == base.llm.model and changed.source == base.source
    assert base.llm.base_url != changed.llm.base_url  # the original is untouched
    with pytest.raises(ValidationError):
        base.with_changes(turn={"pause_tolerance_s": -1})
