"""Settings: one typed object from flashgate.toml, overridden by FLASHGATE_* variables."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from flashgate.errors import ConfigError
from flashgate.settings import SECTIONS, Settings, load_settings


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    settings = load_settings(empty, environ={})
    assert settings == Settings()
    assert settings.gateway.port == 8080
    assert settings.admin.port == 8081
    assert settings.backend.port == 8090
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.kafka.retention_ms == 259_200_000
    assert settings.kafka.partitions == 6
    assert settings.stack.state_dir == ".flashgate"


def test_the_shipped_file_loads() -> None:
    root = Path(__file__).resolve().parent.parent
    settings = load_settings(root / "flashgate.toml", environ={})
    assert settings.drain.group_id == "order-drain"


# Secrets are named in the file but only as a comment: they come from the environment.
COMMENTED_ONLY = {
    ("admin", "token"),
    ("kafka", "sasl_password"),
    ("kafka", "client"),
    ("gateway", "shopper_token_secrets"),
    ("drain", "backend_token"),
    ("drain", "backend_oauth2_client_secret"),
}


def test_the_shipped_file_names_every_setting_with_its_default() -> None:
    """README promises flashgate.toml has every key with its default."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "flashgate.toml").read_text()
    data = tomllib.loads(text)
    defaults = Settings()
    for section, kind in SECTIONS.items():
        for field in msgspec.structs.fields(kind):
            if (section, field.name) in COMMENTED_ONLY:
                assert re.search(rf"^# \[?{section}\.{field.name}\]?|^# {field.name} ",
                                 text, re.M), (section, field.name)  # fmt: skip
                continue
            assert field.name in data.get(section, {}), f"[{section}] {field.name} is missing"
            shipped = data[section][field.name]
            default = getattr(getattr(defaults, section), field.name)
            assert shipped == msgspec.to_builtins(default), (section, field.name, shipped)


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "flashgate.toml"
    path.write_text('[drain]\nrate_per_s = 100.0\n[kafka]\norders_topic = "o"\n')
    settings = load_settings(
        path,
        environ={
            "FLASHGATE_DRAIN_RATE_PER_S": "250",
            "FLASHGATE_GATEWAY_PORT": "9000",
            "FLASHGATE_GATEWAY_STOREFRONT_TOKENS": "a, b",
            "FLASHGATE_ADMIN_TOKEN": "secret",
            "UNRELATED": "x",
        },
    )
    assert settings.drain.rate_per_s == 250.0
    assert settings.kafka.orders_topic == "o"
    assert settings.gateway.port == 9000
    assert settings.gateway.storefront_tokens == ["a", "b"]
    assert settings.admin.token == "secret"


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[gateway]\nport = 7000\n")
    assert load_settings(environ={"FLASHGATE_CONFIG": str(path)}).gateway.port == 7000


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"FLASHGATE_GATEWAY_PROT": "1"}, "FLASHGATE_GATEWAY_PROT"),
        ({"FLASHGATE_NOPE_X": "1"}, "FLASHGATE_NOPE_X"),
        ({"FLASHGATE_GATEWAY_PORT": "eighty"}, "gateway.port"),
    ],
)
def test_bad_environment_is_a_clear_error(
    tmp_path: Path, environ: dict[str, str], needle: str
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(empty, environ=environ)


def test_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "flashgate.toml"
    path.write_text("[gateway\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(path, environ={})
    path.write_text("[gateway]\nportt = 1\n")
    with pytest.raises(ConfigError, match="portt"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})
